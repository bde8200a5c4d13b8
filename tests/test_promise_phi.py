"""Promise 8 (issue 14): a PHI canary never leaves the store.

A real `radbridge serve` (API, MLLP listener, its supervised worker, embedded Redis, SQLite)
runs with every Python process logging at DEBUG. Messages carry a canary string in the patient
name, the patient and order identifiers and the report text; some succeed, some fail on the
way (AR before the ACK, a report with no text that goes dead in the worker, a report no
template applies to, deliveries the EHR refuses with an outcome that echoes the identifier,
FHIR bodies refused with 400/422). The canary must appear in no log line of any process, no
ACK (MLLP or HTTP), no HTTP error body, no job record and no /metrics line.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.helpers.waiting import wait_for
from tests.promises import (
    SERVE_DOWN,
    debug_logging_env,
    make_serve,
    msa,
    oru,
    send_mllp,
    stopped_at_exit,
)

pytestmark = pytest.mark.integration
CANARY = "QZXPHICANARY"
TEXT = [
    "FINDINGS:",
    f"Small right pleural effusion. Patient {CANARY} was scanned supine.",
    "No pneumothorax.",
]


def patient(n: int, **values: Any) -> dict[str, Any]:
    """oru() keyword values that put the canary in name, identifiers and text."""
    return {
        "name": f"{CANARY}^ANNA{n}",
        "mrn": f"{CANARY}{n:03d}",
        "accession": f"{CANARY}-ACC{n}",
        "lines": TEXT,
        **values,
    }


def refuse_flagged(bundle: dict[str, Any]) -> str | None:
    """The EHR refuses Bundles of patients whose identifier says REFUSE, echoing it back (as a
    careless EHR might: radbridge must not log what the EHR says)."""
    for entry in bundle["entry"]:
        for identifier in entry["resource"].get("identifier", []):
            if "REFUSE" in str(identifier.get("value")):
                return f"patient {identifier['value']} is unknown here"
    return None


def fhir_report(**changes: Any) -> dict[str, Any]:
    text = base64.b64encode("\n".join(TEXT).encode()).decode()
    return {
        "resourceType": "DiagnosticReport",
        "id": "phi-dr-1",
        "status": "final",
        "code": {"text": "CT chest"},
        "subject": {"identifier": {"value": f"{CANARY}-FHIR"}, "display": CANARY},
        "presentedForm": [{"contentType": "text/plain", "data": text}],
        **changes,
    }


def test_a_phi_canary_reaches_no_log_no_error_body_and_no_metric(tmp_path: Path) -> None:
    ehr = FhirServer().start()
    ehr.refuse = refuse_flagged
    serve = make_serve(
        tmp_path,
        {
            "RADBRIDGE_FHIR_BASE_URL": ehr.base_url,
            **EHR_IDENTITY_ENV,
            "RADBRIDGE_TASK_MAX_RETRIES": "1",
            **debug_logging_env(tmp_path / "site"),
        },
    )
    good = [oru(f"PHI{n}", **patient(n)) for n in range(3)]
    refused = [oru(f"PHI{n}", **patient(n, mrn=f"{CANARY}REFUSE{n}")) for n in (3, 4)]
    no_text = oru("PHI5", **patient(5, lines=[]))
    no_template = oru(
        "PHI6",
        **patient(6, lines=[f"Knee of {CANARY}: no effusion."]),
        procedure="73721^MRI knee^CPT",
    )
    wrong_version = oru("PHI7", **patient(7), version="3.0")  # AR before the ACK
    bodies: list[tuple[str, int, str]] = []  # (what, status, body) of every error answer
    try:
        with stopped_at_exit(serve):
            serve.start().ready()
            stream = [*good, *refused, no_text, no_template, wrong_version]
            acks = send_mllp(serve.mllp_port, stream)
            assert len(acks) == len(stream)
            codes = [msa(ack)[0] for ack in acks]
            assert codes == ["CA"] * 7 + ["CR"]  # enhanced mode (MSH-15 AL): commit ACKs

            http = httpx.Client(base_url=serve.http, timeout=30)
            answers = {
                "hl7v2 wrong version": http.post("/hl7v2", content=wrong_version),
                "hl7v2 accepted": http.post("/hl7v2", content=oru("PHI8", **patient(8))),
                "fhir pdf only": http.post(
                    "/fhir/DiagnosticReport",
                    json=fhir_report(
                        presentedForm=[{"contentType": "application/pdf", "data": "JVBERg=="}]
                    ),
                ),
                "fhir bad date": http.post(
                    "/fhir/DiagnosticReport", json=fhir_report(effectiveDateTime=CANARY)
                ),
                "fhir bad status": http.post(
                    "/fhir/DiagnosticReport", json=fhir_report(status="entered-in-error")
                ),
                "fhir wrong type": http.post("/fhir", json=fhir_report()),
                "job beyond range": http.get("/jobs/99999999999999999999999"),
            }
            statuses = {what: answer.status_code for what, answer in answers.items()}
            assert statuses == {
                "hl7v2 wrong version": 400,
                "hl7v2 accepted": 200,
                "fhir pdf only": 422,
                "fhir bad date": 400,
                "fhir bad status": 400,
                "fhir wrong type": 400,
                "job beyond range": 400,
            }
            bodies += [(what, a.status_code, a.text) for what, a in answers.items()]
            jobs = codes.count("CA") + 1  # the MLLP messages accepted, and one over HTTP

            # 5 delivered (one of them with no template: its report and insights, issue 20);
            # 1 dead (without text); 2 extracted whose delivery the EHR refused (`refused` for
            # that destination, issue 19: the message is not dead)
            expected = {"delivered": 5, "dead": 1, "extracted": 2}
            waited = wait_for(
                lambda: serve.states() == expected,
                120,
                f"states {expected}",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            records = [serve.job(i) for i in range(1, jobs + 1)]
            states = sorted(r["state"] for r in records)
            metrics = http.get("/metrics").text
            ready = http.get("/readyz")
            bodies += [("job", 200, json.dumps(r)) for r in records]
            bodies.append(("readyz", ready.status_code, ready.text))
    finally:
        ehr.stop()
    log = serve.log()
    print(
        f"PHI canary: {len(acks) + len(answers)} answers, {len(records)} jobs {states}, "
        f"{ehr.refused} deliveries refused, settled in {waited:.1f} s, log {len(log)} bytes, "
        f"{sum(1 for line in log.splitlines() if line.startswith('DEBUG'))} DEBUG lines"
    )
    # the failures happened: deliveries refused, a report without text dead, the rest delivered
    assert ehr.refused >= 2
    assert states.count("dead") == 1 and states.count("delivered") == 5
    assert ready.status_code == 200 and ready.json()["destinations"]["fhir"]["refused"] == 2
    # every process logged at DEBUG (serve's listener, the worker's Celery), so the check bites
    assert "DEBUG radbridge.mllp mllp frame size=" in log
    assert "DEBUG celery" in log
    leaks = [line for line in log.splitlines() if CANARY in line]
    assert not leaks, f"{len(leaks)} log lines hold the canary, e.g. {leaks[0][:200]}"
    for ack in acks:
        assert CANARY.encode() not in ack
    for what, status, body in bodies:
        assert CANARY not in body, f"{what} ({status}) answers with the canary: {body[:300]}"
    assert CANARY not in metrics
