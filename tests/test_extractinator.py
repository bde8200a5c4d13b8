"""llm_extractinator task import (`mappings.extractinator`) and the DRAGON samples
(`conformance.dragon`), on the real task files and samples in ../shared (read in place: the
DRAGON samples are CC BY-NC-SA and are never copied into the repository)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from conformance.datasets import load_dragon
from conformance.dragon import DragonSet, load_dragon_set, sample_text
from conformance.errors import DatasetError
from conformance.eval_labelled import evaluate_dataset
from mappings.errors import TemplateError
from mappings.extractinator import (
    NER_REASON,
    ORIGIN,
    UNCODED_REASON,
    ImportedTask,
    UnsafeParserFormat,
    UnsupportedTask,
    load_task,
    safe_id,
    template_from_task,
    unit_for,
)
from mappings.template import VariableType, check_template_set, load_template, parse_template
from mappings.template_output import output_json_schema

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
UNSUPPORTED = {
    "Task025_anonymisation_ner",
    "Task026_medical_terminology_ner",
    "Task027_prostate_biopsy_ner",
    "Task028_skin_pathology_ner",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def tasks_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "llm-extractinator-tasks"


@pytest.fixture(scope="module")
def samples_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "dragon-samples"


@pytest.fixture(scope="module")
def dragon_tasks(tasks_dir: Path) -> dict[str, ImportedTask | UnsupportedTask]:
    results: dict[str, ImportedTask | UnsupportedTask] = {}
    for path in sorted((tasks_dir / "dragon-2024").glob("Task*.json")):
        try:
            results[path.stem] = load_task(path)
        except UnsupportedTask as exc:
            results[path.stem] = exc
    return results


@pytest.fixture(scope="module")
def dragon_set(samples_dir: Path) -> DragonSet:
    return load_dragon_set(samples_dir)


def _task(tasks: dict[str, ImportedTask | UnsupportedTask], name: str) -> ImportedTask:
    task = tasks[name]
    assert isinstance(task, ImportedTask), task
    return task


# --- task import ---------------------------------------------------------------------------


def test_all_28_dragon_tasks_import_or_are_unsupported_for_a_stated_reason(
    dragon_tasks: dict[str, ImportedTask | UnsupportedTask],
) -> None:
    assert len(dragon_tasks) == 28
    unsupported = {k for k, v in dragon_tasks.items() if isinstance(v, UnsupportedTask)}
    assert unsupported == UNSUPPORTED
    for name in UNSUPPORTED:
        error = dragon_tasks[name]
        assert isinstance(error, TemplateError)
        assert NER_REASON in str(error) and error.field == "Type"
    imported = [(k, v) for k, v in dragon_tasks.items() if isinstance(v, ImportedTask)]
    assert len(imported) == 24
    assert check_template_set([(k, v.template) for k, v in imported]) == []
    for name, task in imported:
        template = task.template
        assert template.id == name.lower()
        assert template.origin == ORIGIN and template.languages == ("nl", "en")
        # the YAML a researcher gets loads through every check of mappings.template
        assert parse_template(task.yaml, name) == template
        assert output_json_schema(template)["required"] == [v.id for v in template.variables]
        for variable in template.variables:
            assert variable.code is None and variable.uncoded_reason == UNCODED_REASON
            assert "reasoning" not in variable.id
            assert len(variable.definition) >= 10
            for option in variable.options:
                assert option.code is None and option.uncoded_reason == UNCODED_REASON
        assert [f.variable_id for f in task.fields] == [v.id for v in template.variables]


def test_binary_classification_is_a_presence_variable(
    dragon_tasks: dict[str, ImportedTask | UnsupportedTask],
) -> None:
    (variable,) = _task(dragon_tasks, "Task002_nodule_clf").template.variables
    assert variable.type is VariableType.PRESENCE
    assert variable.id == "pulmonary_nodule_presence"
    assert variable.label == "Pulmonary nodule presence"
    assert variable.synonyms == {"en": ("nodule",)}  # from "True if a nodule is present"
    assert "True = present, False = absent or not mentioned" in variable.definition


def test_multi_class_and_ordinal_classification(
    dragon_tasks: dict[str, ImportedTask | UnsupportedTask],
) -> None:
    t18 = _task(dragon_tasks, "Task018_osteoarthritis_clf")
    left, right = t18.template.variables
    assert (left.id, right.id) == ("left", "right")
    for variable in (left, right):
        # 0..4 plus 'p' (prosthesis) is not one scale: an enum; 'n' (not applicable) is the
        # not_mentioned state, not an option
        assert variable.type is VariableType.ENUM
        assert [o.id for o in variable.options] == [
            "value_0",
            "value_1",
            "value_2",
            "value_3",
            "value_4",
            "prosthesis",
        ]
        assert variable.option("value_4").definition is not None
        assert "severe coxarthrosis" in variable.option("value_4").definition  # type: ignore[operator]
    assert t18.field_named("left").literals["n"] is None
    assert t18.field_named("left").literals["p"] == "prosthesis"
    (t10,) = _task(dragon_tasks, "Task010_prostate_radiology_clf").template.variables
    assert t10.type is VariableType.ORDINAL and t10.scale is not None
    assert (t10.scale.min, t10.scale.max) == (0, 4)
    (t9,) = _task(dragon_tasks, "Task009_pdac_diagnosis_clf").template.variables
    assert [(o.id, o.label) for o in t9.options] == [
        ("pdac", "PDAC"),
        ("other_pancreatic_disease", "Other pancreatic disease"),
        ("normal_pancreas", "Normal pancreas"),
    ]
    attenuation, location = _task(dragon_tasks, "Task017_pdac_attributes_clf").template.variables
    assert [o.id for o in attenuation.options] == ["iso", "hyper", "hypo"]
    assert [o.id for o in location.options] == ["head", "body", "tail"]


def test_regression_is_a_number_with_the_stated_unit(
    dragon_tasks: dict[str, ImportedTask | UnsupportedTask],
) -> None:
    units = {}
    for name in (
        "Task019_prostate_volume_reg",
        "Task020_psa_reg",
        "Task021_psad_reg",
        "Task022_pdac_size_reg",
        "Task023_nodule_diameter_reg",
    ):
        (variable,) = _task(dragon_tasks, name).template.variables
        assert variable.type is VariableType.NUMBER and variable.unit is not None
        units[name] = variable.unit.code
    assert units == {
        "Task019_prostate_volume_reg": "cm3",
        "Task020_psa_reg": "1",  # the task states no unit
        "Task021_psad_reg": "1",
        "Task022_pdac_size_reg": "mm",
        "Task023_nodule_diameter_reg": "mm",
    }
    t24 = _task(dragon_tasks, "Task024_recist_lesion_size_reg")
    assert [v.id for v in t24.template.variables] == [f"lesion_{i}" for i in range(1, 6)]
    assert all(f.zero_is_not_mentioned for f in t24.fields)
    # "set to 0" is replaced by not_mentioned: the model is never told to invent a default
    assert all("set to 0" not in v.definition for v in t24.template.variables)


def test_multi_label_gives_one_presence_variable_per_label(
    dragon_tasks: dict[str, ImportedTask | UnsupportedTask],
) -> None:
    t15 = _task(dragon_tasks, "Task015_colon_pathology_clf").template
    assert [v.id for v in t15.variables] == [
        "biopsy",
        "hyperplastic_polyps",
        "low_grade_dysplasia",
        "high_grade_dysplasia",
        "cancer",
        "serrated_polyps",
        "non_informative",
    ]
    assert {v.type for v in t15.variables} == {VariableType.PRESENCE}
    assert t15.variable("hyperplastic_polyps").synonyms == {"en": ("hyperplastic polyps",)}
    assert t15.variable("cancer").label == "Colon Histopathology Diagnosis: Cancer"


def test_python_parser_formats_are_refused(tasks_dir: Path) -> None:
    for name in ("Task998_example2.json", "Task999_example.json"):
        with pytest.raises(UnsafeParserFormat) as caught:
            load_task(tasks_dir / "current" / name)
        assert caught.value.field == "Parser_Format"
        assert "never executes task code" in caught.value.problem
        assert ".py" in caught.value.problem


def test_current_format_json_parser_format_maps_like_the_older_one() -> None:
    task = {
        "Description": "Extract findings from a prostate MRI report.",
        "Data_Path": "data.json",
        "Input_Field": "text",
        "Parser_Format": {
            "reasoning": {"type": "str", "description": "why"},
            "lesion_present": {"type": "bool", "description": "True if a lesion is present."},
            "pirads": {"type": "int", "description": "PI-RADS score", "literals": [1, 2, 3, 4, 5]},
            "volume": {"type": "float", "description": "Prostate volume in mL.", "optional": True},
            "zone": {
                "type": "str",
                "description": "Zone",
                "literals": ["peripheral", "transition"],
            },
        },
    }
    template = template_from_task(task, "tasks/Task100_prostate.json", languages=("en", "de"))
    assert template.id == "task100_prostate" and template.languages == ("en", "de")
    assert template.title == "Extract findings from a prostate MRI report"
    kinds = {v.id: v.type for v in template.variables}
    assert kinds == {
        "lesion_present": VariableType.PRESENCE,
        "pirads": VariableType.ORDINAL,
        "volume": VariableType.NUMBER,
        "zone": VariableType.ENUM,
    }
    assert template.variable("volume").unit is not None
    assert template.variable("volume").unit.code == "mL"  # type: ignore[union-attr]
    # the same Parser_Format given as JSON text
    as_text = dict(task, Parser_Format=json.dumps(task["Parser_Format"]))
    assert template_from_task(as_text, "tasks/Task100_prostate.json", ("en", "de")) == template


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"type": "list", "items": {"type": "str"}}, "a list of values"),
        ({"type": "dict", "properties": {"a": {"type": "int"}}}, "a nested object"),
        ({"type": "str", "description": "free text"}, "free text"),
    ],
)
def test_fields_without_one_typed_value_are_unsupported(spec: dict[str, Any], reason: str) -> None:
    task = {"Description": "d", "Parser_Format": {"ok": {"type": "bool"}, "bad": spec}}
    with pytest.raises(UnsupportedTask) as caught:
        template_from_task(task, "Task101_x.json")
    assert "'bad'" in caught.value.problem and reason in caught.value.problem


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"Description": "d"}, "Parser_Format"),
        ({"Parser_Format": {"x": {"type": "complex"}}}, "Parser_Format.x.type"),
        ({"Parser_Format": {"x": {"type": "int", "regex": "a"}}}, "Parser_Format.x"),
        ({"Parser_Format": {"x": {"type": "str", "literals": ["not mentioned"]}}}, None),
        ({"Parser_Format": {"reasoning": {"type": "str"}}}, "Parser_Format"),
        ({"Parser_Format": "not json"}, "Parser_Format"),
    ],
)
def test_malformed_tasks_name_the_field(task: dict[str, Any], field: str | None) -> None:
    with pytest.raises(TemplateError) as caught:
        template_from_task(task, "Task102_bad.json")
    assert not isinstance(caught.value, UnsupportedTask)
    if field is not None:
        assert caught.value.field == field


def test_helpers() -> None:
    assert safe_id("Lymph node") == "lymph_node"
    assert safe_id("0") == "value_0"
    assert safe_id("(PDAC) diagnosis!") == "pdac_diagnosis"
    assert unit_for("The size in millimeters.") == ("mm", "mm")
    assert unit_for(None, "volume in cubic centimeters (cc)") == ("cm3", "cm³")
    assert unit_for("PSA in ng/mL") == ("ng/mL", "ng/mL")
    assert unit_for("The PSA level.") == ("1", "1")


def test_synonyms_stay_required_for_templates_that_are_not_imported() -> None:
    body = """
