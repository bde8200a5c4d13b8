"""The cardiac_mri template: loading, codes, routing, stage-1 accuracy, one real-model run.

The labelled set (tests/fixtures/labelled/cardiac_mri.jsonl) was written by hand before the
template's synonyms and patterns; the floors below sit slightly under what stage 1 measured.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mappings import terminology
from mappings.report import FindingStatus, PatientIdentifier
from mappings.template import Template, VariableType, load_template
from tests.labelled import (
    as_report,
    assert_codes_verified,
    assert_gold_complete,
    assert_other_sets_do_not_route_here,
    assert_routes_here_only,
    class_accuracies,
    coded_observations,
    print_accuracies,
    read_rows,
    rule_extractions,
    rule_values,
    template_codes,
    template_path,
)

TEMPLATE_ID = "cardiac_mri"
NUMBER_TOLERANCE = 0.05
# Per-variable class-accuracy floors (measured values minus a small margin) and the overall floor.
# Measured on the 20 reports (ConText assertion): every variable 1.00 except lv_mass, lge and
# myocardial_oedema 0.95; overall 0.991. One report is 0.05.
FLOORS: dict[str, float] = {
    "lvef": 0.95, "lvedv": 0.95, "lvedv_index": 0.95, "lvesv": 0.95, "lv_mass": 0.9,
    "lv_mass_index": 0.95, "rvef": 0.95, "rvedv": 0.95, "native_t1": 0.95, "ecv": 0.95,
    "t2": 0.95, "lge": 0.9, "pericardial_effusion": 0.9, "myocardial_oedema": 0.9,
    "lge_pattern": 0.95, "diagnosis": 0.95,
}  # fmt: skip
OVERALL_FLOOR = 0.97


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(template_path(TEMPLATE_ID))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return read_rows(TEMPLATE_ID)


def test_template_loads_with_verified_codes(template: Template) -> None:
    assert template.languages == ("de", "en")
    kinds = {v.id: v.type for v in template.variables}
    assert kinds["lvef"] is VariableType.NUMBER
    assert kinds["diagnosis"] is VariableType.ENUM
    assert {o.id for o in template.variable("diagnosis").options} == {
        "normal", "hcm", "cardiac_amyloidosis", "cardiac_sarcoidosis", "myocarditis",
        "ischaemic_cm", "dilated_cm", "other",
    }  # fmt: skip
    units = {v.unit.code for v in template.variables if v.unit is not None}
    assert units == {"%", "mL", "mL/m2", "g", "g/m2", "ms"}  # UCUM codes
    assert_codes_verified(template_codes(template))
    for variable in template.variables:
        if variable.code is None:
            assert variable.id in terminology.UNCODED_CONCEPTS, variable.id
        for option in variable.options:
            assert option.code is not None or option.uncoded_reason, option.id
    amyloid = template.variable("diagnosis").option("cardiac_amyloidosis")
    assert amyloid.code is None  # 128404006 is Right heart failure, never cardiac amyloidosis


def test_labelled_set_covers_every_variable(template: Template, rows: list[dict[str, Any]]) -> None:
    assert len(rows) >= 14
    assert_gold_complete(template, rows)


def test_every_labelled_report_routes_here_only(rows: list[dict[str, Any]]) -> None:
    assert_routes_here_only(TEMPLATE_ID, rows)


def test_other_templates_reports_do_not_route_here(template: Template) -> None:
    assert_other_sets_do_not_route_here(template)


def test_stage1_accuracy_on_the_labelled_set(
    template: Template, rows: list[dict[str, Any]]
) -> None:
    extractions = rule_extractions(template, rows)
    per_variable, overall = class_accuracies(template, rows, extractions, NUMBER_TOLERANCE)
    print_accuracies(per_variable, overall, 22)
    assert set(FLOORS) == set(per_variable)
    for variable_id, floor in FLOORS.items():
        assert per_variable[variable_id] >= floor, variable_id
    assert overall >= OVERALL_FLOOR


def test_decimal_comma_and_negation(template: Template) -> None:
    text = (
        "Kardio-MRT\nBefund:\nLV-EF: 55,5 %, EDV 180 ml. Natives T1 1050 ms, ECV 28 %.\n"
        "Kein Hinweis auf Late Enhancement.\nBeurteilung:\nV.a. kardiale Amyloidose."
    )
    values = rule_values(template, text, "de")
    assert values["lvef"].value == pytest.approx(55.5)
    assert values["lvef"].unit == "%"
    assert values["lvedv"].value == pytest.approx(180)
    assert values["native_t1"].value == pytest.approx(1050)
    assert values["ecv"].value == pytest.approx(28)
    assert values["lge"].status is FindingStatus.ABSENT
    assert values["diagnosis"].value == "cardiac_amyloidosis"
    assert values["rvef"].status is FindingStatus.NOT_MENTIONED


@pytest.mark.llm
def test_hybrid_extraction_with_the_default_model_gives_a_valid_coded_bundle(
    template: Template, rows: list[dict[str, Any]]
) -> None:
    from adapter.settings import Settings
    from conformance.validate import validate_resource
    from mappings.fhir_out import build_bundle
    from workers.engine import get_engine
    from workers.stages import run_stage

    row = next(r for r in rows if r["id"] == "cmr-09")  # English, short, LVEF/RVEF coded
    report = as_report(row).model_copy(
        update={
            "sending_facility": "CARDIO",
            "accession_number": "ACC-CMR-09",
            "patient_identifiers": (PatientIdentifier(value="MRN-CMR-09", assigner="CARDIO"),),
            "observation_time": datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        }
    )
    settings = Settings(stage="hybrid")
    extraction = run_stage(report, template, settings, lambda: get_engine(settings))
    values = {v.variable_id: v for v in extraction.values}
    assert values["lvef"].value == pytest.approx(60)
    assert values["lvef"].unit == "%"
    bundle = build_bundle(report, extraction, template)
    assert validate_resource(bundle) == []
    coded = coded_observations(bundle)
    assert coded, "no coded Observation"
    lvef = next(o for o in coded if o["code"]["coding"][0]["code"] == "8811-2")
    assert lvef["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert lvef["valueQuantity"]["code"] == "%"
