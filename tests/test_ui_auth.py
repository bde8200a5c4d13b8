"""The sign-in form (issue 13 follow-up): a CSRF token before there is a session (login CSRF),
and a login throttle per user name (in memory), through the FastAPI app with a real users file
(argon2) and a real SQLite store."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.settings import Settings
from adapter.store import Store
from adapter.ui.auth import LOGIN_COOKIE, SESSION_COOKIE, LoginThrottle, add_user
from tests.stores import data_dir


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    users = tmp_path / "users"
    add_user(users, "rita", "reviewer", "reviewer-password")
    add_user(users, "otto", "operator", "operator-password")
    settings = Settings(  # type: ignore[call-arg]
        data_dir=data_dir(tmp_path), ui_users_file=users, ui_session_secret="s" * 32
    )
    store = Store.open(settings)
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client
    store.close()


def token_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the sign-in form carries a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str, token: str | None = None) -> int:
    token = token if token is not None else token_of(client.get("/ui/login").text)
    answer = client.post(
        "/ui/login",
        data={"username": name, "password": password, "next": "/ui", "csrf": token},
        follow_redirects=False,
    )
    return answer.status_code


def test_a_forged_sign_in_is_refused(client: TestClient) -> None:
    form = client.get("/ui/login")
    assert form.status_code == 200 and LOGIN_COOKIE in form.cookies
    token = token_of(form.text)
    # another site posts the form: no token (and, cross-site, no SameSite=Strict cookie)
    forged = TestClient(client.app).post(
        "/ui/login",
        data={"username": "rita", "password": "reviewer-password", "next": "/ui"},
        follow_redirects=False,
    )
    assert (
        forged.status_code == 403
        and "CSRF" in forged.text
        and "Nobody was signed in" in forged.text
    )
    assert SESSION_COOKIE not in forged.cookies
    # a token copied from someone's page is worthless without that browser's signed cookie
    stranger = TestClient(client.app)
    assert sign_in(stranger, "rita", "reviewer-password", token=token) == 403
    # and a page's own cookie with a made-up token
    assert sign_in(client, "rita", "reviewer-password", token="made-up") == 403
    # the real form signs in, and the pre-session cookie goes
    answer = client.post(
        "/ui/login",
        data={"username": "rita", "password": "reviewer-password", "next": "/ui", "csrf": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and SESSION_COOKIE in answer.cookies
    assert client.get("/ui/review").status_code == 200


def test_failed_sign_ins_throttle_the_user_name(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    client.app.state.ui_sessions.throttle.clock = clock  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO)
    for _ in range(4):
        assert sign_in(client, "rita", "wrong-password") == 401
    assert sign_in(client, "rita", "reviewer-password") == 303  # 4 failures: not yet
    for _ in range(5):  # a success forgot them; five more within five minutes ...
        clock.now += 30
        assert sign_in(client, "rita", "wrong-password") == 401
    form = client.get("/ui/login")
    refused = client.post(
        "/ui/login",
        data={"username": "rita", "password": "reviewer-password", "csrf": token_of(form.text)},
        follow_redirects=False,
    )  # ... and the right password is refused too, with a clear message
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
    assert "about 5 more minutes" in refused.text and int(refused.headers["Retry-After"]) > 0
    assert sign_in(client, "otto", "operator-password") == 303  # another name is not affected
    clock.now += 301
    assert sign_in(client, "rita", "reviewer-password") == 303  # the lockout ended
    assert "rita" not in caplog.text and "otto" not in caplog.text  # no names in the logs
    assert "ui login throttled" in caplog.text


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(4):
        assert not throttle.failed("rita")
    clock.now += 301  # the first four are older than five minutes
    assert not throttle.failed("rita") and throttle.refused_for("rita") == 0
    for _ in range(3):
        assert not throttle.failed("rita")
    assert throttle.failed("rita")  # five within the window
    assert throttle.refused_for("rita") == pytest.approx(300)
    assert throttle.refused_for("otto") == 0


def test_the_throttle_forgets_the_stalest_names() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_names=100)
    for n in range(1000):  # a spray of made-up names keeps memory bounded
        clock.now += 0.001
        throttle.failed(f"user{n}")
    assert len(throttle._failures) + len(throttle._locked) <= 100