id: demo
version: "1"
title: Demo
languages: [nl, en]
variables:
  - id: nodule
    label: Nodule
    type: presence
    definition: A pulmonary nodule is mentioned.
    uncoded_reason: demo
    synonyms: {en: [nodule]}
"""
    with pytest.raises(TemplateError) as caught:
        parse_template(body, "demo.yaml")
    assert caught.value.field == "variables.nodule.synonyms.nl"
    imported = parse_template(body + "origin: llm_extractinator\n", "demo.yaml")
    assert imported.origin == ORIGIN


# --- CLI ---------------------------------------------------------------------------------


def test_templates_import_writes_yaml_that_checks_and_runs(tasks_dir: Path, tmp_path: Path) -> None:
    task = tasks_dir / "dragon-2024" / "Task019_prostate_volume_reg.json"
    out = tmp_path / "t19.yaml"
    result = run("templates", "import", str(task), "--out", str(out), "--language", "en")
    assert result.returncode == 0, result.stderr
    template = load_template(out)
    assert template == load_task(task, ("en",)).template
    assert run("templates", "check", str(out)).returncode == 0
    refused = run("templates", "import", str(tasks_dir / "current" / "Task999_example.json"))
    assert refused.returncode == 2 and "UnsafeParserFormat" in refused.stderr
    ner = run(
        "templates",
        "import",
        str(tasks_dir / "dragon-2024" / "Task026_medical_terminology_ner.json"),
    )
    assert ner.returncode == 2 and "named entity" in ner.stderr.replace("\n", " ")
    # own words, not DRAGON text: a FHIR DiagnosticReport run with the task file and the YAML
    text = "Prostate MRI. The prostate volume is 55 mL. No suspicious lesion."
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr-t19",
        "status": "final",
        "code": {"text": "MRI prostate"},
        "subject": {"identifier": {"value": "MRN-T19"}},
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}
        ],
    }
    source = tmp_path / "in" / "dr.json"
    source.parent.mkdir()
    source.write_text(json.dumps(report), "utf-8")
    for chosen in (str(task), str(out)):
        bundles = tmp_path / f"out-{Path(chosen).suffix[1:]}"
        extracted = run(
            "extract", str(source), "--out", str(bundles), "--template", chosen, "--stage", "rules"
        )
        assert extracted.returncode == 0, extracted.stderr
        bundle = json.loads((bundles / "dr-t19.json").read_text("utf-8"))
        assert bundle["resourceType"] == "Bundle"


# --- DRAGON samples ------------------------------------------------------------------------


def test_dragon_converter_reads_every_sample_pair_with_gold_in_the_contract_form(
    dragon_set: DragonSet, samples_dir: Path
) -> None:
    assert set(dragon_set.unsupported) == UNSUPPORTED
    assert all(NER_REASON in why for why in dragon_set.unsupported.values())
    assert len(dragon_set.templates) == 24
    assert len(dragon_set.records) == 48  # 24 supported tasks x (english, dutch)
    ids = {record["id"] for record in dragon_set.records}
    for path in sorted(samples_dir.glob("*/Task*.md")):
        language = {"english": "en", "dutch": "nl"}[path.parent.name]
        assert (f"{path.stem}-{language}" in ids) is (path.stem not in UNSUPPORTED)
    gold = {record["id"]: record["gold"] for record in dragon_set.records}
    assert gold["Task002_nodule_clf-en"] == {"pulmonary_nodule_presence": "present"}
    assert gold["Task005_recist_timeline_clf-nl"] == {"recist_timeline": "absent"}
    assert gold["Task009_pdac_diagnosis_clf-en"] == {
        "pancreatic_ductal_adenocarcinoma_pdac_diagnosis": "pdac"
    }
    assert gold["Task010_prostate_radiology_clf-en"] == {
        "prostate_radiology_suspicious_lesions_on_prostate_mri": 1
    }
    assert gold["Task018_osteoarthritis_clf-en"] == {"left": "value_4", "right": "prosthesis"}
    assert gold["Task019_prostate_volume_reg-en"] == {"prostate_volume_extraction": 68.0}
    assert gold["Task021_psad_reg-nl"] == {"prostate_specific_antigen_density_extraction": 0.14}
    assert gold["Task024_recist_lesion_size_reg-en"] == {
        "lesion_1": 40.0,
        "lesion_2": 32.0,
        "lesion_3": 14.0,
        "lesion_4": 18.0,
        "lesion_5": 22.0,
    }
    # T15 labels are in DRAGON's (alphabetical) order: a non-informative biopsy
    t15 = gold["Task015_colon_pathology_clf-en"]
    assert {k for k, v in t15.items() if v == "present"} == {"biopsy", "non_informative"}
    for record in dragon_set.records:
        assert record["text"].strip() and "DISCLAIMER" not in record["text"]
        assert record["language"] in ("en", "nl")
    # text_parts tasks: the JSON list joined by line breaks
    t14 = next(r for r in dragon_set.records if r["id"] == "Task014_textual_entailment_clf-en")
    assert len(t14["text"].splitlines()) == 2


def test_sample_text_errors_name_the_file() -> None:
    with pytest.raises(DatasetError) as caught:
        sample_text("# Task\nLabel: True\n", False, "x.md")
    assert str(caught.value).startswith("x.md:")
    block = "Anonymous sample report:\n```\nnot a list\n```\n"
    with pytest.raises(DatasetError):
        sample_text(block, True, "y.md")


def test_eval_loads_dragon_with_its_own_templates_and_runs_the_rules_stage(
    samples_dir: Path,
) -> None:
    dataset = load_dragon(samples_dir)
    assert dataset.format == "dragon" and len(dataset.reports) == 48
    assert dataset.templates is not None and len(dataset.templates) == 24
    assert len(dataset.notes) == 4 and all("unsupported" in note for note in dataset.notes)
    only = load_dragon(samples_dir, "task019_prostate_volume_reg")
    assert [r.id for r in only.reports] == [
        "Task019_prostate_volume_reg-en",
        "Task019_prostate_volume_reg-nl",
    ]
    result = evaluate_dataset(only, ("rules",), Settings(), resamples=10)
    (task,) = result.tasks
    assert task.task == "task019_prostate_volume_reg"
    assert task.stages["rules"].metrics.reports == 2


@pytest.mark.llm
def test_real_model_runs_a_regression_and_a_classification_sample_to_a_valid_bundle(
    samples_dir: Path,
) -> None:
    from conformance.labels import predicted_labels
    from conformance.validate import validate_resource
    from mappings.fhir_out import build_bundle
    from mappings.report import FindingStatus, Report
    from workers.engine_registry import get_engine
    from workers.stages import run_stage

    dragon = load_dragon_set(samples_dir, languages=("english",))
    settings = Settings(stage="llm", n_threads=2, n_ctx=4096, max_tokens=512)
    for record_id in ("Task019_prostate_volume_reg-en", "Task002_nodule_clf-en"):
        record = next(r for r in dragon.records if r["id"] == record_id)
        template = dragon.templates[record["template"]]
        report = Report(
            source_format="fhir",
            report_id=record_id,
            fhir_resource_id=record_id,
            language="en",
            text=record["text"],
        )
        extraction = run_stage(report, template, settings, lambda: get_engine(settings))
        assert [v.variable_id for v in extraction.values] == [v.id for v in template.variables]
        (value,) = extraction.values
        labels = predicted_labels(extraction, template)
        kind = template.variables[0].type
        if kind is VariableType.NUMBER and value.value is not None:
            assert isinstance(value.value, float) and value.unit == "cm3"
        if kind is VariableType.PRESENCE:
            assert labels[value.variable_id] in ("present", "absent", "uncertain", "not_mentioned")
        if value.status is not FindingStatus.NOT_MENTIONED:
            assert value.evidence is not None  # evidence first: a stated value has its quote
        bundle = build_bundle(report, extraction, template)
        assert validate_resource(bundle) == []
        types = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
        assert "DiagnosticReport" in types
        assert ("Observation" in types) is (value.status is not FindingStatus.NOT_MENTIONED)
