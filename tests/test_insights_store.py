"""Insights on a real store (SQLite, PostgreSQL): a message whose report no template applies to
(issue 20 item 1) keeps its Bundle (the report and its insights) with the reason "no template";
a corrected report retires the insights it no longer says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from conformance.validate import validate_resource
from mappings.inbound import report_from_record
from mappings.report import Coding, ResultStatus
from mappings.template import load_builtin_templates
from workers.process import process_reports
from workers.tasks import process_message

SCROTUM_US = "\r".join(
    [
        "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20261102101500||ORU^R01|INS0001|P|2.3",
        "PID|1||MRN-INS1^^^RBH^MR||TESTPATIENT^GAMMA||19800101|M",
        "OBR|1|PL9001|ACC9001|76870^US SCROTUM^CPT|||20261102100000|||||||||||||||"
        "20261102101400||US|F",
        "OBX|1|TX|&GDT||US SCROTUM~IMPRESSION: Left testicular torsion.~"
        "Recommend follow-up ultrasound in 6 weeks.||||||F",
    ]
).encode()


def test_a_no_template_message_keeps_its_bundle_and_says_no_template(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    incoming = Incoming(SCROTUM_US, "mllp", "RIS", "RBHOSP", "INS0001")
    message_id = store.accept(incoming).message_id
    (bundle_id,) = process_message(store, settings, message_id) or []
    row = store.get_message(message_id)
    assert row is not None and row.state == "extracted" and row.reason == "no template"
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    assert store.insight_counts() == {
        "ServiceRequest": 1,
        "Flag": 1,
        "Communication": 0,
        "DetectedIssue": 0,
        "flagged_reports": 1,
        "no_template": 1,
    }
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == [
        "Device",
        "DiagnosticReport",
        "Flag",
        "Patient",
        "Provenance",
        "ServiceRequest",
    ]


def _bundle(text: str, status: str, time: str, **patient: Any) -> dict[str, Any]:
    record = {"id": "ins-corr", "text": text, "date": time}
    report = report_from_record(record, default_language="en")
    report = report.model_copy(update={"result_status": ResultStatus(status), **patient})
    outcome = process_reports(
        [report], list(load_builtin_templates().values()), Settings(stage="rules"), _no_engine
    )
    (result,) = outcome.results
    assert result.bundle is not None
    return result.bundle


def _no_engine() -> Any:
    raise AssertionError("the rules stage needs no engine")


def test_a_corrected_report_retires_the_insights_it_no_longer_says(store: Store) -> None:
    _, stored = _corrected(
        store,
        "US ABDOMEN\nIMPRESSION: Acute appendicitis. Recommend ultrasound in 6 weeks.",
        "US ABDOMEN\nIMPRESSION: Normal appendix. No follow-up needed.",
    )
    statuses = {
        e["resource"]["resourceType"]: e["resource"]["status"]
        for e in stored["entry"]
        if e["resource"]["resourceType"] in ("ServiceRequest", "Flag")
    }
    assert statuses == {"ServiceRequest": "entered-in-error", "Flag": "entered-in-error"}
    assert store.insight_counts()["Flag"] == 0  # a retired Flag is not counted
    assert store.insight_counts()["flagged_reports"] == 0
    assert [p for p in validate_resource(stored) if p.severity == "error"] == []


def _corrected(
    store: Store, text: str, corrected_text: str, **patient: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Bundle of `text` (final) and the stored Bundle after its correction."""
    first = _bundle(text, "F", "2026-11-02T10:00:00", **patient)
    store.save_result(None, "ins-corr", first)
    corrected = _bundle(corrected_text, "C", "2026-11-02T12:00:00", **patient)
    saved = store.save_result(None, "ins-corr", corrected)
    assert saved.saved
    stored = store.get_bundle(saved.bundle_id)
    assert stored is not None
    return first, stored


def _issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DetectedIssue"
    ]


def test_a_corrected_report_retires_the_mismatch_it_no_longer_says(store: Store) -> None:
    first, stored = _corrected(
        store,
        "US PELVIS\nFINDINGS: The uterus is normal. Bladder normal.",
        "US PELVIS\nFINDINGS: The prostate is normal. Bladder normal.",
        patient_sex="male",
        procedure=Coding(display="US PELVIS"),
    )
    (issue,) = _issues(first)
    assert issue["status"] == "preliminary"
    (retired,) = _issues(stored)
    assert (retired["id"], retired["status"]) == (issue["id"], "entered-in-error")
    assert [p for p in validate_resource(stored) if p.severity == "error"] == []


def test_metrics_count_flagged_reports_not_flags(store: Store, tmp_path: Path) -> None:
    """Issue 20: `/metrics` counts flagged reports; a report with two critical results is one
    flagged report with two Flags."""
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    two_critical = SCROTUM_US.replace(
        b"IMPRESSION: Left testicular torsion.~",
        b"IMPRESSION: Left testicular torsion. Free intraperitoneal air.~",
    ).replace(b"INS0001", b"INS0002")
    message_id = store.accept(Incoming(two_critical, "mllp", "RIS", "RBHOSP", "INS0002")).message_id
    assert process_message(store, settings, message_id)
    counts = store.insight_counts()
    assert (counts["Flag"], counts["flagged_reports"]) == (2, 1)
