"""Bad input a hostile probe sent to the HTTP API (issue 14): each gets a 4xx OperationOutcome or,
for ER7, an ACK with AR/AE and ERR; nothing escapes the app's handlers. Over FastAPI's test
client with server exceptions raised (an exception that escapes fails the test), and over a real
uvicorn server on a socket (a reset connection fails the test)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.api.context import MAX_JSON_DEPTH
from adapter.settings import Settings
from adapter.store import Store
from tests.helpers.routes import api_routes
from tests.serve_process import free_port

FIXTURES = Path(__file__).parent / "fixtures"
MSH = "MSH|^~\\&|RIS|FAC|RB|FAC|20260101120000||ORU^R01|{id}|P|2.5{tail}"
BODY = "PID|1||M1^^^H^MR||Müller^Jörg\rOBR|1|P1|A1|X^Chest X-ray^L|||20260101110000\rOBX|1|TX|&GDT||Kein Erguss.||||||F"


def er7(control_id: str, tail: str = "", charset: str = "utf-8") -> bytes:
    return (MSH.format(id=control_id, tail=tail) + "\r" + BODY).encode(charset)


@pytest.fixture
def app_and_store(tmp_path: Path) -> Iterator[tuple[TestClient, Store, list[int]]]:
    settings = Settings(data_dir=tmp_path, http_max_body_bytes=2 * 1024 * 1024)  # type: ignore[arg-type]
    store = Store.open(settings)
    accepted: list[int] = []
    client = TestClient(create_app(settings, store, on_accepted=accepted.append))
    yield client, store, accepted
    store.close()


def _is_outcome(response: httpx.Response) -> bool:
    body = response.json()
    return body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"


def test_msh_without_encoding_characters_is_ar_naming_msh2(
    app_and_store: tuple[TestClient, Store, list[int]],
) -> None:
    client, _, accepted = app_and_store
    for body in (b"MSH|\rPID|1", b"MSH|", b"MSH|XYZW|RIS|FAC|RB|FAC|2026||ORU^R01|C1|P|2.5\rOBR|1"):
        response = client.post("/hl7v2", content=body)
        assert response.status_code == 400, body
        assert b"MSA|AR|" in response.content and b"MSH-2" in response.content
        assert b"ERR|||101^" in response.content
    assert accepted == []


def test_other_field_separator_is_answered_200_with_a_readable_ack(
    app_and_store: tuple[TestClient, Store, list[int]],
) -> None:
    client, _, accepted = app_and_store
    body = er7("SEP1").replace(b"|", b"#")
    response = client.post("/hl7v2", content=body)
    assert response.status_code == 200 and b"\rMSA|AA|SEP1\r" in response.content
    assert len(accepted) == 1


def test_latin1_er7_is_accepted_with_its_bytes_or_refused_when_it_lies(
    app_and_store: tuple[TestClient, Store, list[int]],
) -> None:
    client, store, accepted = app_and_store
    plain = client.post("/hl7v2", content=er7("L1", charset="latin-1"))
    assert plain.status_code == 200 and b"MSA|AA|L1" in plain.content
    assert store.raw(accepted[0]) == er7("L1", charset="latin-1")  # stored as sent
    declared = client.post("/hl7v2", content=er7("L2", "||||||8859/1", charset="latin-1"))
    assert declared.status_code == 200 and len(accepted) == 2
    lying = client.post("/hl7v2", content=er7("L3", "||||||UNICODE UTF-8", charset="latin-1"))
    assert lying.status_code == 400 and b"MSA|AR|L3" in lying.content
    assert b"ERR|||102^" in lying.content and len(accepted) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (er7("V1").replace(b"|2.5\r", b"|3.0\r"), b"203"),
        (er7("V2", "||||||KOI8-R"), b"103"),
        (er7("V3").replace(b"\rOBR|", b"\rZZZ|").replace(b"OBX|", b"ZZZ|"), b"101"),
    ],
)
def test_cheap_checks_answer_ar_before_storing(
    app_and_store: tuple[TestClient, Store, list[int]], body: bytes, code: bytes
) -> None:
    client, store, accepted = app_and_store
    response = client.post("/hl7v2", content=body)
    assert response.status_code == 400 and b"MSA|AR|V" in response.content
    assert b"ERR|||" + code + b"^" in response.content
    assert accepted == [] and store.counts_by_state().get("accepted", 0) == 0


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 50_000, 100_000])
@pytest.mark.parametrize("path", ["/fhir", "/fhir/DiagnosticReport"])
def test_deeply_nested_json_is_a_400(
    app_and_store: tuple[TestClient, Store, list[int]], path: str, depth: int
) -> None:
    client, _, accepted = app_and_store
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        response = client.post(path, content=body)
        assert response.status_code == 400 and _is_outcome(response)
        assert "nested" in response.json()["issue"][0]["diagnostics"]
    assert accepted == []


def test_brackets_inside_strings_do_not_count_as_depth(
    app_and_store: tuple[TestClient, Store, list[int]],
) -> None:
    client, _, _ = app_and_store
    resource = json.loads((FIXTURES / "fhir" / "bundle_collection.json").read_text("utf-8"))
    resource["id"] = '[[[[{{{{\\"' * 200
    response = client.post("/fhir", content=json.dumps(resource).encode())
    assert response.status_code in (202, 400), response.text
    assert "nested" not in response.text


@pytest.mark.parametrize("job_id", ["-1", "0", str(2**63), str(2**64 + 5), "9" * 40, "1e3", "x"])
def test_job_ids_outside_the_range_are_4xx(
    app_and_store: tuple[TestClient, Store, list[int]], job_id: str
) -> None:
    client, _, _ = app_and_store
    response = client.get(f"/jobs/{job_id}")
    assert 400 <= response.status_code < 500 and _is_outcome(response)


HOSTILE_SEGMENTS = ["-1", "0", str(2**64 + 5), "9" * 400, "%00", "%C3%28", "..%2F..%2Fetc", "ü"]
HOSTILE_BODIES = [
    b"",
    b"\x00\xff\xfe",
    b"[" * 60_000,
    b"[" * 60_000 + b"]" * 60_000,
    b"MSH|",
    b"MSH|\r",
    er7("H1", charset="latin-1"),
    er7("H2", "||||||UNICODE UTF-8", charset="latin-1"),
    json.dumps({"resourceType": "Bundle", "entry": [{"resource": [1] * 3}]}).encode(),
]


def _requests(client: TestClient) -> Iterator[tuple[str, str, bytes]]:
    app_routes = client.app.routes  # type: ignore[attr-defined]
    routes = [
        r for r in api_routes(app_routes) if not r.path.startswith("/ui")
    ]  # test_ui_bad_input
    assert len(routes) >= 9
    for route in routes:
        for method in sorted(route.methods):
            paths = [route.path_format]
            if route.param_convertors:
                paths = []
                for value in HOSTILE_SEGMENTS:
                    path = route.path_format
                    for name in route.param_convertors:
                        path = path.replace("{" + name + "}", value)
                    paths.append(path)
            for path in paths:
                bodies = HOSTILE_BODIES if method in ("POST", "PUT") else [b""]
                for body in bodies:
                    yield method, path, body


def _check(method: str, path: str, body: bytes, response: httpx.Response) -> None:
    where = f"{method} {path} body={body[:20]!r}"
    assert response.status_code < 500 or path == "/readyz", where
    if response.status_code >= 400:
        if response.headers.get("content-type", "").startswith("x-application/hl7"):
            assert b"MSA|A" in response.content and b"ERR|" in response.content, where
        else:
            assert _is_outcome(response), where


def test_every_route_answers_hostile_input_in_process(
    app_and_store: tuple[TestClient, Store, list[int]],
) -> None:
    client, _, _ = app_and_store
    for method, path, body in _requests(client):
        _check(method, path, body, client.request(method, path, content=body))


@pytest.mark.integration
def test_every_route_answers_hostile_input_over_a_socket(
    app_and_store: tuple[TestClient, Store, list[int]], tmp_path: Path
) -> None:
    client, _, _ = app_and_store
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for method, path, body in _requests(client):
                _check(method, path, body, http.request(method, path, content=body))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
