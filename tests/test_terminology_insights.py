"""The verified codes of the insights and normal studies (issues 20, 21): the critical list's
concepts (Flag.code), RADS values, follow-up procedure codes (ServiceRequest.code) and the
normal-study conclusionCode; each is in the SNOMED CT / LOINC table radbridge installs with its
display (and, for SNOMED CT, in the GPS 2019 of ../shared with the same FSN)."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from conformance.validate import validate_resource
from mappings import terminology as term
from mappings.inbound import report_from_record
from mappings.insights.critical_list import CriticalListError, load_critical_list
from mappings.procedure_codes import body_region, procedure_codings
from mappings.rads_codes import UNCODED_RADS, rads_code_codings, rads_value_codings
from mappings.template import load_builtin_templates
from mappings.terminology_tables import code_problems, table_display
from tests.fakes import FakeEngine
from workers.process import process_reports

SCT = term.SNOMED


@pytest.fixture(scope="module")
def gps2019(shared_dir: Path) -> dict[str, str]:
    with (shared_dir / "terminology" / "snomed-gps-2019.tsv").open(encoding="utf-8") as fh:
        return {row["sctid"]: row["display"] for row in csv.DictReader(fh, delimiter="\t")}


def test_every_critical_finding_has_a_verified_code_or_says_why(gps2019: dict[str, str]) -> None:
    coded = 0
    for finding in load_critical_list():
        if finding.code is None:
            assert finding.uncoded_reason and "text only" in finding.uncoded_reason, finding.id
            continue
        coded += 1
        code = finding.code
        assert code_problems(code.system, code.code, code.display, code.source) == [], finding.id
        assert code.system == SCT and gps2019[code.code] == code.display, finding.id
        assert (SCT, code.code) not in term.DO_NOT_USE
    assert coded >= 10


def test_the_critical_list_shares_concept_codes_with_the_templates() -> None:
    """Issue 20: the head CT and abdomen findings and the critical list share concept codes."""
    templates = load_builtin_templates()
    codes = {f.id: f.code.code for f in load_critical_list() if f.code is not None}
    pairs = {
        "intracranial_haemorrhage": ("head_ct", "intracranial_haemorrhage"),
        "acute_cerebral_infarct": ("head_ct", "acute_infarct"),
        "appendicitis": ("abdomen", "appendicitis"),
        "bowel_obstruction": ("abdomen", "bowel_obstruction"),
    }
    for finding, (template_id, variable_id) in pairs.items():
        variable = templates[template_id].variable(variable_id)
        assert variable.code is not None and variable.code.code == codes[finding], finding


def _write(tmp_path: Path, code: str) -> Path:
    path = tmp_path / "critical.yaml"
    path.write_text(
        "findings:\n  - id: pe\n    label: PE\n    category: 2\n    terms: [pulmonary embolism]\n"
        + code,
        encoding="utf-8",
    )
    return path


def test_a_hospital_list_code_is_checked_like_a_template_code(tmp_path: Path) -> None:
    (plain,) = load_critical_list(_write(tmp_path, ""))
    assert plain.code is None  # text only: a hospital's own list may carry no codes
    wrong = (
        "    code: {system: 'http://snomed.info/sct', code: '59282003', display: Embolism,\n"
        "      source: SNOMED CT GPS}\n"
    )
    with pytest.raises(CriticalListError, match="display 'Embolism' is not"):
        load_critical_list(_write(tmp_path / ".." / tmp_path.name, wrong))
    (tmp_path / "b").mkdir()
    with pytest.raises(CriticalListError, match="code needs system, code, display and source"):
        load_critical_list(_write(tmp_path / "b", "    code: {code: '59282003'}\n"))


def test_every_table_code_has_the_installed_tables_display() -> None:
    """A code of mappings/terminology.py that the installed SNOMED CT GPS or LOINC c80 table
    holds carries that table's display (the tables are what a reader of the Bundle can check)."""
    checked = 0
    for entry in term.TERMS:
        if entry.system not in (SCT, term.LOINC):
            continue
        expected = table_display(entry.system, entry.code)
        if expected is None:
            assert term.C80 not in entry.source and entry.source != term.GPS, entry.code
            continue
        checked += 1
        assert entry.display == expected, entry.code
    assert checked > 100


def test_rads_values_are_coded_only_where_the_concept_says_exactly_that() -> None:
    assert [c["code"] for c in rads_value_codings("BI-RADS", "4", "MG")] == ["397144001"]
    assert [c["code"] for c in rads_value_codings("BI-RADS", "0", "MG")] == ["397138000"]
    assert rads_value_codings("BI-RADS", "4A", "MG") == []  # the GPS has Category 4 only
    assert rads_value_codings("BI-RADS", "6", "MG") == []
    assert rads_value_codings("BI-RADS", "2", "US") == []  # "Mammography assessment"
    assert rads_value_codings("BI-RADS", "2", None) == []
    assert [c["code"] for c in rads_value_codings("BI-RADS density", "c", None)] == ["129718006"]
    assert [c["code"] for c in rads_code_codings("BI-RADS density")] == ["129715009"]
    for system in ("Lung-RADS", "PI-RADS", "TI-RADS", "LI-RADS", "O-RADS"):
        assert rads_value_codings(system, "4", "CT") == rads_code_codings(system) == []
        assert "no concept" in UNCODED_RADS[system]


@pytest.mark.parametrize(
    ("kind", "modality", "text", "expected"),
    [
        ("imaging", "CT", "low-dose chest CT", (term.LOINC, "24627-2")),
        ("imaging", "US", "follow-up pelvic ultrasound", (term.LOINC, "24869-0")),
        ("imaging", "US", "echo schildklier", (term.LOINC, "25010-0")),
        ("imaging", "MR", "MRT der Prostata", (term.LOINC, "30675-3")),
        ("imaging", "CT", "CT abdomen and pelvis", (term.LOINC, "44115-4")),
        ("imaging", "MG", "diagnostic mammogram", (term.LOINC, "36625-2")),
        ("imaging", "CT", "CT of the chest and abdomen", (SCT, "77477000")),  # two regions
        ("imaging", "CT", "long-term follow-up CT", (SCT, "77477000")),  # "long" is no lung
        ("imaging", "MR", "MRI", (SCT, "113091000")),
        ("biopsy", "US", "ultrasound-guided biopsy", (SCT, "277667006")),
        ("biopsy", None, "biopsy of the breast lesion", (SCT, "122548005")),
        ("biopsy", None, "tissue sampling", (SCT, "86273004")),
    ],
)
def test_follow_up_procedure_codes(
    kind: str, modality: str | None, text: str, expected: tuple[str, str]
) -> None:
    (coding,) = procedure_codings(kind, modality, text)
    assert (coding["system"], coding["code"]) == expected
    assert coding["display"] == term.require(*expected).display


def test_the_region_is_read_from_the_action_s_clause() -> None:
    sentence = "Recommend liver MRI in 3 months; chest CT in 12 months."
    assert [c["code"] for c in procedure_codings("imaging", "MR", "MRI", sentence)] == ["36046-1"]
    assert [c["code"] for c in procedure_codings("imaging", "CT", "CT", sentence)] == ["24627-2"]
    # a region outside the action's clause is not read: the generic procedure of the modality
    sentence = "Liver lesion, recommend MRI in 3 months."
    assert [c["code"] for c in procedure_codings("imaging", "MR", "MRI", sentence)] == ["113091000"]


def test_follow_ups_without_a_verified_procedure_stay_text_only() -> None:
    assert procedure_codings("consultation", None, "multidisciplinary discussion") == []
    assert procedure_codings("imaging", None, "further imaging") == []
    assert procedure_codings("imaging", "NM", "bone scan") == []
    assert body_region("CT of the head and neck") is None


def _bundle(text: str, modality: str | None = None) -> dict[str, Any]:
    record = {"id": "r1", "text": text, "date": "2025-03-10T09:00:00"}
    if modality:
        record["modality"] = modality
    outcome = process_reports(
        [report_from_record(record, default_language="en")],
        list(load_builtin_templates().values()),
        Settings(stage="rules"),
        lambda: FakeEngine(""),
    )
    (result, *_) = outcome.results
    assert result.bundle is not None
    errors = [p.message for p in validate_resource(result.bundle) if p.severity == "error"]
    assert errors == []
    return result.bundle


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_the_bundle_carries_the_codes_beside_the_texts() -> None:
    bundle = _bundle(
        "CT CHEST\nFINDINGS: Segmental pulmonary embolism in the right lower lobe. 9 mm solid "
        "nodule in the right upper lobe.\nIMPRESSION: Acute pulmonary embolism. Solid nodule, "
        "Lung-RADS 4A. Recommend low-dose chest CT in 3 months.",
        "CT",
    )
    (flag,) = _of(bundle, "Flag")
    assert flag["code"]["text"] == "Critical result: Acute pulmonary embolism"
    assert flag["code"]["coding"] == [
        {"system": SCT, "code": "59282003", "display": "Pulmonary embolism (disorder)"}
    ]
    (request,) = _of(bundle, "ServiceRequest")
    assert request["code"]["text"] == "CT"  # the action as written; its clause names the chest
    assert [(c["system"], c["code"]) for c in request["code"]["coding"]] == [
        (term.DCM, "CT"),
        (term.LOINC, "24627-2"),
    ]
    (rads,) = [o for o in _of(bundle, "Observation") if o["code"]["text"] == "Lung-RADS category"]
    assert rads["valueCodeableConcept"] == {"text": "4A"} and "coding" not in rads["code"]


def test_a_mammogram_s_bi_rads_and_density_are_coded() -> None:
    bundle = _bundle(
        "MAMMOGRAPHY BILATERAL\nBreast composition ACR b. No suspicious mass, calcification "
        "or architectural distortion.\nIMPRESSION: BI-RADS 1: negative.",
        "MG",
    )
    # the breast template states both: one Observation each (issue 20 item 5), which takes the
    # insights' verified codings (`mappings.insights.stated_rads`)
    observations = {o["code"]["text"]: o for o in _of(bundle, "Observation")}
    assert "BI-RADS assessment category" not in observations
    assert "BI-RADS breast density category" not in observations
    birads = observations["BI-RADS final assessment category"]["valueCodeableConcept"]
    assert birads["text"].startswith("BI-RADS 1")
    assert [c["code"] for c in birads["coding"]] == ["397140005"]
    density = observations["Breast density (ACR composition)"]
    assert density["valueCodeableConcept"]["text"].startswith("b")
    assert [c["code"] for c in density["valueCodeableConcept"]["coding"]] == ["129717001"]
    assert [c["code"] for c in density["code"]["coding"]] == ["129715009"]


def test_a_normal_study_gets_its_conclusion_code() -> None:
    normal = _bundle("CT HEAD WITHOUT CONTRAST\nIMPRESSION: Normal CT of the head.", "CT")
    (report,) = _of(normal, "DiagnosticReport")
    assert report["conclusionCode"] == [
        {
            "coding": [
                {"system": SCT, "code": "281900007", "display": "No abnormality detected (finding)"}
            ]
        }
    ]
    bleed = _bundle(
        "CT HEAD WITHOUT CONTRAST\nFINDINGS: Acute subdural haematoma over the left convexity.\n"
        "IMPRESSION: Otherwise normal CT of the head.",
        "CT",
    )
    (report,) = _of(bleed, "DiagnosticReport")
    assert "conclusionCode" not in report
    # the chest templates have no global normal statement: "No active disease" says nothing
    # about each finding (Open-i conventions), so no conclusion code either
    chest = _bundle("CHEST PA AND LATERAL\nIMPRESSION: No active disease.", "CR")
    assert all("conclusionCode" not in r for r in _of(chest, "DiagnosticReport"))


def test_the_critical_findings_doc_lists_each_finding_s_code() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "critical-findings.md").read_text("utf-8")
    table = doc.split("## Concept codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| ([a-z_]+) \| ([^|]+) \|", table, re.M))
    rows.pop("id")  # the header
    findings = load_critical_list()
    assert list(rows) == [f.id for f in findings]
    for finding in findings:
        assert rows[finding.id].strip() == (finding.code.code if finding.code else "text only")
