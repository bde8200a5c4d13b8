"""Mismatches as FHIR (issue 20 item 6): a `DetectedIssue` per mismatch in the report's Bundle,
checked by the R4B models, the official R4 JSON schema and FHIR.js (the R4B DetectedIssue is
wire-compatible with R4's for the elements radbridge writes), with evidence, the AI marking, the
Provenance and deterministic ids."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from adapter.settings import Settings
from conformance.validate import find_fhirjs, validate_documents, validate_resource
from mappings.hl7.oru_in import parse_oru
from mappings.report import Report
from mappings.template import load_builtin_templates
from tests.fakes import FakeEngine
from workers.process import process_reports

TEXT = (
    "RIGHT KNEE, THREE VIEWS~History: 30-year-old man after a fall.~"
    "Findings: Small joint effusion. No fracture.~Impression: Effusion of the right knee."
)


def _oru(text: str = TEXT, birth: str = "19500101", sex: str = "M") -> bytes:
    return "\r".join(
        [
            "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20250630101500||ORU^R01|MM0002|P|2.5",
            f"PID|1||MRN-MM2^^^RBH^MR||TESTPATIENT^EPSILON||{birth}|{sex}",
            "OBR|1|PL2|ACC2|73562^XR KNEE LEFT 3 VIEWS^CPT|||20250630100000|||||||||||||||"
            "20250630101400||CR|F",
            f"OBX|1|TX|&GDT||{text}||||||F",
        ]
    ).encode()


def _bundle(payload: bytes) -> dict[str, Any]:
    reports: list[Report] = list(parse_oru(payload).reports)
    outcome = process_reports(
        reports,
        list(load_builtin_templates().values()),
        Settings(stage="rules"),
        lambda: FakeEngine(""),
    )
    (result,) = outcome.results
    assert result.bundle is not None
    return result.bundle


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_a_mismatch_is_a_detected_issue_with_both_sides_and_evidence() -> None:
    bundle = _bundle(_oru())
    issues = {i["code"]["text"].split()[0]: i for i in _of(bundle, "DetectedIssue")}
    assert set(issues) == {"Laterality", "Mismatch"}  # laterality and age (the man is 75)
    (report,) = _of(bundle, "DiagnosticReport")
    (patient,) = _of(bundle, "Patient")
    laterality = issues["Laterality"]
    assert laterality["status"] == "preliminary"
    assert laterality["implicated"] == [{"reference": f"DiagnosticReport/{report['id']}"}]
    assert laterality["evidence"] == [
        {"detail": [{"reference": f"DiagnosticReport/{report['id']}"}]}
    ]
    assert laterality["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert laterality["identifiedDateTime"] == report["effectiveDateTime"]
    assert laterality["detail"] == "Order: left (order: XR KNEE LEFT 3 VIEWS); report: right"
    assert laterality["meta"]["security"][0]["code"] == "AIAST"
    evidence = {
        s["url"]: next(v for k, v in s.items() if k.startswith("value"))
        for s in laterality["extension"][0]["extension"]
    }
    text = parse_oru(_oru()).reports[0].text
    assert (
        text[evidence["start"] : evidence["end"]] == evidence["quote"] == "RIGHT KNEE, THREE VIEWS"
    )
    assert evidence["variable"] == "mismatch.laterality"
    age = issues["Mismatch"]
    assert age["detail"] == "Patient's age: 75 years (from the birth date); report states: 30 years"
    (provenance,) = _of(bundle, "Provenance")
    targets = {t["reference"] for t in provenance["target"]}
    assert {f"DetectedIssue/{i['id']}" for i in issues.values()} <= targets
    assert [p.message for p in validate_resource(bundle) if p.severity == "error"] == []
    # the same report again: the same ids (a re-extraction PUTs them again)
    again = {i["id"] for i in _of(_bundle(_oru()), "DetectedIssue")}
    assert again == {i["id"] for i in issues.values()}


def test_detected_issues_pass_fhirjs() -> None:
    if shutil.which("node") is None or find_fhirjs() is None:
        pytest.skip("Node.js or the npm fhir package is absent: the FHIR.js check is optional")
    text = TEXT + "~Uterus not assessed. The ovaries are normal."
    bundle = _bundle(_oru(text))
    kinds = sorted(i["code"]["text"] for i in _of(bundle, "DetectedIssue"))
    assert len(kinds) == 3  # laterality, age, sex
    problems = validate_documents([("mismatch", bundle)])
    assert [p for p in problems if p.severity == "error"] == []


def test_no_detected_issue_without_a_birth_date_sex_or_ordered_side() -> None:
    payload = _oru(birth="19850230", sex="U").replace(b"XR KNEE LEFT 3 VIEWS", b"XR KNEE 3 VIEWS")
    bundle = _bundle(payload)
    assert _of(bundle, "DetectedIssue") == []


def test_the_r4b_detected_issue_has_the_r4_elements() -> None:
    from fhir.resources.R4B.detectedissue import DetectedIssue

    from conformance.validate import _schema

    r4 = {k for k in _schema()["definitions"]["DetectedIssue"]["properties"] if k[0] != "_"}
    r4b = {
        k for k in DetectedIssue.model_fields if not k.endswith("__ext") and k != "fhir_comments"
    }
    assert r4 - {"resourceType"} == r4b
