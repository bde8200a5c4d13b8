"""A small real FHIR server for delivery tests: validates what it receives against the official
R4 JSON schema, stores resources by type/id (PUT twice = one resource), answers a
transaction-response, and can be told to answer 429/503/400 for the next requests.

It counts what a test of exactly-once delivery needs: `puts[url]` (every PUT of a transaction
it accepted) and `versions[url]` (distinct contents, like a server that keeps a new version only
when a PUT changes the resource); `refuse(bundle)` may answer 400 for chosen transactions, and
`stall(bundle)` hold the answer to a transaction it stored (a client killed meanwhile never
learns it was written)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conformance.validate import validate_resource


class FhirServer:
    """Run with `start()`; `base_url` is its address; `script` queues canned answers."""

    def __init__(self, host: str = "127.0.0.1", *, validate: bool = True) -> None:
        self.validate = validate  # False: no schema check (a benchmark's EHR, not under test)
        self.resources: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, str]] = []
        self.script: list[tuple[int, dict[str, str], dict[str, Any] | None]] = []
        self.lock = threading.Lock()
        self.public_key: bytes | None = None  # set -> SMART token endpoint on, bearer required
        self.client_id = ""
        self.issued: set[str] = set()
        self.seen_jti: set[str] = set()
        self.token_requests = 0
        self.puts: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.history: dict[str, list[dict[str, Any]]] = {}  # url -> each version's content
        self.transactions = 0
        self.by_peer: Counter[str] = Counter()  # client address -> transactions stored
        # a bundle -> an OperationOutcome text: the transaction is answered 400 with it
        self.refuse: Callable[[dict[str, Any]], str | None] | None = None
        self.refused = 0
        # a bundle -> True: stored, then the answer waits for `stall_release` (`stalled` set)
        self.stall: Callable[[dict[str, Any]], bool] | None = None
        self.stalled = threading.Event()
        self.stall_release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as an EHR's server keeps connections

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.endswith("/auth/token"):
                    return self._token(body)
                if server.public_key is not None:
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token not in server.issued:
                        return self._answer(401, _outcome("unknown or expired token"))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "authorization": self.headers.get("Authorization", "")}
                    )
                    if server.script:
                        status, headers, payload = server.script.pop(0)
                        return self._answer(status, payload, headers)
                try:
                    bundle = json.loads(body)
                except ValueError:
                    return self._answer(400, _outcome("invalid JSON"))
                problems = (
                    [p for p in validate_resource(bundle) if p.severity == "error"]
                    if server.validate
                    else []
                )
                if problems or bundle.get("type") != "transaction":
                    return self._answer(
                        400, _outcome(problems[0].message if problems else "not a transaction")
                    )
                refusal = server.refuse(bundle) if server.refuse is not None else None
                if refusal is not None:
                    with server.lock:
                        server.refused += 1
                    return self._answer(400, _outcome(refusal))
                entries = []
                with server.lock:
                    server.transactions += 1
                    server.by_peer[self.client_address[0]] += 1
                    for entry in bundle["entry"]:
                        url = entry["request"]["url"]
                        created = url not in server.resources
                        server.puts[url] += 1
                        if created or server.resources[url] != entry["resource"]:
                            server.versions[url] += 1
                            server.history.setdefault(url, []).append(entry["resource"])
                        server.resources[url] = entry["resource"]
                        entries.append(
                            {"response": {"status": "201 Created" if created else "200 OK"}}
                        )
                if server.stall is not None and server.stall(bundle):
                    server.stalled.set()  # stored, but the answer comes late (a kill lands now)
                    server.stall_release.wait(60)
                return self._answer(
                    200,
                    {"resourceType": "Bundle", "type": "transaction-response", "entry": entries},
                )

            def _token(self, body: bytes) -> None:
                import time
                from urllib.parse import parse_qs

                import jwt

                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                server.token_requests += 1
                expected_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                if (
                    form.get("grant_type") != "client_credentials"
                    or form.get("client_assertion_type") != expected_type
                ):
                    return self._answer(400, {"error": "invalid_request"})
                token_url = f"{server.base_url.rsplit('/fhir', 1)[0]}/auth/token"
                try:
                    header = jwt.get_unverified_header(form["client_assertion"])
                    claims = jwt.decode(
                        form["client_assertion"],
                        server.public_key,
                        algorithms=["RS384"],
                        audience=token_url,
                    )
                except (jwt.InvalidTokenError, KeyError):
                    return self._answer(401, {"error": "invalid_client"})
                valid = (
                    header.get("kid") == "radbridge-test-key"
                    and claims["iss"] == claims["sub"] == server.client_id
                    and claims["exp"] - time.time() <= 300
                    and claims["jti"] not in server.seen_jti
                )
                if not valid:
                    return self._answer(401, {"error": "invalid_client"})
                server.seen_jti.add(claims["jti"])
                token = f"token-{len(server.seen_jti)}"
                server.issued.add(token)
                body_out = {"access_token": token, "token_type": "bearer", "expires_in": 300}
                return self._answer(200, body_out)

            def _answer(
                self,
                status: int,
                payload: dict[str, Any] | None,
                headers: dict[str, str] | None = None,
            ) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.base_url = f"http://{host}:{self.httpd.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FhirServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stall_release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }
