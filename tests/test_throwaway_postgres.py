"""`make test` runs the PostgreSQL tests on a throwaway cluster (tests/throwaway_postgres.py)
when no RADBRIDGE_TEST_DATABASE_URL is given: made, used and deleted, nothing left running."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.throwaway_postgres import find_bindir, main, throwaway_cluster


def test_a_throwaway_cluster_serves_and_is_gone_afterwards() -> None:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    import sqlalchemy

    with throwaway_cluster(bindir) as url:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select 1")).scalar() == 1
        engine.dispose()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:  # stopped: nothing listens on its port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_command_gets_the_url_and_its_exit_status_is_kept(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RADBRIDGE_TEST_DATABASE_URL", "postgresql+psycopg://given/test")
    check = "import os, sys; print(os.environ['RADBRIDGE_TEST_DATABASE_URL']); sys.exit(3)"
    assert main(["--", sys.executable, "-c", check]) == 3
    assert "postgresql+psycopg://given/test" in capfd.readouterr().out
    if find_bindir() is None:
        return
    monkeypatch.delenv("RADBRIDGE_TEST_DATABASE_URL")
    assert main(["--", sys.executable, "-c", check]) == 3
    url = capfd.readouterr().out.strip()
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:") and url.endswith("/test")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
