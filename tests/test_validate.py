"""conformance/validate.py: three independent checks (R4B models, the R4 JSON schema, FHIR.js)
pass good resources and catch broken ones; the project rules catch what radbridge must never
emit; a missing node is said, never silent."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.validate import (
    Problem,
    find_fhirjs,
    format_problem,
    validate_documents,
    validate_paths,
    validate_resource,
)

FHIR_DIR = Path(__file__).parent / "fixtures" / "fhir"
HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
CHECKS = ("R4B model", "R4 schema", "npm fhir")
OFFICIAL = [
    "diagnosticreport-example-f201-brainct.json",
    "diagnosticreport-example-ultrasound.json",
    "diagnosticreport-example-dxa.json",
    "diagnosticreport-example-papsmear.json",
    "observation-example.json",
    "observation-example-bmd.json",
    "observation-example-vitals-panel.json",
    "imagingstudy-example.json",
    "imagingstudy-example-xr.json",
]


@pytest.fixture(scope="module")
def fhirjs() -> None:
    """FHIR.js must be usable: skipped only where Node.js is absent (it is optional)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the npm fhir check is optional")
    if find_fhirjs() is None:
        pytest.fail("node exists but the npm package fhir is missing: run `make venv`")


def golden_bundles() -> list[tuple[str, dict[str, Any]]]:
    """Every transaction Bundle of the hand-reviewed HL7v2 goldens."""
    bundles = []
    for path in sorted(HL7_DIR.glob("*.fhir.json")):
        for report_id, bundle in json.loads(path.read_text("utf-8")).items():
            bundles.append((f"{path.name}:{report_id}", bundle))
    return bundles


def ct_bundle() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads((HL7_DIR / "chest_ct.fhir.json").read_text("utf-8"))[
        "CT0001-1"
    ]
    return bundle


