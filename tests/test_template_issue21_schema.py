"""Issue 21's template schema additions: finding attributes, normal statements, `aggregate:
highest`, a pattern's `unit` group (cm -> mm); and the labelled sets' `_attributes` on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.datasets import load_jsonl
from conformance.errors import DatasetError
from mappings.errors import TemplateProblems
from mappings.report import FindingStatus
from mappings.template import Template, parse_template
from tests.labelled import as_report
from workers.rules_stage import extract_rules

BASE = """
id: kidney_us
version: "1.0.0"
title: Kidney ultrasound
languages: [en]
applies_to: {modalities: [US], body_parts: [KIDNEY]}
locations:
  - id: kidney
    label: kidney
    code: {system: "http://snomed.info/sct", code: "64033007", display: "Kidney structure (body structure)", source: "SNOMED CT GPS"}
    synonyms: {en: [kidney]}
attributes:
  - id: side
    label: Side
    type: enum
    definition: Laterality as stated.
    code: {system: "http://snomed.info/sct", code: "272741003", display: "Laterality (attribute)", source: "SNOMED CT GPS"}
    options:
      - {id: right, label: right, code: {system: "http://snomed.info/sct", code: "24028007", display: "Right (qualifier value)", source: "SNOMED CT GPS"}}
      - {id: left, label: left, uncoded_reason: "kept text-only in this test"}
  - {id: size_mm, label: Size, type: number_list, definition: Stated dimensions in mm., uncoded_reason: "no code", unit: {code: mm, display: mm}, range: {min: 0.1, max: 400}}
  - {id: grade, label: Grade, type: integer, definition: Grade as stated 1-4., uncoded_reason: "no code", scale: {min: 1, max: 4}}
variables:
  - id: stone
    label: Kidney stone
    type: presence
    definition: A stone in the kidney as stated.
    uncoded_reason: "test"
    synonyms: {en: [stone, stones, calculus]}
    locations: [kidney]
    attributes: [side, size_mm]
  - id: hydronephrosis
    label: Hydronephrosis
    type: presence
    definition: Dilated collecting system as stated.
    uncoded_reason: "test"
    synonyms: {en: [hydronephrosis]}
    attributes: [side, grade]
  - id: kidney_length_mm
    label: Kidney length
    type: number
    definition: The stated kidney length in mm.
    uncoded_reason: "test"
    unit: {code: mm, display: mm}
    range: {min: 30, max: 250}
    aggregate: highest
    synonyms: {en: [kidney]}
    patterns: {en: ['kidney[^.\\d]{0,20}?(?P<value>\\d+(?:[.,]\\d+)?)\\s*(?P<unit>cm|mm)']}
normal_statements:
  - id: global
    covers: all
    phrases: {en: [normal renal ultrasound, no abnormality]}
"""


def template(text: str = BASE) -> Template:
    return parse_template(text, "kidney_us.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(TemplateProblems) as caught:
        template(text)
    return [f"{p.field}: {p.problem}" for p in caught.value.problems]


def test_attributes_are_declared_once_and_named_by_variables() -> None:
    loaded = template()
    assert loaded.variable("stone").attributes == ("side", "size_mm")
    assert loaded.attribute("side").option("right").code is not None


def test_attribute_problems_are_reported_by_key_name() -> None:
    bad = (
        BASE.replace("attributes: [side, grade]", "attributes: [side, colour]")
        .replace("unit: {code: mm, display: mm}, range: {min: 0.1", "range: {min: 0.1")
        .replace("scale: {min: 1, max: 4}", "scale: {min: 4, max: 1}")
    )
    found = problems(bad)
    assert "variables.hydronephrosis.attributes: undeclared attribute 'colour'" in found
    assert "attributes.size_mm.unit: type number_list needs unit" in found
    assert "attributes.grade.scale: min must be below max" in found


def test_an_option_attribute_names_an_enum_variable() -> None:
    bad = BASE.replace(
        "  - {id: grade,", "  - {id: cat, label: C, type: option, of: stone, definition: the category per side., "
        "uncoded_reason: x}\n  - {id: grade,"
    )  # fmt: skip
    assert "attributes.cat.of: 'stone' is not an enum variable" in problems(bad)


def test_normal_statement_problems() -> None:
    bad = BASE.replace("covers: all", "covers: [stone, kidney_length_mm, cyst]")
    found = problems(bad)
    assert "normal_statements.global.covers: 'kidney_length_mm' is no presence variable" in found
    assert "normal_statements.global.covers: 'cyst' is no presence variable" in found


def test_aggregate_is_not_for_presence() -> None:
    bad = BASE.replace(
        "    attributes: [side, size_mm]", "    attributes: [side, size_mm]\n    aggregate: highest"
    )
    assert "variables.stone.aggregate: not allowed for type presence" in problems(bad)


def values(text: str, loaded: Template | None = None) -> dict[str, tuple[FindingStatus, object]]:
    extraction = extract_rules(
        as_report({"id": "r", "text": text, "language": "en"}, "US"), loaded or template()
    )
    return {v.variable_id: (v.status, v.value) for v in extraction.values}


def test_a_normal_statement_makes_the_covered_findings_absent() -> None:
    found = values("FINDINGS: Kidneys 10 cm.\nIMPRESSION: Normal renal ultrasound.")
    assert found["stone"][0] is FindingStatus.ABSENT
    assert found["hydronephrosis"][0] is FindingStatus.ABSENT


def test_a_stated_finding_wins_over_a_normal_statement() -> None:
    found = values("Small stone in the lower pole. Otherwise no abnormality.")
    assert found["stone"][0] is FindingStatus.PRESENT
    assert found["hydronephrosis"][0] is FindingStatus.ABSENT


@pytest.mark.parametrize(
    "text",
    [
        "Left side: no abnormality.",  # a heading: still opens the statement
        "IMPRESSION: No abnormality.",
    ],
)
def test_a_statement_after_a_heading_counts(text: str) -> None:
    assert values(text)["stone"][0] is FindingStatus.ABSENT


@pytest.mark.parametrize(
    "text",
    [
        "Upper pole no abnormality.",  # limited to a region: nothing absent at report level
        "INDICATION: no abnormality expected\nFINDINGS: see images.",  # the question
    ],
)
def test_a_limited_or_historical_statement_makes_nothing_absent(text: str) -> None:
    assert values(text)["stone"][0] is FindingStatus.NOT_MENTIONED


def test_highest_value_and_cm_to_mm() -> None:
    found = values("Right kidney 10.5 cm. Left kidney 11.2 cm. No stones.")
    assert found["kidney_length_mm"] == (FindingStatus.PRESENT, 112.0)


def test_labelled_attributes_are_checked_on_load(tmp_path: Path) -> None:
    from mappings.template import load_builtin_templates

    head_ct = load_builtin_templates()["head_ct"]
    row = json.loads(
        Path("tests/fixtures/labelled/head_ct.jsonl").read_text("utf-8").splitlines()[0]
    )
    assert row["gold"]["_attributes"]
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n", "utf-8")
    assert len(load_jsonl(path, None, None, lambda _: head_ct).reports) == 1
    row["gold"]["_attributes"] = [["subdural_haemorrhage", {"colour": "red"}]]
    path.write_text(json.dumps(row) + "\n", "utf-8")
    with pytest.raises(DatasetError, match="has no attribute 'colour'"):
        load_jsonl(path, None, None, lambda _: head_ct)
