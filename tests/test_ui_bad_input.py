"""Bad input to every browser UI route (issue 24 item 4): the hostile path segments, query values
and form fields the API routes are walked with (tests/test_bad_input.py), signed in (the
development user: both roles, so every page is reached). Each answer is below 500 and, when an
error, the UI's HTML error page, never a JSON OperationOutcome. In process (exceptions raised),
and over a real uvicorn socket with keep-alive (a reset connection fails the test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.settings import Settings
from adapter.store import Store
from tests.helpers.routes import api_routes
from tests.serve_process import free_port
from tests.test_bad_input import HOSTILE_SEGMENTS

HUGE = "9" * 23
HOSTILE_QUERIES = [
    f"offset={HUGE}",
    "offset=-1",
    "offset=1e3",
    "offset=%C2%B2",
    "offset=" + "9" * 5000,
    "state=nope",
    "since=2026-13-45",
    f"until={HUGE}",
    "template=%00",
    "done=%3Cscript%3E",
    "next=//evil.example",
]
HOSTILE_FIELDS = [
    {f"id_{HUGE}": "1"},
    {"id_-1": "1"},
    {"id_%C2%B2": "1"},
    {"id_" + "9" * 5000: "1"},
    {"version": HUGE, "decision": "accept"},
    {"version": "9" * 5000, "decision": "accept"},
    {"version": "\u00b2", "decision": "accept"},
    {"decision": "nope"},
    {"all": "1"},
    {"username": "x" * 10_000, "password": "p"},
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data")  # type: ignore[call-arg]  # development
    store = Store.open(settings)
    with TestClient(create_app(settings, store), raise_server_exceptions=True) as test_client:
        yield test_client
    store.close()


def csrf_of(client: TestClient) -> str:
    return str(client.app.state.ui_sessions.development_user().csrf)  # type: ignore[attr-defined]


def requests(client: TestClient) -> Iterator[tuple[str, str, dict[str, str] | bytes | None]]:
    app_routes = client.app.routes  # type: ignore[attr-defined]
    routes = [r for r in api_routes(app_routes) if r.path.startswith("/ui")]
    assert len(routes) >= 12
    csrf = csrf_of(client)
    for route in routes:
        paths = [route.path_format]
        if route.param_convertors:
            paths = []
            for value in [*HOSTILE_SEGMENTS, HUGE, "1"]:
                path = route.path_format
                for name in route.param_convertors:
                    path = path.replace("{" + name + "}", value)
                paths.append(path)
        for method in sorted(route.methods):
            for path in paths:
                if method == "GET":
                    yield method, path, None
                    for query in HOSTILE_QUERIES:
                        yield method, f"{path}?{query}", None
                else:
                    for fields in HOSTILE_FIELDS:
                        yield method, path, {"csrf": csrf, **fields}
                    yield method, path, b"csrf=" + csrf.encode() + b"&" + b"x" * 70_000
                    yield method, path, b"\x00\xff\xfe"


def check(method: str, path: str, response: httpx.Response) -> None:
    where = f"{method} {path[:80]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("text/html"), where
        assert "<html" in response.text.lower() and "OperationOutcome" not in response.text, where


def send(http: httpx.Client | TestClient, method: str, path: str, body: object) -> httpx.Response:
    if isinstance(body, dict):
        return http.request(method, path, data=body, follow_redirects=False)
    return http.request(method, path, content=body, follow_redirects=False)  # type: ignore[arg-type]


def test_the_reported_inputs_get_the_html_400_page(client: TestClient) -> None:
    for path in (f"/ui/messages/{HUGE}", f"/ui/messages?offset={HUGE}"):
        answer = client.get(path)
        assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
        assert "whole number" in answer.text
    answer = client.post(
        "/ui/dead-letters/requeue", data={"csrf": csrf_of(client), f"id_{HUGE}": "1"}
    )
    assert answer.status_code == 400 and "whole number" in answer.text
    assert client.get("/ui/no-such-page").headers["content-type"].startswith("text/html")


def test_every_ui_route_answers_hostile_input_in_process(client: TestClient) -> None:
    for method, path, body in requests(client):
        check(method, path, send(client, method, path, body))


@pytest.mark.integration
def test_every_ui_route_answers_hostile_input_over_a_keep_alive_socket(
    client: TestClient,
) -> None:
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
        # one connection for everything: a request that breaks it fails the next one
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as http:
            for method, path, body in requests(client):
                check(method, path, send(http, method, path, body))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
