"""Stage 1 (workers/rules_stage.py) for typed variables: patterns, synonym + number, enum options,
presence qualifiers and section preference, on short hand-written sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.report import FindingStatus, Report
from mappings.sections import find_sections
from mappings.template import Template, load_template
from workers.rules_stage import extract_rules, typed_hits, variable_spans

TYPED: Template = load_template(
    Path(__file__).resolve().parent / "fixtures" / "templates" / "typed_demo.yaml"
)


def _report(text: str, language: str | None = None) -> Report:
    return Report(
        source_format="hl7v2",
        report_id="r",
        text=text,
        language=language,
        sections=find_sections(text),
    )


def _value(text: str, variable: str, language: str | None = None) -> tuple[object, ...]:
    value = extract_rules(_report(text, language), TYPED).value_of(variable)
    assert value is not None
    return value.status.value, value.value


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Fazekas graad 2.", "nl", ("present", 2)),  # nl pattern
        ("Fazekas score: 1", "en", ("present", 1)),  # en pattern
        ("Witte stof afwijkingen passend bij Fazekas 3.", None, ("present", 3)),  # any language
        ("Fazekas 5.", "en", ("not_mentioned", None)),  # outside the scale
        ("Fazekas 1,5.", "en", ("not_mentioned", None)),  # not an integer
        ("White matter lesions, in total 2.", "en", ("present", 2)),  # synonym + number fallback
        ("No white matter lesions; age 2 years ago.", "en", ("not_mentioned", None)),
        ("Geen Fazekas 2.", "nl", ("not_mentioned", None)),  # negated
        ("Fazekas not scored.", "en", ("not_mentioned", None)),
    ],
)
def test_ordinal_values(text: str, language: str | None, expected: tuple[object, ...]) -> None:
    assert _value(text, "fazekas", language) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LVEF 45,5 %.", ("present", 45.5)),  # decimal comma
        ("Ejectiefractie (biplane) van 38%.", ("present", 38.0)),
        ("LVEF: 55.", ("present", 55.0)),
        ("LVEF 120 %.", ("not_mentioned", None)),  # outside the range
        ("LVEF measured on 12/03 was normal.", ("not_mentioned", None)),  # a date, not a value
        (
            "LVEF normal; on page 4 of the protocol a table lists 60 values.",
            ("not_mentioned", None),
        ),
        ("LVEF 20-30 %.", ("not_mentioned", None)),  # a range is not one value
    ],
)
def test_number_values(text: str, expected: tuple[object, ...]) -> None:
    assert _value(text, "lvef", "en") == expected


def test_number_value_carries_the_unit_and_the_clause_as_evidence() -> None:
    text = "Normal wall motion. LVEF 45,5 % (biplane)"
    value = extract_rules(_report(text, "en"), TYPED).value_of("lvef")
    assert value is not None and value.unit == "%"
    assert value.evidence is not None and value.evidence.verified
    assert text[value.evidence.start : value.evidence.end] == "LVEF 45,5 % (biplane)"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mild cardiomegaly.", ("present", "enlarged")),
        ("Hart niet vergroot.", ("present", "normal_size")),
        ("No cardiomegaly; normal heart size.", ("present", "normal_size")),  # negated skipped
        ("No cardiomegaly.", ("not_mentioned", None)),
        ("Cardiomegaly. Normal heart size on the previous study.", ("present", "enlarged")),
    ],
)
def test_enum_first_non_negated_option_wins(text: str, expected: tuple[object, ...]) -> None:
    assert _value(text, "heart_size", "en") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Right pleural effusion, unchanged.", ("present", "stable")),
        ("Pleuravocht rechts, toegenomen.", ("present", "progression")),
        ("Pleural effusion. Lesions elsewhere decreased.", ("present", None)),  # other clause
        ("No pleural effusion, stable.", ("absent", None)),  # no qualifier on absent findings
        ("Pleural effusion, not increased but decreased.", ("present", None)),
    ],
)
def test_presence_qualifier_from_the_same_clause(text: str, expected: tuple[object, ...]) -> None:
    assert _value(text, "pleural_effusion", "en") == expected


def test_section_is_searched_first() -> None:
    text = "Findings:\nFazekas 1 posteriorly.\nImpression:\nFazekas graad 2."
    assert _value(text, "fazekas", "nl") == ("present", 2)
    without = "Findings:\nFazekas 1 posteriorly."
    assert _value(without, "fazekas", "nl") == ("present", 1)  # no impression: whole text


def test_variable_spans_cover_every_mention_clause() -> None:
    text = "No cardiomegaly. LVEF 45 %. Fazekas 2."
    spans = variable_spans(_report(text, "en"), TYPED)
    assert [text[a:b] for a, b in spans["heart_size"]] == []  # negated options are no value...
    assert [text[a:b] for a, b in spans["lvef"]] == ["LVEF 45 %"]
    assert [text[a:b] for a, b in spans["fazekas"]] == ["Fazekas 2"]
    hits = typed_hits(_report(text, "en"), TYPED.variable("fazekas"))
    assert [(h.value, text[h.start : h.end]) for h in hits] == [(2, "Fazekas 2")]


def test_chest_presence_values_are_unchanged_by_typed_support() -> None:
    from mappings.template import get_template

    extraction = extract_rules(
        _report("Small right pleural effusion. No pneumothorax."), get_template("chest_findings")
    )
    effusion = extraction.value_of("pleural_effusion")
    assert effusion is not None and effusion.value is None and effusion.unit is None
    assert effusion.status is FindingStatus.PRESENT
