"""conformance/validate.py: both validators pass good resources and catch broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.validate import format_problem, validate_paths, validate_resource

FHIR_DIR = Path(__file__).parent / "fixtures" / "fhir"


@pytest.mark.parametrize(
    "name",
    [
        "diagnosticreport-example-f201-brainct.json",
        "diagnosticreport-example-ultrasound.json",
        "observation-example.json",
        "observation-example-bmd.json",
        "imagingstudy-example.json",
    ],
)
def test_official_examples_pass(shared_dir: Path, name: str) -> None:
    data = json.loads((shared_dir / "fixtures" / "fhir-r4" / name).read_text("utf-8"))
    assert validate_resource(data, path=name) == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("invalid_bad_status.json", "Observation.status"),
        ("invalid_unknown_element.json", "colour"),
        ("invalid_missing_code.json", "code"),
    ],
)
def test_broken_resources_are_caught(name: str, fragment: str) -> None:
    problems = validate_resource(json.loads((FHIR_DIR / name).read_text("utf-8")), path=name)
    assert problems
    assert all(p.severity == "error" for p in problems)
    assert any(fragment in p.fhirpath or fragment in p.message for p in problems)


def test_stu3_report_fails(shared_dir: Path) -> None:
    path = shared_dir / "fixtures" / "hl7v2" / "ms-fhir-converter" / "Stu3-DiagnosticReport.json"
    problems = validate_paths([path])
    assert any("R4 schema" in p.message for p in problems)
    assert any("R4B model" in p.message for p in problems)


def test_unreadable_json_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", "utf-8")
    (problem,) = validate_paths([tmp_path])
    assert problem.severity == "error"
    assert format_problem(problem).split("\t")[:3] == [
        str(tmp_path / "broken.json"),
        "error",
        "(file)",
    ]


def test_project_rules_catch_unknown_snomed_code(fixtures_dir: Path) -> None:
    golden = json.loads((fixtures_dir / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))
    bundle = golden["CT0001-1"]
    observation = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    observation["code"]["coding"][0]["code"] = "416940007"  # a known-wrong "nodule" code
    problems = validate_resource(bundle)
    assert any("416940007" in p.message for p in problems)


def test_project_rules_catch_unlinked_observation(fixtures_dir: Path) -> None:
    golden = json.loads((fixtures_dir / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))
    bundle = golden["CT0001-1"]
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    report["result"] = report["result"][1:]
    problems = validate_resource(bundle)
    assert any("DiagnosticReport.result" in p.message for p in problems)
