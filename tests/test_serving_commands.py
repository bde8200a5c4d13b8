"""Which commands check production settings (issue 14): every serving command once (`serve`,
`worker`), no offline command; and `radbridge serve --no-worker` runs no worker."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.serve_process import RADBRIDGE, free_port

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("RADBRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RADBRIDGE_ENV", "production")
    monkeypatch.setenv("RADBRIDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_worker_refuses_production_without_api_key(
    production: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import serve as serve_module

    started: list[object] = []
    monkeypatch.setattr(serve_module, "run_worker", lambda *a, **k: started.append(a))
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2 and "RADBRIDGE_API_KEY" in result.output
    assert started == []


def test_offline_commands_need_no_api_key_in_production(production: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["templates", "list"])
    assert listed.exit_code == 0, listed.output
    out = production / "out"
    extracted = runner.invoke(
        app,
        [
            "extract",
            str(FIXTURES / "hl7v2" / "chest_xray.hl7"),
            "--out",
            str(out),
            "--stage",
            "rules",
        ],
    )
    assert extracted.exit_code == 0, extracted.output
    validated = runner.invoke(app, ["validate", str(next(out.glob("*.json")))])
    assert "RADBRIDGE_API_KEY" not in validated.output


@pytest.mark.integration
def test_serve_no_worker_runs_no_worker_and_checks_production_once(tmp_path: Path) -> None:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env.update(
        RADBRIDGE_ENV="production",
        RADBRIDGE_API_KEY=secrets.token_hex(32),  # a key check-config accepts
        RADBRIDGE_DATA_DIR=str(tmp_path / "data"),
        RADBRIDGE_MLLP_PORT=str(free_port()),
        RADBRIDGE_HTTP_PORT=str(http_port),
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*RADBRIDGE, "serve", "--no-worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("serve did not become ready: " + log_path.read_text())
        time.sleep(2)  # a worker child would have started by now
        children = psutil.Process(process.pid).children(recursive=True)
        argvs = [child.cmdline() for child in children]
        # the argv of a `radbridge worker` child, not a path that happens to say "worker"
        assert not any("worker" in argv[1:] for argv in argvs), argvs
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text()
    assert output.count("production on embedded SQLite") == 1, output
