"""`radbridge serve` as a subprocess for integration tests: free ports, embedded Redis and SQLite
in a data dir of the test's own, ready when /readyz answers 200, stopped with SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Service:
    """A running `radbridge serve`: its MLLP target, HTTP base URL and log file."""

    mllp_port: int
    http: str
    log: Path
    pid: int = 0
    data_dir: Path = Path()

    @property
    def mllp(self) -> str:
        """The MLLP target as `radbridge replay --to` takes it."""
        return f"mllp://127.0.0.1:{self.mllp_port}"


def serve_env(root: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a test's `radbridge serve`: its own data dir under `root`, free ports,
    embedded Redis and SQLite unless `settings` say otherwise."""
    env = {
        **os.environ,
        "RADBRIDGE_DATA_DIR": str(root / "data"),
        "RADBRIDGE_MLLP_PORT": str(free_port()),
        "RADBRIDGE_HTTP_PORT": str(free_port()),
    }
    for name in ("RADBRIDGE_REDIS_URL", "RADBRIDGE_DATABASE_URL", "RADBRIDGE_FHIR_BASE_URL"):
        env.pop(name, None)
    env.update(settings)
    return env


@contextmanager
def running_serve(
    root: Path, settings: dict[str, str], ready_s: float = 90, args: tuple[str, ...] = ()
) -> Iterator[Service]:
    """Start `radbridge serve` with RADBRIDGE_* `settings` (data dir, ports and embedded Redis and
    SQLite are set here), wait until ready, and stop it with SIGINT on exit (SIGKILL when it
    has not stopped within 60 s)."""
    env = serve_env(root, settings)
    mllp_port, http_port = int(env["RADBRIDGE_MLLP_PORT"]), int(env["RADBRIDGE_HTTP_PORT"])
    log_path = root / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*RADBRIDGE, "serve", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + ready_s
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail("radbridge serve did not become ready: " + log_path.read_text())
            yield Service(mllp_port, base, log_path, process.pid, Path(env["RADBRIDGE_DATA_DIR"]))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
