"""Shared test helpers: the hand-labelled sets (tests/fixtures/labelled/*.jsonl), reports built
from their rows, stage-1 scoring with the project's metric core (`conformance.labels` and
`conformance.metrics`, so the numbers mean what `radbridge eval` means), routing checks across
the sets, and the model stand-ins of the pipeline unit tests."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from conformance.labels import predicted_labels, variable_specs
from conformance.metrics import variable_metrics
from mappings import terminology
from mappings.report import Extraction, FindingValue, PatientIdentifier, Report
from mappings.routing import route
from mappings.sections import find_sections
from mappings.template import (
    CodeRef,
    Template,
    VariableType,
    load_builtin_templates,
    load_template,
)
from mappings.terminology_tables import code_problems
from workers.rules_stage import extract_rules

Row = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "mappings" / "templates"
LABELLED = ROOT / "tests" / "fixtures" / "labelled"
PATIENT_SYSTEM = "urn:radbridge:test:patient"
# The modality each template's reports come with (routing checks across the labelled sets).
MODALITY_OF_TEMPLATE = {
    "chest_findings": "CR", "chest_ct": "CT", "cardiac_mri": "MR", "brain_mri_memory": "MR",
    "brain_mri_oncology": "MR",
}  # fmt: skip


def modality_of(row: Row) -> str | None:
    """The modality a row's report comes with: its own `modality` (issue 21's sets carry one),
    else its template's (`MODALITY_OF_TEMPLATE`)."""
    return row.get("modality") or MODALITY_OF_TEMPLATE.get(row["template"])


# --- labelled sets and reports ---------------------------------------------------------------


def template_path(template_id: str) -> Path:
    """The built-in template's YAML file."""
    return TEMPLATES / f"{template_id}.yaml"


def read_rows(template_id: str) -> list[Row]:
    """The rows of one template's labelled set."""
    path = LABELLED / f"{template_id}.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def other_rows(*own: str) -> Iterator[tuple[str, Row]]:
    """(file name, row) for every labelled row outside the sets of the `own` template ids, from
    the sets of built-in templates only: routing.jsonl is no template's set, and a set written
    before its template ships (issue 21's head_ct, abdomen, msk_radiograph, breast, thyroid_us)
    joins these cross-template checks when its template does."""
    builtin = set(load_builtin_templates())
    for path in sorted(LABELLED.glob("*.jsonl")):
        if path.stem not in own and path.stem in builtin:
            for row in read_rows(path.stem):
                yield path.name, row


def as_report(row: Row, modality: str | None = "MR") -> Report:
    """A labelled row as the pipeline sees a report: sections found, no procedure code, the
    patient and time where the row gives them."""
    patient = row.get("patient")
    return Report(
        source_format="fhir",
        report_id=row["id"],
        text=row["text"],
        language=row.get("language"),
        sections=find_sections(row["text"]),
        modality=modality,
        patient_identifiers=(PatientIdentifier(value=patient, system=PATIENT_SYSTEM),)
        if patient
        else (),
        observation_time=datetime.fromisoformat(row["time"]) if row.get("time") else None,
    )


def rule_values(template: Template, text: str, language: str) -> dict[str, FindingValue]:
    """Stage 1 on an inline MR report text, by variable id."""
    report = as_report({"id": "inline", "text": text, "language": language})
    return {v.variable_id: v for v in extract_rules(report, template).values}


# --- template checks -------------------------------------------------------------------------


def template_codes(template: Template) -> list[CodeRef]:
    """Every code the template uses: procedure codes, variable codes, option codes."""
    codes: list[CodeRef] = list(template.applies_to.procedure_codes)
    for variable in template.variables:
        if variable.code is not None:
            codes.append(variable.code)
        codes += [option.code for option in variable.options if option.code is not None]
    return codes


def assert_codes_verified(codes: Sequence[CodeRef]) -> None:
    """Each code is in the installed SNOMED CT / LOINC table with its display, or cites where it
    was verified (`mappings.terminology_tables`), never DO_NOT_USE."""
    for code in codes:
        assert code_problems(code.system, code.code, code.display, code.source) == [], code
        assert (code.system, code.code) not in terminology.DO_NOT_USE


def assert_gold_complete(template: Template, rows: Sequence[Row]) -> None:
    """Every row belongs to the template, labels each variable, and uses only real options."""
    ids = [v.id for v in template.variables]
    for row in rows:
        assert row["template"] == template.id
        assert sorted(row["gold"]) == sorted(ids), row["id"]
        for variable_id, gold in row["gold"].items():
            variable = template.variable(variable_id)
            if variable.type is VariableType.ENUM and gold != "not_mentioned":
                variable.option(gold)


def assert_routes_here_only(template_id: str, rows: Sequence[Row]) -> dict[str, Template]:
    """Among the built-in templates each row (MR, or no modality) routes to this one; returns
    the built-in templates."""
    builtin = load_builtin_templates()
    assert builtin[template_id] == load_template(template_path(template_id))
    templates = list(builtin.values())
    for row in rows:
        assert [t.id for t in route(as_report(row), templates)] == [template_id], row["id"]
        assert template_id in [t.id for t in route(as_report(row, modality=None), templates)]
    return builtin


def assert_other_sets_do_not_route_here(template: Template) -> None:
    """No other labelled row routes here, with its exam's modality or with none."""
    for name, row in other_rows(template.id):
        for modality in (modality_of(row), None):
            assert route(as_report(row, modality), [template]) == [], (name, row["id"])


# --- stage-1 scoring -------------------------------------------------------------------------


def rule_extractions(
    template: Template, rows: Sequence[Row], modality: str | None = "MR"
) -> list[Extraction]:
    """Stage 1 (rules only) on every row."""
    return [extract_rules(as_report(row, modality), template) for row in rows]


def class_accuracies(
    template: Template,
    rows: Sequence[Row],
    extractions: Sequence[Extraction],
    tolerance: float = 0.0,
) -> tuple[dict[str, float], float]:
    """Per-variable class accuracy and the overall share of right labels (every report, every
    variable), with `predicted_labels` and `variable_metrics`; numbers within `tolerance`."""
    predicted = []
    for extraction in extractions:
        for variable in template.variables:
            assert extraction.value_of(variable.id) is not None, variable.id
        predicted.append(predicted_labels(extraction, template))
    per_variable: dict[str, float] = {}
    correct = 0
    for spec in variable_specs(template, tolerance):
        gold = [row["gold"][spec.id] for row in rows]
        metrics = variable_metrics(spec, gold, [labels[spec.id] for labels in predicted])
        assert metrics.class_accuracy is not None
        per_variable[spec.id] = metrics.class_accuracy
        correct += round(metrics.class_accuracy * len(rows))
    return per_variable, correct / (len(rows) * len(per_variable))


def print_accuracies(
    per_variable: dict[str, float], overall: float, width: int, prefix: str = ""
) -> None:
    """One line per variable and one for the overall accuracy (seen with `pytest -s`)."""
    for variable_id, accuracy in per_variable.items():
        print(f"{prefix}{variable_id:{width}s} {accuracy:.3f}")
    print(f"{prefix}{'overall':{width}s} {overall:.3f}")


# --- FHIR bundles ----------------------------------------------------------------------------


def bundle_observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The Observation resources of a Bundle."""
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]


def coded_observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The Observations of a Bundle whose code has a coding."""
    return [o for o in bundle_observations(bundle) if o["code"].get("coding")]
