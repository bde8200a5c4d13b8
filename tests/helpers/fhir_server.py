"""A small real FHIR server for delivery tests: validates each resource it receives against the
official R4 JSON schema, stores resources by type/id (PUT twice = one resource), answers a
transaction-response, and can be told to answer 429/503/400 for the next requests.

Beside transactions it answers what radbridge's write-back asks (workers/delivery.py): reads
(`GET Type/id`, `meta.versionId` = its version count), searches `POST Type/_search` by
`identifier=system|value`, a `batch` of those two as `GET` entries (`Type?identifier=...`,
`Type/id`; a batch-response, a missing resource a 404 entry), a `PUT Type/id` honouring `If-Match`, and inside a transaction conditional creates
(`ifNoneExist`, their `urn:uuid` fullUrls resolved in the other entries) and PUT entries
honouring `ifMatch` (one stale: 412 for the whole transaction, nothing of it stored, counted in
`conflicts`). Its transaction-response carries no versions (a server radbridge must cope with).

Records: `requests` (the writes: PUTs and transactions), `reads` (each read or search, a
batch's entries each as `batch: Type?identifier` or `batch: Type/id`), `calls` (every FHIR HTTP
request, `METHOD path`). `script` answers the next PUTs and POSTs, batches included (never a
`POST Type/_search`). It counts what a test of exactly-once delivery needs: `puts[url]` (every PUT of a transaction
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
        # (type, system, value) -> the urls of resources with that identifier: a search reads
        # only its matches (a scan of every resource made a long benchmark quadratic)
        self.identified: dict[tuple[str, object, object], set[str]] = {}
        self.requests: list[dict[str, str]] = []  # the writes (POST, PUT)
        self.reads: list[str] = []  # the reads and searches (a batch's: one per entry)
        self.calls: list[str] = []  # every FHIR HTTP request: "METHOD path"
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
        self.transactions = 0  # transactions stored
        self.conflicts = 0  # transactions refused 412 for a stale `ifMatch` (nothing stored)
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
            # TCP_NODELAY, as an EHR's server sets it: the headers and the body are two writes,
            # and with Nagle's algorithm on, the body waited for the client's delayed ACK (~40 ms
            # per request on Linux; 3 requests per write-back)
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _scripted(self, *, write: bool = True) -> bool:
                """Count a write; answer it (a batch read too) from `script` when one is queued
                (True)."""
                with server.lock:
                    server.calls.append(f"{self.command} {self.path}")
                    if write:
                        server.requests.append(
                            {
                                "path": self.path,
                                "authorization": self.headers.get("Authorization", ""),
                            }
                        )
                    if not server.script:
                        return False
                    status, headers, payload = server.script.pop(0)
                self._answer(status, payload, headers)
                return True

            def do_GET(self) -> None:
                path = self.path.removeprefix("/fhir/")
                with server.lock:
                    server.calls.append(f"GET {self.path}")
                    server.reads.append(self.path)
                    found = server.read(path)
                if found is None:
                    return self._answer(404, _outcome("not found"))
                return self._answer(200, found)

            def _search(self, body: bytes) -> None:
                from urllib.parse import parse_qs

                kind = self.path.removeprefix("/fhir/").removesuffix("/_search")
                with server.lock:
                    server.calls.append(f"POST {self.path}")
                    server.reads.append(self.path)
                    wanted = parse_qs(body.decode()).get("identifier", [""])[0]
                    matches = server.search(kind, wanted)
                return self._answer(200, _searchset(matches))

            def _batch(self, bundle: dict[str, Any]) -> None:
                """A batch of GET entries: searches by identifier and reads, answered each."""
                from urllib.parse import parse_qs

                entries: list[dict[str, Any]] = []
                with server.lock:
                    for entry in bundle.get("entry", []):
                        request = entry.get("request") or {}
                        url = str(request.get("url", ""))
                        kind, query = url.split("?", 1) if "?" in url else (url, None)
                        if request.get("method") != "GET":
                            entries.append(_entry_failure("400 Bad Request", "GET entries only"))
                        elif query is not None:
                            server.reads.append(f"batch: {kind}?identifier")
                            wanted = parse_qs(query).get("identifier", [""])[0]
                            found = _searchset(server.search(kind, wanted))
                            entries.append({"resource": found, "response": {"status": "200 OK"}})
                        elif (resource := server.read(kind)) is not None:
                            server.reads.append(f"batch: {kind}")
                            etag = f'W/"{resource["meta"]["versionId"]}"'
                            entries.append(
                                {
                                    "resource": resource,
                                    "response": {"status": "200 OK", "etag": etag},
                                }
                            )
                        else:
                            server.reads.append(f"batch: {kind}")
                            entries.append(_entry_failure("404 Not Found", "not found"))
                return self._answer(
                    200, {"resourceType": "Bundle", "type": "batch-response", "entry": entries}
                )

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                url = self.path.removeprefix("/fhir/")
                if self._scripted():
                    return None
                with server.lock:
                    if not server.matches(url, self.headers.get("If-Match")):
                        return self._answer(412, _outcome("version conflict"))
                    server.store(url, body)
                    return self._answer(200, server.read(url))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.endswith("/auth/token"):
                    return self._token(body)
                if self.path.endswith("/_search"):
                    return self._search(body)
                if server.public_key is not None:
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token not in server.issued:
                        return self._answer(401, _outcome("unknown or expired token"))
                try:
                    bundle = json.loads(body)
                except ValueError:
                    bundle = None
                batch = isinstance(bundle, dict) and bundle.get("type") == "batch"
                if self._scripted(write=not batch):
                    return None
                if not isinstance(bundle, dict):
                    return self._answer(400, _outcome("invalid JSON"))
                if batch:
                    return self._batch(bundle)
                # each resource on its own (a delta write-back is not a whole radbridge Bundle,
                # so the Bundle-level rules of `radbridge validate` do not apply)
                problems = [
                    p
                    for entry in bundle.get("entry", [])
                    if server.validate and entry.get("resource") is not None
                    for p in validate_resource(entry.get("resource"))
                    if p.severity == "error"
                ]
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
                    # every ifMatch checked before anything is stored: all or nothing
                    if not all(
                        server.matches(entry["request"]["url"], entry["request"].get("ifMatch"))
                        for entry in bundle["entry"]
                        if entry["request"]["method"] == "PUT"
                    ):
                        server.conflicts += 1
                        return self._answer(412, _outcome("version conflict"))
                    server.transactions += 1
                    server.by_peer[self.client_address[0]] += 1
                    resolved = server.conditional_creates(bundle)
                    for entry in bundle["entry"]:
                        if entry["request"]["method"] == "POST":
                            entries.append({"response": {"status": "200 OK"}})
                            continue
                        url = entry["request"]["url"]
                        created = server.store(url, _resolve(entry["resource"], resolved))
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

    def store(self, url: str, resource: dict[str, Any]) -> bool:
        """Keep one PUT (under the lock); True when it created the resource."""
        created = url not in self.resources
        self.puts[url] += 1
        if created or self.resources[url] != resource:
            self.versions[url] += 1
            self.history.setdefault(url, []).append(resource)
            kind = url.split("/", 1)[0]
            for key in _identifier_keys(kind, self.resources.get(url)):
                self.identified[key].discard(url)
            for key in _identifier_keys(kind, resource):
                self.identified.setdefault(key, set()).add(url)
        self.resources[url] = resource
        return created

    def matches(self, url: str, wanted: str | None) -> bool:
        """Whether an `If-Match` (`W/"<version>"`; None: unconditional) names the current
        version of `url` (under the lock)."""
        return not wanted or wanted == f'W/"{self.versions[url]}"'

    def read(self, url: str) -> dict[str, Any] | None:
        """A stored resource with its version as `meta.versionId` (under the lock)."""
        found = self.resources.get(url)
        if found is None:
            return None
        return {**found, "meta": {**found.get("meta", {}), "versionId": str(self.versions[url])}}

    def search(self, kind: str, identifier: str) -> list[dict[str, Any]]:
        """Resources of `kind` with the identifier `system|value` (under the lock)."""
        system, _, value = identifier.partition("|")
        urls = sorted(self.identified.get((kind, system, value), ()))
        return [found for url in urls if (found := self.read(url)) is not None]

    def conditional_creates(self, bundle: dict[str, Any]) -> dict[str, str]:
        """Carry out a transaction's `POST` entries with `ifNoneExist` (created, or the one
        match); returns their fullUrl -> `Type/id` (under the lock)."""
        import uuid
        from urllib.parse import parse_qs

        resolved = {}
        for entry in bundle["entry"]:
            request = entry["request"]
            if request["method"] != "POST":
                continue
            kind = request["url"]
            wanted = parse_qs(request.get("ifNoneExist", "")).get("identifier", [""])[0]
            matches = self.search(kind, wanted) if wanted else []
            url = f"{kind}/{matches[0]['id']}" if matches else f"{kind}/{uuid.uuid4()}"
            if not matches:
                self.store(url, {**entry["resource"], "id": url.split("/", 1)[1]})
            resolved[entry["fullUrl"]] = url
        return resolved

    def start(self) -> FhirServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stall_release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _identifier_keys(kind: str, resource: dict[str, Any] | None) -> set[tuple[str, object, object]]:
    """The (type, system, value) search keys of a resource's identifiers."""
    return {
        (kind, i.get("system"), i.get("value"))
        for i in (resource or {}).get("identifier", [])
        if isinstance(i, dict)
    }