def entries(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def checks_of(problems: list[Problem]) -> set[str]:
    return {check for check in CHECKS for p in problems if p.message.startswith(f"{check}:")}


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_examples_pass(shared_dir: Path, name: str) -> None:
    data = json.loads((shared_dir / "fixtures" / "fhir-r4" / name).read_text("utf-8"))
    assert validate_resource(data, path=name) == []


@pytest.mark.usefixtures("fhirjs")
def test_official_examples_pass_all_three_checks(shared_dir: Path) -> None:
    documents = [
        (name, json.loads((shared_dir / "fixtures" / "fhir-r4" / name).read_text("utf-8")))
        for name in OFFICIAL
    ]
    assert validate_documents(documents) == []


@pytest.mark.usefixtures("fhirjs")
def test_golden_bundles_pass_all_three_checks() -> None:
    bundles = golden_bundles()
    assert len(bundles) >= 6
    assert validate_documents(bundles) == []


@pytest.mark.parametrize(
    ("name", "fragment", "checks"),
    [
        # the R4B models do not check required code bindings; the schema and FHIR.js do
        ("invalid_bad_status.json", "Observation.status", {"R4 schema", "npm fhir"}),
        ("invalid_unknown_element.json", "colour", set(CHECKS)),
        ("invalid_missing_code.json", "code", set(CHECKS)),
    ],
)
@pytest.mark.usefixtures("fhirjs")
def test_broken_resources_are_caught(name: str, fragment: str, checks: set[str]) -> None:
    problems = validate_paths([FHIR_DIR / name])
    assert problems
    assert all(p.severity == "error" for p in problems)
    assert any(fragment in p.fhirpath or fragment in p.message for p in problems)
    assert checks_of(problems) == checks


@pytest.mark.usefixtures("fhirjs")
def test_stu3_report_fails_every_check(shared_dir: Path) -> None:
    path = shared_dir / "fixtures" / "hl7v2" / "ms-fhir-converter" / "Stu3-DiagnosticReport.json"
    problems = validate_paths([path])
    assert checks_of(problems) == set(CHECKS)
    npm = [p for p in problems if p.message.startswith("npm fhir:")]
    assert {p.fhirpath for p in npm} >= {"DiagnosticReport.codedDiagnosis"}


@pytest.mark.usefixtures("fhirjs")
def test_fhirjs_problems_point_into_the_bundle_entry() -> None:
    bundle = ct_bundle()
    bundle["entry"][4]["resource"]["status"] = "bogus"
    problems = validate_documents([("ct.json", bundle)])
    npm = [p for p in problems if p.message.startswith("npm fhir:")]
    assert [p.fhirpath for p in npm] == ["Bundle.entry[4].resource.status"]
    assert "bogus" in npm[0].message


def test_missing_node_is_said_not_silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without node
    problems = validate_paths([FHIR_DIR / "invalid_unknown_element.json"])
    notices = [p for p in problems if p.severity == "information"]
    assert [p.message for p in notices] == ["npm fhir check skipped: node not found"]
    assert checks_of(problems) == {"R4B model", "R4 schema"}


def test_cli_prints_the_notice_and_passes_valid_bundles(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for name, bundle in golden_bundles()[:3]:
        (folder / f"{name.replace(':', '_')}.json").write_text(json.dumps(bundle), "utf-8")
    env = {**os.environ, "PATH": str(tmp_path)}  # no node on this PATH
    result = subprocess.run(
        [*RADBRIDGE, "validate", str(folder)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "-\tinformation\t(npm fhir)\tnpm fhir check skipped: node not found"
    ]


def test_unreadable_json_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", "utf-8")
    (problem,) = validate_paths([tmp_path])
    assert problem.severity == "error"
    assert format_problem(problem).split("\t")[:3] == [
        str(tmp_path / "broken.json"),
        "error",
        "(file)",
    ]


def test_project_rules_refuse_do_not_use_code() -> None:
    bundle = ct_bundle()
    entries(bundle, "Observation")[0]["code"]["coding"][0]["code"] = "416940007"
    problems = validate_resource(bundle)
    assert any("416940007" in p.message and "do-not-use" in p.message for p in problems)


def test_project_rules_catch_unknown_snomed_code() -> None:
    bundle = ct_bundle()
    coding = entries(bundle, "Observation")[0]["code"]["coding"][0]
    coding["code"] = "786838002"  # a real SNOMED CT concept: not in the GPS, no template cites it
    problems = validate_resource(bundle)
    assert [p.message for p in problems if p.severity == "error"] == [
        "http://snomed.info/sct|786838002 is neither radbridge's own code, in the installed "
        "SNOMED CT / LOINC tables, nor cited by a template"
    ]
    assert problems[0].fhirpath == "Bundle.entry[3].resource.code.coding[0]"


def test_project_rules_catch_coding_without_system() -> None:
    bundle = ct_bundle()
    observation = entries(bundle, "Observation")[1]
    del observation["valueCodeableConcept"]["coding"][0]["system"]
    problems = validate_resource(bundle)
    assert any(
        p.message == "coding without system or code"
        and p.fhirpath == "Bundle.entry[4].resource.valueCodeableConcept.coding[0]"
        for p in problems
    )


def test_project_rules_warn_on_a_display_that_is_not_the_tables() -> None:
    bundle = ct_bundle()
    entries(bundle, "Observation")[0]["code"]["coding"][0]["display"] = "Something else"
    (problem,) = validate_resource(bundle)
    assert problem.severity == "warning"
    assert "Something else" in problem.message


def test_project_rules_apply_only_to_radbridge_resources(shared_dir: Path) -> None:
    data = json.loads(
        (shared_dir / "fixtures" / "fhir-r4" / "observation-example.json").read_text("utf-8")
    )
    data["code"]["coding"][0]["code"] = "73211009"  # not ours: standard checks only
    assert validate_resource(data) == []


def test_project_rules_catch_unlinked_observation() -> None:
    bundle = ct_bundle()
    entries(bundle, "DiagnosticReport")[0]["result"] = entries(bundle, "DiagnosticReport")[0][
        "result"
    ][1:]
    problems = validate_resource(bundle)
    assert [p.message for p in problems] == ["Observation is not in any DiagnosticReport.result"]


def test_project_rules_catch_observation_missing_from_provenance() -> None:
    bundle = ct_bundle()
    provenance = entries(bundle, "Provenance")[0]
    provenance["target"] = provenance["target"][:-1]
    problems = validate_resource(bundle)
    assert [p.message for p in problems] == ["Observation is not a Provenance.target"]


def test_project_rules_catch_dangling_result_and_missing_source() -> None:
    bundle = ct_bundle()
    report = entries(bundle, "DiagnosticReport")[0]
    report["result"].append({"reference": "Observation/not-in-this-bundle"})
    provenance = entries(bundle, "Provenance")[0]
    provenance["entity"][0]["what"]["reference"] = "DiagnosticReport/elsewhere"
    messages = sorted(p.message for p in validate_resource(bundle))
    assert messages == [
        "DiagnosticReport.result 'Observation/not-in-this-bundle' is not an Observation of this Bundle",
        "Provenance.entity does not name this Bundle's DiagnosticReport",
    ]


def test_valid_golden_bundle_has_no_project_problems() -> None:
    for name, bundle in golden_bundles():
        assert validate_resource(copy.deepcopy(bundle), path=name) == [], name
