"""Sides of a finding (issue 21): stage 1 reads them from the finding's own clause, else from a
one-sided exam title; `radbridge eval` scores them against gold `_attributes` `side`."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.settings import Settings
from conformance.evaluate import EvalOptions, run_evaluation
from conformance.labels import gold_sides
from conformance.metrics import NOT_MENTIONED, VariableSpec, evaluate_labels
from mappings.inbound import report_from_record
from mappings.report import FindingStatus
from mappings.template import get_template
from workers.rules_stage import rules_values
from workers.sides import clause_sides, exam_side

LABELLED = Path(__file__).parent / "fixtures" / "labelled"
SIDES = {"right", "left", "bilateral"}


def _values(template: str, text: str, language: str = "en") -> dict[str, tuple[str, ...]]:
    report = report_from_record(
        {"id": "s1", "text": text, "language": language}, default_language="en"
    )
    values = rules_values(report, get_template(template))
    return {k: v.sides for k, v in values.items() if v.status is not FindingStatus.NOT_MENTIONED}


def test_side_words_in_three_languages() -> None:
    for text, expected in (
        ("right renal calculus", ("right",)),
        ("linker nier", ("left",)),
        ("Hydronephrose beidseits", ("bilateral",)),
        ("rechts meer dan links", ("right", "left")),
        ("no side here", ()),
    ):
        assert clause_sides(text, 0, len(text), SIDES) == expected, text
    assert clause_sides("left", 0, 4, {"right"}) == ()
    assert exam_side("XR LEFT WRIST, PA AND LATERAL.", SIDES) == "left"
    assert exam_side("X-beide handen", SIDES) is None
    assert exam_side("CT abdomen", SIDES) is None


def test_a_finding_takes_the_side_of_its_own_clause() -> None:
    sides = _values("abdomen", "Findings: 6 mm calculus in the right distal ureter.")
    assert sides["urolithiasis"] == ("right",)


def test_a_finding_without_a_side_takes_a_one_sided_exam_title() -> None:
    sides = _values("msk_radiograph", "Left knee: AP and lateral.\nModerate joint effusion.")
    assert sides["joint_effusion"] == ("left",)
    # an absent finding has no side
    absent = _values("msk_radiograph", "Left knee: AP and lateral.\nNo joint effusion.")
    assert absent["joint_effusion"] == ()


def test_side_pairs_are_scored_like_sizes() -> None:
    assert gold_sides([["mass", {"side": "left", "size_mm": [4]}], ["mass", {"size_mm": [5]}]]) == {
        ("mass", "left")
    }
    spec = VariableSpec("mass", "presence")
    gold = [{"mass": "present"}, {"mass": NOT_MENTIONED}]
    metrics = evaluate_labels(
        [spec],
        gold,
        gold,
        gold_sides=[frozenset({("mass", "left")}), frozenset()],
        pred_sides=[frozenset({("mass", "left"), ("mass", "right")}), frozenset()],
        resamples=20,
    )
    assert metrics.sides is not None
    assert (metrics.sides.tp, metrics.sides.fp, metrics.sides.fn) == (1, 1, 0)


@pytest.mark.parametrize(
    ("template", "gold", "found", "wrong"),
    # measured 2026-12-07 on the dev halves (rules stage): found of gold, wrong sides
    # (msk_radiograph and abdomen with the grd-w4-* grade records)
    [("msk_radiograph", 123, 112, 1), ("breast", 52, 42, 1), ("abdomen", 27, 22, 3)],
)
def test_eval_scores_sides_on_the_dev_half(
    template: str, gold: int, found: int, wrong: int
) -> None:
    result = run_evaluation(
        LABELLED / f"{template}.jsonl",
        EvalOptions(Settings(), stage="rules", split="dev", template=template, resamples=20),
    )
    (task,) = result.tasks
    sides = task.stages["rules"].metrics.sides
    assert sides is not None
    assert sides.tp + sides.fn == gold
    assert sides.tp >= found and sides.fp <= wrong
