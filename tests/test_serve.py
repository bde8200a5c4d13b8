"""`radbridge serve` as a user runs it: a subprocess with embedded Redis and SQLite; scout-style
messages sent with python-hl7's MLLP client; Observations pulled over HTTP and pushed to a FHIR
server; SIGINT stops everything cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fhir_server import FhirServer

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
pytestmark = [pytest.mark.llm, pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_end_to_end(tmp_path: Path) -> None:
    from hl7.client import MLLPClient

    fhir = FhirServer().start()
    mllp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "RADBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "RADBRIDGE_MLLP_PORT": str(mllp_port),
        "RADBRIDGE_HTTP_PORT": str(http_port),
        "RADBRIDGE_FHIR_BASE_URL": fhir.base_url,
        "RADBRIDGE_N_THREADS": "2",
    }
    env.pop("RADBRIDGE_REDIS_URL", None)
    env.pop("RADBRIDGE_DATABASE_URL", None)
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", "from adapter.cli import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail(
                "radbridge serve did not become ready: " + (tmp_path / "serve.log").read_text()
            )
        payload = (HL7_DIR / "chest_xray.hl7").read_bytes().strip().decode()
        with MLLPClient("127.0.0.1", mllp_port) as client:
            ack = client.send_message(payload)
        assert b"MSA|AA|XR0002" in ack
        deadline = time.monotonic() + 120
        observations: dict[str, object] = {"total": 0}
        while time.monotonic() < deadline:
            observations = httpx.get(f"{base}/fhir/Observation", timeout=5).json()
            if observations["total"] and any(u.startswith("Observation/") for u in fhir.resources):
                break
            time.sleep(1)
        assert observations["total"], (tmp_path / "serve.log").read_text()[-3000:]
        assert any(u.startswith("Observation/") for u in fhir.resources)
        assert httpx.get(f"{base}/jobs/1").json()["state"] == "delivered"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            fhir.stop()
            log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "radbridge stopped" in output
    assert "TESTPATIENT" not in output and "MRN0002" not in output  # no PHI in logs