def _resolve(value: Any, resolved: dict[str, str]) -> Any:
    """`value` with references to conditionally created entries made literal."""
    if isinstance(value, dict):
        out = {k: _resolve(v, resolved) for k, v in value.items()}
        if value.get("reference") in resolved:
            out["reference"] = resolved[value["reference"]]
        return out
    if isinstance(value, list):
        return [_resolve(v, resolved) for v in value]
    return value


EHR_IDENTITY: dict[str, Any] = {
    "identifier_systems": {"RBH": "urn:oid:2.999.1.1", "NLZ": "urn:oid:2.999.1.2"},
    "accession_systems": {
        "RBHOSP": "urn:oid:2.999.1.3",
        "NLZIEK": "urn:oid:2.999.1.5",
        "DEKLINIK": "urn:oid:2.999.1.6",
    },
    "patient_identifier_system": "urn:oid:2.999.1.4",
    "ehr_patient": "create",
}
"""Settings for tests that deliver HL7 input to this server: identifier systems for the fixtures'
authorities and facilities (2.999 is the OID arc ISO/IEC 9834 keeps for examples), Patients
created when missing (this server starts empty)."""
EHR_IDENTITY_ENV: dict[str, str] = {
    f"RADBRIDGE_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
    for name, value in EHR_IDENTITY.items()
}
"""EHR_IDENTITY as the environment of a `radbridge serve` subprocess."""


def _searchset(matches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "entry": [{"resource": m, "search": {"mode": "match"}} for m in matches],
    }


def _entry_failure(status: str, text: str) -> dict[str, Any]:
    """A batch-response entry that failed, with its OperationOutcome."""
    return {"response": {"status": status, "outcome": _outcome(text)}}


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }
