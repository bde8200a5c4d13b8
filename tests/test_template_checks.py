"""Templates without code (issue 23 item 3): a template's codes are checked against the
terminology tables radbridge installs (SNOMED CT GPS, LOINC document codes) or a cited source in
the YAML, never a Python list; a location may stay uncoded with a reason; UCUM units and DICOM
modalities are checked; every problem of a file is reported at once, by key name;
RADBRIDGE_TEMPLATES_DIR adds templates to the built-in ones and never replaces one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.validate import validate_resource
from mappings import terminology
from mappings.dicom import ACQUISITION_MODALITIES, modality_problem
from mappings.errors import TemplateError, TemplateProblems
from mappings.fhir_out import build_bundle
from mappings.report import Report
from mappings.template import get_template, load_templates, parse_template
from mappings.terminology_tables import is_citation, loinc_documents, snomed_gps
from mappings.ucum import ucum_problem
from tests.golden import expected_extraction

CLI = [sys.executable, "-c", "from app.cli import main; main()"]
PE = "59282003"  # Pulmonary embolism (disorder): in the SNOMED CT GPS, not in terminology.py


def template_yaml(
    *,
    template_id: str = "pe_ct",
    code: str = f'{{system: "http://snomed.info/sct", code: "{PE}", display: "Pulmonary embolism (disorder)", source: "SNOMED CT GPS"}}',
    unit: str = "mm",
    modality: str = "CT",
    location: str = 'code: {system: "http://snomed.info/sct", code: "3341006", display: "Right lung structure (body structure)", source: "HL7/fhir-mCODE-ig input/fsh/EX_GenomeX.fsh@543477b5"}',
) -> str:
    return f"""
id: {template_id}
version: "1.0.0"
title: CT pulmonary angiography
languages: [en]
applies_to:
  modalities: [{modality}]
  body_parts: [CHEST]
locations:
  - id: right_lung
    label: right lung
    {location}
    synonyms: {{en: [right lung]}}
variables:
  - id: embolism
    label: Pulmonary embolism
    type: presence
    definition: A filling defect in a pulmonary artery.
    code: {code}
    synonyms: {{en: [pulmonary embolism, embolus]}}
    locations: [right_lung]
  - id: clot_size
    label: Largest clot
    type: number
    definition: The largest clot diameter as measured.
    uncoded_reason: "no LOINC code for a clot diameter verified"
    unit: {{code: "{unit}", display: "{unit}"}}
    synonyms: {{en: [clot]}}
