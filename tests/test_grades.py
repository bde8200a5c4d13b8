"""Grades and severities of a finding (issue 21): stage 1 reads them from the finding's own clause
(`workers.grades`); `radbridge eval` scores them against gold `_attributes` (`grade`, `kl_grade`,
`fazekas`, `severity`)."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.settings import Settings
from conformance.eval_scoring import EvalOptions
from conformance.evaluate import run_evaluation
from conformance.labels import gold_grades, predicted_grades, takes_grades
from mappings.inbound import report_from_record
from mappings.report import FindingStatus
from mappings.template import get_template
from tests.labelled import LABELLED
from workers.grades import clause_grades, grade_attributes, merged
from workers.rules_stage import extract_rules, rules_values


def _grades(template: str, text: str, language: str = "en") -> dict[str, list[tuple[str, object]]]:
    report = report_from_record(
        {"id": "g1", "text": text, "language": language}, default_language="en"
    )
    values = rules_values(report, get_template(template))
    return {
        k: [(g.attribute, g.value) for g in v.grades]
        for k, v in values.items()
        if v.status is not FindingStatus.NOT_MENTIONED
    }


def _clause(template: str, variable: str, text: str, mention: str) -> list[tuple[str, object]]:
    t = get_template(template)
    start = text.index(mention)
    found = clause_grades(
        text,
        (0, len(text)),
        (start, start + len(mention)),
        grade_attributes(t, t.variable(variable)),
    )
    return [(g.attribute, g.value) for g in found]


def test_the_grade_attributes_of_a_variable() -> None:
    msk = get_template("msk_radiograph")
    assert [a.id for a in grade_attributes(msk, msk.variable("osteoarthritis"))] == [
        "severity",
        "kl_grade",
    ]
    assert grade_attributes(msk, msk.variable("fracture")) == ()
    abdomen = get_template("abdomen")
    assert [a.id for a in grade_attributes(abdomen, abdomen.variable("hydronephrosis"))] == [
        "grade",
        "severity",
    ]
    assert takes_grades(abdomen) and takes_grades(abdomen, severity=True)
    assert not takes_grades(get_template("breast"))


@pytest.mark.parametrize(
    ("text", "mention", "expected"),
    [
        ("Gonarthrose, Kellgren-Lawrence Grad 3.", "Gonarthrose", [("kl_grade", 3)]),
        ("osteoarthritis (KL 4)", "osteoarthritis", [("kl_grade", 4)]),
        ("osteoarthritis, KL3", "osteoarthritis", [("kl_grade", 3)]),
        ("artrose graad 2 volgens Kellgren-Lawrence", "artrose", [("kl_grade", 2)]),
        ("coxartrose (Kellgren-Lawrence IV)", "coxartrose", [("kl_grade", 4)]),
        ("Kellgren grade II osteoarthritis", "osteoarthritis", [("kl_grade", 2)]),
        ("Kellgren-Lawrence grade 0", "Kellgren-Lawrence", [("kl_grade", 0)]),
        # outside the scale 0-4, a size, a decimal: no grade
        ("osteoarthritis KL 7", "osteoarthritis", []),
        ("osteoarthritis grade 3 mm", "osteoarthritis", []),
        ("osteoarthritis grade 2.5", "osteoarthritis", []),
        # severity: the word nearest to the mention; a size word only as its adjective
        ("Moderate medial osteoarthritis", "osteoarthritis", [("severity", "moderate")]),
        ("MÄßIGE Gonarthrose", "Gonarthrose", [("severity", "moderate")]),
        ("geringgradige Coxarthrose", "Coxarthrose", [("severity", "mild")]),
        ("forse artrose", "artrose", [("severity", "severe")]),
        ("Small joint effusion and mild osteoarthritis", "osteoarthritis", [("severity", "mild")]),
        ("osteoarthritis with large osteophytes", "osteoarthritis", []),
    ],
)
def test_grade_words_in_three_languages(text: str, mention: str, expected: list[object]) -> None:
    assert _clause("msk_radiograph", "osteoarthritis", text, mention) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("grade 3 hydronephrosis", [("grade", 3)]),
        ("hydronefrose graad III", [("grade", 3)]),
        ("Harnstau I°", [("grade", 1)]),
        ("Harnstau II.-gradig", [("grade", 2)]),
        ("zweitgradiger Harnstau", [("grade", 2)]),
        ("Harnstau II. Grades", [("grade", 2)]),
        ("Harnstau dritten Grades", [("grade", 3)]),
        ("HYDRONEPHROSIS, GRADE IV", [("grade", 4)]),
        ("hydronephrosis grade 0", []),  # the scale is 1-4
        ("hydronephrosis, angle 30°", []),
    ],
)
def test_hydronephrosis_grades(text: str, expected: list[object]) -> None:
    mention = next(w for w in ("hydronephrosis", "HYDRONEPHROSIS", "hydronefrose", "Harnstau")
                   if w in text)  # fmt: skip
    assert _clause("abdomen", "hydronephrosis", text, mention) == expected


def test_a_finding_takes_the_grades_of_its_own_clauses_once_each() -> None:
    grades = _grades(
        "abdomen",
        "Right kidney: grade 3 hydronephrosis. Left kidney: grade 2 hydronephrosis. "
        "Mild hepatic steatosis. No gallstones.",
    )
    assert grades["hydronephrosis"] == [("grade", 3), ("grade", 2)]
    assert grades["hepatic_steatosis"] == [("severity", "mild")]
    assert grades["cholelithiasis"] == []
    # an absent finding has no grade; a grade in another finding's clause is not its own
    grades = _grades("abdomen", "No hydronephrosis. Grade 2 fatty liver.")
    assert grades["hydronephrosis"] == []
    assert grades["hepatic_steatosis"] == []  # steatosis has no grade attribute


def test_the_grade_keeps_its_words_and_place() -> None:
    text = "RX knie links.\nMatige gonartrose, graad 3 volgens Kellgren-Lawrence."
    report = report_from_record({"id": "g2", "text": text, "language": "nl"}, default_language="en")
    value = extract_rules(report, get_template("msk_radiograph")).value_of("osteoarthritis")
    assert value is not None
    by_attribute = {g.attribute: g for g in value.grades}
    assert by_attribute["severity"].text == "Matige"
    assert by_attribute["kl_grade"].text == "graad 3"
    evidence = by_attribute["kl_grade"].evidence
    assert evidence.start is not None and text[evidence.start : evidence.end] == "graad 3"
    assert merged([*value.grades, *value.grades]) == value.grades


def test_grade_pairs_from_gold_and_extraction() -> None:
    abdomen = get_template("abdomen")
    instances: list[tuple[str, dict[str, Any]]] = [
        ("hydronephrosis", {"side": "right", "grade": 3, "severity": "moderate"}),
        ("hydronephrosis", {"side": "left", "grade": 2}),
        ("urolithiasis", {"size_mm": [5]}),
    ]
    assert gold_grades(instances, abdomen) == {
        ("hydronephrosis", "grade=3"),
        ("hydronephrosis", "grade=2"),
    }
    assert gold_grades(instances, abdomen, severity=True) == {
        ("hydronephrosis", "severity=moderate")
    }
    report = report_from_record(
        {"id": "g3", "text": "Moderate hydronephrosis, grade 3.", "language": "en"},
        default_language="en",
    )
    extraction = extract_rules(report, abdomen)
    assert predicted_grades(extraction, abdomen) == {("hydronephrosis", "grade=3")}
    assert predicted_grades(extraction, abdomen, severity=True) == {
        ("hydronephrosis", "severity=moderate")
    }


@pytest.mark.parametrize(
    ("template", "grades", "severities"),
    # measured 2026-12-07 on the dev halves (rules stage), grd-w4-*, msk-w4-* and msk-w5-* records included:
    # (gold pairs, found at least, wrong at most)
    [("msk_radiograph", (14, 14, 0), (33, 32, 2)), ("abdomen", (13, 13, 0), (11, 11, 0))],
)
def test_eval_scores_grades_on_the_dev_half(
    template: str, grades: tuple[int, int, int], severities: tuple[int, int, int]
) -> None:
    result = run_evaluation(
        LABELLED / f"{template}.jsonl",
        EvalOptions(Settings(), stage="rules", split="dev", template=template, resamples=20),
    )
    metrics = result.tasks[0].stages["rules"].metrics
    for pairs, (gold, found, wrong) in ((metrics.grades, grades), (metrics.severities, severities)):
        assert pairs is not None
        assert pairs.tp + pairs.fn == gold
        assert pairs.tp >= found and pairs.fp <= wrong
