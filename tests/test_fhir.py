"""FHIR in (DiagnosticReport/Bundle -> Report) and out (Bundle building details)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings.errors import MessageRejected
from mappings.fhir_in import reports_from_fhir
from mappings.fhir_out import build_bundle
from mappings.report import ResultStatus

FHIR_DIR = Path(__file__).parent / "fixtures" / "fhir"


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text("utf-8"))
    return data


def test_bundle_with_presented_form_and_patient() -> None:
    (report,) = reports_from_fhir(load(FHIR_DIR / "bundle_collection.json"))
    assert report.report_id == "dr-chest-1"
    assert report.source_format == "fhir"
    assert report.accession_number == "ACC-F1"
    assert report.patient_identifiers[0].value == "MRN-F1"
    assert report.patient_identifiers[0].system == "urn:oid:1.2.3.4"
    assert (
        report.text
        == "FINDINGS:\nSmall left pleural effusion.\nNo pneumothorax.\n\nLeft pleural effusion."
    )
    assert report.result_status is ResultStatus.FINAL
    assert report.observation_time is not None and report.observation_time.utcoffset() is not None
    assert report.procedure is not None and report.procedure.code == "30745-4"


def test_contained_observation_text() -> None:
    (report,) = reports_from_fhir(load(FHIR_DIR / "dr_contained_observation.json"))
    assert report.text == "Ground-glass opacity in the right upper lobe."
    assert report.result_status is ResultStatus.PRELIMINARY
    assert report.patient_identifiers[0].value == "MRN-F2"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("bad_pdf_only.json", "pdf_only"), ("bad_not_a_report.json", "unsupported_resource")],
)
def test_rejections(name: str, reason: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        reports_from_fhir(load(FHIR_DIR / name))
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("diagnosticreport-example-f201-brainct.json", "f201"),
        ("diagnosticreport-example-ultrasound.json", "ultrasound"),
        # lab reports with neither presentedForm text nor conclusion nor valueString results
        ("diagnosticreport-example-dxa.json", "no_narrative"),
        ("diagnosticreport-example-papsmear.json", "no_narrative"),
    ],
)
def test_official_r4_examples(shared_dir: Path, name: str, outcome: str) -> None:
    resource = load(shared_dir / "fixtures" / "fhir-r4" / name)
    try:
        reports = reports_from_fhir(resource)
    except MessageRejected as exc:
        assert exc.reason == outcome
        return
    assert [r.report_id for r in reports] == [outcome]
    assert reports[0].text


def test_stu3_report_is_rejected(shared_dir: Path) -> None:
    resource = load(
        shared_dir / "fixtures" / "hl7v2" / "ms-fhir-converter" / "Stu3-DiagnosticReport.json"
    )
    with pytest.raises(MessageRejected) as caught:
        reports_from_fhir(resource)
    assert caught.value.reason == "invalid_resource"


def test_fhir_report_to_bundle_uses_report_id(tmp_path: Path) -> None:
    from mappings.template import get_template
    from tests.golden import expected_extraction

    (report,) = reports_from_fhir(load(FHIR_DIR / "bundle_collection.json"))
    template = get_template("chest_findings")
    values = {v.id: {"status": "not_mentioned"} for v in template.variables}
    values["pleural_effusion"] = {
        "status": "present",
        "quote": "Small left pleural effusion",
        "locations": ["left_lung"],
    }
    values["pneumothorax"] = {"status": "absent", "quote": "No pneumothorax"}
    first = build_bundle(report, expected_extraction(report, template, values), template)
    second = build_bundle(report, expected_extraction(report, template, values), template)
    assert json.dumps(first) == json.dumps(second)  # deterministic ids and order
    observations = [
        e["resource"] for e in first["entry"] if e["resource"]["resourceType"] == "Observation"
    ]  # type: ignore[index,union-attr]
    assert len(observations) == 2
    absent = next(o for o in observations if o["code"]["coding"][0]["code"] == "36118008")
    assert absent["valueCodeableConcept"]["coding"][0]["code"] == "2667000"
    assert "bodySite" not in absent
    final = build_bundle(
        report, expected_extraction(report, template, values), template, observation_status="final"
    )
    assert {
        e["resource"]["status"]
        for e in final["entry"]
        if e["resource"]["resourceType"] == "Observation"
    } == {"final"}  # type: ignore[index,union-attr]