"""


def test_a_gps_code_not_in_the_python_table_is_accepted() -> None:
    assert terminology.lookup(terminology.SNOMED, PE) is None
    assert snomed_gps()[PE] == "Pulmonary embolism (disorder)"
    template = parse_template(template_yaml(), "pe.yaml")
    assert template.variable("embolism").code is not None


def test_tables_are_installed_from_the_registry_packages() -> None:
    assert len(snomed_gps()) == 26158 and len(loinc_documents()) == 6401
    assert loinc_documents()["24627-2"] == "Chest CT"


def test_a_code_outside_the_tables_needs_a_cited_source() -> None:
    uncited = '{system: "http://snomed.info/sct", code: "1217294009", display: "Ground glass opacity", source: "I checked it"}'
    with pytest.raises(TemplateError, match="needs a `source` citing"):
        parse_template(template_yaml(code=uncited), "ggo.yaml")
    cited = uncited.replace(
        "I checked it",
        "HL7LT/ig-lt-lung input/fsh/terminology/pulmonary-nodule-type-vs-lt-lung.fsh@043a8a1f",
    )
    assert parse_template(template_yaml(code=cited), "ggo.yaml").id == "pe_ct"
    assert is_citation("https://hl7.org/fhir/R4/valueset-c80-doc-typecodes.html")
    assert not is_citation("shared/terminology/verified-codes.tsv")


def test_a_table_code_needs_the_table_display_and_do_not_use_is_refused() -> None:
    wrong = f'{{system: "http://snomed.info/sct", code: "{PE}", display: "PE", source: "x"}}'
    with pytest.raises(TemplateError, match="'Pulmonary embolism \\(disorder\\)'"):
        parse_template(template_yaml(code=wrong), "pe.yaml")
    banned = '{system: "http://snomed.info/sct", code: "416940007", display: "x", source: "https://example.org/a"}'
    with pytest.raises(TemplateError, match="do-not-use"):
        parse_template(template_yaml(code=banned), "pe.yaml")


def test_every_problem_is_reported_at_once_by_key_name() -> None:
    bad = {
        "unit": "millimetre",
        "modality": "ULTRASOUND",
        "code": '{system: "http://snomed.info/sct", code: "99999999", display: "x", source: "me"}',
    }
    with pytest.raises(TemplateProblems) as caught:  # structure: every pydantic error, by key
        parse_template(template_yaml(**bad, location="synonyms_only: true"), "bad.yaml")
    assert [p.field for p in caught.value.problems] == ["locations.right_lung.synonyms_only"]
    with pytest.raises(TemplateProblems) as caught:  # meaning: every problem, by key
        parse_template(template_yaml(**bad, location=""), "bad.yaml")
    fields = {p.field for p in caught.value.problems}
    assert fields == {
        "locations.right_lung.code",
        "variables.embolism.code",
        "variables.clot_size.unit.code",
        "applies_to.modalities",
    }, caught.value.problems
    message = str(caught.value)
    assert "'millimetre' is not a valid UCUM code" in message
    assert "'ULTRASOUND' is not a DICOM modality code" in message and "did you mean US?" in message
    assert all(p.source == "bad.yaml" for p in caught.value.problems)


def test_an_uncoded_location_says_why_and_is_emitted_as_text() -> None:
    text = template_yaml(location='uncoded_reason: "no verified code for this site"')
    template = parse_template(text, "pe.yaml")
    report = Report(
        source_format="fhir", report_id="R1", text="Pulmonary embolism in the right lung."
    )
    values = {v.id: {"status": "not_mentioned"} for v in template.variables}
    values["embolism"] = {
        "status": "present",
        "quote": "Pulmonary embolism",
        "locations": ["right_lung"],
    }
    bundle = build_bundle(report, expected_extraction(report, template, values), template)
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert [o["bodySite"] for o in observations] == [{"text": "right lung"}]
    assert observations[0]["code"]["coding"][0]["code"] == PE  # a GPS code, emitted as cited
    assert not [p for p in validate_resource(bundle, templates=[template]) if p.severity == "error"]


def test_ucum_and_dicom_tables() -> None:
    for good in ("mm", "mL", "%", "mL/m2", "g/m2", "ms", "1", "10*3/uL", "kg/m2"):
        assert ucum_problem(good) is None, good
    for bad in ("millimetre", "mls", "", " mm", "mL per m2"):
        assert ucum_problem(bad) is not None, bad
    assert modality_problem("CT") is None and modality_problem("MRI") is None
    assert "upper case" in (modality_problem("ct") or "")
    assert "routing does not match" in (modality_problem("OCT") or "")


def test_the_dicom_table_is_cid_29_as_pydicom_ships_it() -> None:
    """pydicom (registry package) carries DICOM PS3.16; CID 29 is Acquisition Modality."""
    from pydicom.sr._cid_dict import cid_concepts, name_for_cid
    from pydicom.sr._concepts_dict import concepts

    assert name_for_cid[29] == "AcquisitionModality"
    codes = {code for name in cid_concepts[29]["DCM"] for code in concepts["DCM"][name]}
    assert codes == ACQUISITION_MODALITIES


def test_templates_dir_adds_templates_and_refuses_a_builtin_id(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "pe.yaml").write_text(template_yaml(), "utf-8")
    templates = load_templates(folder)
    assert "pe_ct" in templates and "chest_findings" in templates
    assert get_template("pe_ct", folder).title == "CT pulmonary angiography"
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "a.yaml").write_text(template_yaml(template_id="chest_ct"), "utf-8")
    (clash / "b.yaml").write_text(template_yaml(template_id="twin"), "utf-8")
    (clash / "c.yml").write_text(template_yaml(template_id="twin"), "utf-8")
    with pytest.raises(TemplateProblems) as caught:
        load_templates(clash)
    problems = [(Path(p.source).name, p.problem) for p in caught.value.problems]
    assert ("a.yaml", "template id 'chest_ct' is a built-in template's id") in problems
    assert any(
        name == "c.yml" and "duplicate template id 'twin'" in text for name, text in problems
    )


def test_templates_check_cli_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(template_yaml(unit="millimetre", modality="ULTRASOUND"), "utf-8")
    builtin_id = tmp_path / "clash.yaml"
    builtin_id.write_text(template_yaml(template_id="chest_findings"), "utf-8")
    done = subprocess.run(
        [*CLI, "templates", "check", str(bad), str(builtin_id)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        f"{bad}\tvariables.clot_size.unit.code\t'millimetre' is not a valid UCUM code"
        in "\n".join(lines)
    )
    assert any(line.startswith(f"{bad}\tapplies_to.modalities\t'ULTRASOUND'") for line in lines)
    assert any(line.startswith(f"{builtin_id}\tid\t") and "built-in" in line for line in lines)
    assert "3 problem(s)" in done.stderr


def test_validate_rejects_an_invalid_ucum_code() -> None:
    template = get_template("chest_findings")
    report = Report(source_format="fhir", report_id="R2", text="Small pleural effusion.")
    values = {v.id: {"status": "not_mentioned"} for v in template.variables}
    values["pleural_effusion"] = {"status": "present", "quote": "Small pleural effusion"}
    bundle = build_bundle(report, expected_extraction(report, template, values), template)
    observation = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    del observation["valueCodeableConcept"]
    quantity = {"value": 5, "unit": "mm", "system": terminology.UCUM, "code": "mm"}
    observation["valueQuantity"] = quantity
    assert not [p for p in validate_resource(bundle) if "UCUM" in p.message]
    quantity["code"] = "millimetre"
    problems = [p for p in validate_resource(bundle) if p.severity == "error"]
    assert [p.fhirpath for p in problems if "UCUM" in p.message] == [
        "Bundle.entry[3].resource.valueQuantity.code"
    ], problems


def test_extract_eval_and_validate_use_the_templates_dir(tmp_path: Path) -> None:
    """A hospital's own template, in RADBRIDGE_TEMPLATES_DIR, runs in extract and eval and its
    cited codes pass validate, without a line of Python (real processes, rules stage)."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "pe.yaml").write_text(template_yaml(), "utf-8")
    reports = tmp_path / "reports.csv"
    reports.write_text('id,text\nr1,"Pulmonary embolism in the right lung."\n', "utf-8")
    labelled = tmp_path / "set.jsonl"
    record = {
        "id": "pe-1",
        "text": "No pulmonary embolism.",
        "language": "en",
        "template": "pe_ct",
        "gold": {"embolism": "absent", "clot_size": "not_mentioned"},
    }
    labelled.write_text(json.dumps(record) + "\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env["RADBRIDGE_TEMPLATES_DIR"] = str(folder)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    done = cli("extract", str(reports), "--out", str(tmp_path / "out"), "--template", "pe_ct")
    assert done.returncode == 0, done.stderr
    (bundle_file,) = (tmp_path / "out").glob("*.json")
    codes = [
        coding["code"]
        for entry in json.loads(bundle_file.read_text("utf-8"))["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        for coding in entry["resource"]["code"].get("coding", [])
    ]
    assert codes == [PE]
    done = cli("validate", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("eval", str(labelled), "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text("utf-8"))
    assert [task["task"] for task in metrics["tasks"]] == ["pe_ct"]
    del env["RADBRIDGE_TEMPLATES_DIR"]
    assert (
        cli(
            "extract", str(reports), "--out", str(tmp_path / "o2"), "--template", "pe_ct"
        ).returncode
        == 2
    )
