"""`radbridge serve` as a user runs it: a subprocess with embedded Redis and SQLite; scout-style
messages sent with python-hl7's MLLP client; Observations pulled over HTTP and pushed to a FHIR
server; SIGINT stops everything cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.serve_process import running_serve

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
pytestmark = [pytest.mark.llm, pytest.mark.integration]


def test_serve_end_to_end(tmp_path: Path) -> None:
    from hl7.client import MLLPClient

    fhir = FhirServer().start()
    settings = {
        "RADBRIDGE_FHIR_BASE_URL": fhir.base_url,
        "RADBRIDGE_N_THREADS": "2",
        **EHR_IDENTITY_ENV,
    }
    try:
        with running_serve(tmp_path, settings, ready_s=60) as service:
            payload = (HL7_DIR / "chest_xray.hl7").read_bytes().strip().decode()
            with MLLPClient("127.0.0.1", service.mllp_port) as client:
                ack = client.send_message(payload)
            assert b"MSA|AA|XR0002" in ack
            deadline = time.monotonic() + 120
            observations: dict[str, object] = {"total": 0}
            while time.monotonic() < deadline:
                observations = httpx.get(f"{service.http}/fhir/Observation", timeout=5).json()
                if observations["total"] and any(
                    u.startswith("Observation/") for u in fhir.resources
                ):
                    break
                time.sleep(1)
            assert observations["total"], service.log.read_text()[-3000:]
            assert any(u.startswith("Observation/") for u in fhir.resources)
            assert httpx.get(f"{service.http}/jobs/1").json()["state"] == "delivered"
    finally:
        fhir.stop()
    output = (tmp_path / "serve.log").read_text()
    assert "radbridge stopped" in output
    assert "TESTPATIENT" not in output and "MRN0002" not in output  # no PHI in logs
