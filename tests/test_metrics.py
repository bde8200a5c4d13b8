"""The metric core against hand-computed examples (conformance/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.metrics import (
    NOT_MENTIONED,
    BinaryCounts,
    Interval,
    VariableSpec,
    binary_counts,
    bootstrap_ci,
    compare,
    confusion_matrix,
    evaluate_labels,
    mcnemar,
    pair_metrics,
    variable_metrics,
)

NM = NOT_MENTIONED


def test_binary_counts_hand_computed() -> None:
    counts = BinaryCounts(tp=3, fp=1, fn=2, tn=4, n=10)
    assert counts.precision == pytest.approx(0.75)
    assert counts.recall == pytest.approx(0.6)
    assert counts.f1 == pytest.approx(6 / 9)
    assert counts.specificity == pytest.approx(0.8)
    assert counts.accuracy == pytest.approx(0.7)


def test_empty_gold_gives_undefined_not_zero_or_one() -> None:
    counts = binary_counts([], [], "presence")
    assert counts == BinaryCounts()
    assert (counts.precision, counts.recall, counts.f1, counts.specificity, counts.accuracy) == (
        None,
        None,
        None,
        None,
        None,
    )
    result = evaluate_labels([VariableSpec("effusion", "presence")], [], [])
    assert result.reports == 0
    assert result.exact_accuracy is None
    assert result.macro["f1"] is None
    assert result.ci == {}
    assert result.variables["effusion"].ci == {}


def test_no_predictions() -> None:
    gold = ["present", "present", "absent", NM]
    pred = [NM, NM, NM, NM]
    counts = binary_counts(gold, pred, "presence")
    assert counts == BinaryCounts(tp=0, fp=0, fn=2, tn=2, n=4)
    assert counts.precision is None  # nothing predicted: undefined, not 1.0
    assert counts.recall == 0.0
    assert counts.f1 == 0.0
    assert counts.specificity == 1.0
    assert counts.accuracy == 0.5
    metrics = variable_metrics(VariableSpec("effusion", "presence"), gold, pred)
    assert metrics.class_accuracy == 0.25  # only the not_mentioned report matches exactly


def test_all_negative_reports() -> None:
    gold = ["absent", NM, "absent", "uncertain"]
    clean = binary_counts(gold, ["absent", NM, NM, "uncertain"], "presence")
    assert clean == BinaryCounts(tn=4, n=4)
    assert clean.f1 is None  # no positive on either side: F1 undefined, never a fake 1.0
    assert clean.specificity == 1.0
    hallucinated = binary_counts(gold, ["absent", "present", NM, NM], "presence")
    assert hallucinated == BinaryCounts(fp=1, tn=3, n=4)
    assert hallucinated.precision == 0.0
    assert hallucinated.recall is None
    assert hallucinated.f1 == 0.0
    assert hallucinated.specificity == 0.75


def test_uncertain_is_not_a_positive() -> None:
    assert compare("uncertain", "present", "presence") == BinaryCounts(fp=1, n=1)
    assert compare("present", "uncertain", "presence") == BinaryCounts(fn=1, n=1)
    assert compare("uncertain", "uncertain", "presence") == BinaryCounts(tn=1, n=1)


def test_ordinal_wrong_value_is_fp_and_fn() -> None:
    spec = VariableSpec("fazekas", "ordinal", (0, 1, 2, 3))
    gold = [2, 1, NM, 3]
    pred = [2, 2, 1, NM]
    metrics = variable_metrics(spec, gold, pred)
    assert metrics.counts == BinaryCounts(tp=1, fp=2, fn=2, tn=0, n=4)
    assert metrics.precision == pytest.approx(1 / 3)
    assert metrics.recall == pytest.approx(1 / 3)
    assert metrics.f1 == pytest.approx(1 / 3)
    assert metrics.accuracy == 0.25
    assert metrics.class_accuracy == 0.25
    assert metrics.confusion is not None
    assert metrics.confusion.labels == ("0", "1", "2", "3", NM)
    assert metrics.confusion.counts == (
        (0, 0, 0, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 0, 0, 0, 1),
        (0, 1, 0, 0, 0),
    )
    # per class F1: "0" undefined, "1" 0, "2" 2/3, "3" 0, not_mentioned 0 -> macro 2/3 / 4
    assert metrics.class_macro_f1 == pytest.approx((2 / 3) / 4)


def test_enum_confusion_order_follows_options() -> None:
    matrix = confusion_matrix(["hcm", "dcm", NM], ["hcm", "hcm", "amyloid"], ("dcm", "hcm"))
    assert matrix.labels == ("dcm", "hcm", "amyloid", NM)
    assert matrix.counts == ((0, 1, 0, 0), (0, 1, 0, 0), (0, 0, 0, 0), (0, 0, 1, 0))
    assert matrix.class_f1() == {"dcm": 0.0, "hcm": pytest.approx(2 / 3), "amyloid": 0.0, NM: 0.0}


def test_number_tolerance_and_mae() -> None:
    spec = VariableSpec("lvef", "number", tolerance=0.5)
    metrics = variable_metrics(spec, [26.0, 55.0, NM], [26.4, 50.0, NM])
    assert metrics.counts == BinaryCounts(tp=1, fp=1, fn=1, tn=1, n=3)
    assert metrics.mae == pytest.approx(2.7)
    assert metrics.within_tolerance == 0.5
    assert metrics.confusion is None
    exact = variable_metrics(VariableSpec("lvef", "number"), [26.0], [26.4])
    assert exact.counts == BinaryCounts(fp=1, fn=1, n=1)


def test_pair_metrics_hand_computed() -> None:
    gold = [
        {
            ("consolidation", "right_lower_lobe"),
            ("consolidation", "left_lower_lobe"),
            ("effusion", "right_lung"),
        },
        {("nodule", None)},
    ]
    pred = [
        {
            ("consolidation", "right_lower_lobe"),
            ("effusion", "right_lung"),
            ("effusion", "left_lung"),
        },
        {("nodule", None)},
    ]
    metrics = pair_metrics(gold, pred)
    assert (metrics.tp, metrics.fp, metrics.fn) == (3, 1, 1)
    assert metrics.precision == metrics.recall == metrics.f1 == pytest.approx(0.75)
    # lesions: consolidation (a location missed), effusion (one too many) wrong; nodule right
    assert (metrics.gold_items, metrics.items_correct) == (3, 1)
    assert metrics.item_accuracy == pytest.approx(1 / 3)
    assert metrics.report_exact == 0.5


def test_pair_metrics_empty() -> None:
    metrics = pair_metrics([set(), set()], [set(), set()])
    assert (metrics.precision, metrics.recall, metrics.f1, metrics.item_accuracy) == (
        None,
        None,
        None,
        None,
    )
    assert metrics.report_exact == 1.0
    none = pair_metrics([], [])
    assert none.reports == 0 and none.report_exact is None
    missed = pair_metrics([{("effusion", "left_lung")}], [set()])
    assert (missed.precision, missed.recall, missed.f1, missed.item_accuracy) == (
        None,
        0.0,
        0.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [(1, 5, 2 * 7 / 64), (0, 0, 1.0), (0, 10, 2 / 1024), (3, 3, 1.0), (5, 1, 2 * 7 / 64)],
)
def test_mcnemar_exact(only_a: int, only_b: int, p: float) -> None:
    both = 4
    a = [True] * only_a + [False] * only_b + [True] * both + [False]
    b = [False] * only_a + [True] * only_b + [True] * both + [False]
    result = mcnemar(a, b)
    assert (result.n, result.only_a, result.only_b) == (len(a), only_a, only_b)
    assert result.p_value == pytest.approx(p)


def _example() -> tuple[list[VariableSpec], list[dict[str, str | int]], list[dict[str, str | int]]]:
    specs = [VariableSpec("effusion", "presence"), VariableSpec("fazekas", "ordinal", (0, 1, 2, 3))]
    gold: list[dict[str, str | int]] = [
        {"effusion": "present", "fazekas": 2},
        {"effusion": "absent", "fazekas": NM},
        {"effusion": NM, "fazekas": NM},
        {"effusion": "present", "fazekas": 1},
        {"effusion": "absent", "fazekas": 3},
    ]
    pred: list[dict[str, str | int]] = [
        {"effusion": "present", "fazekas": 2},
        {"effusion": "absent", "fazekas": NM},
        {"effusion": "present", "fazekas": NM},
        {"effusion": "uncertain", "fazekas": 1},
        {"effusion": "absent", "fazekas": 2},
    ]
    return specs, gold, pred


def test_evaluate_labels_macro_micro_exact() -> None:
    specs, gold, pred = _example()
    result = evaluate_labels(specs, gold, pred, resamples=200)
    effusion, fazekas = result.variables["effusion"], result.variables["fazekas"]
    assert effusion.counts == BinaryCounts(tp=1, fp=1, fn=1, tn=2, n=5)
    assert fazekas.counts == BinaryCounts(tp=2, fp=1, fn=1, tn=2, n=5)
    assert result.micro == BinaryCounts(tp=3, fp=2, fn=2, tn=4, n=10)
    assert result.macro["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert result.macro["specificity"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert result.exact_accuracy == pytest.approx(2 / 5)
    # report 2 and 3 have no gold positive; report 3 got a hallucinated effusion
    assert result.negative_reports == 2
    assert result.negative_report_specificity == 0.5
    assert result.pairs is None and result.episodes is None


def test_bootstrap_is_deterministic_and_brackets_the_estimate() -> None:
    specs, gold, pred = _example()
    first = evaluate_labels(specs, gold * 4, pred * 4, seed=7)
    second = evaluate_labels(specs, gold * 4, pred * 4, seed=7)
    assert first.ci == second.ci
    assert first.variables["effusion"].ci == second.variables["effusion"].ci
    interval = first.ci["exact_accuracy"]
    assert 0.0 <= interval.low <= 0.4 <= interval.high <= 1.0
    other = evaluate_labels(specs, gold * 4, pred * 4, seed=8)
    assert other.ci["exact_accuracy"] != interval or other.ci["macro_f1"] != first.ci["macro_f1"]
    # the vectorised interval equals the generic slow path over the same resamples
    correct = np.array([1.0, 1.0, 0.0, 0.0, 0.0] * 4)
    slow = bootstrap_ci(len(correct), lambda idx: float(correct[idx].mean()), seed=7)
    assert slow is not None
    assert (slow.low, slow.high) == pytest.approx((interval.low, interval.high))


def test_bootstrap_undefined_metric_has_no_interval() -> None:
    spec = VariableSpec("effusion", "presence")
    result = evaluate_labels([spec], [{"effusion": "absent"}] * 6, [{"effusion": "absent"}] * 6)
    assert result.variables["effusion"].f1 is None
    assert "f1" not in result.variables["effusion"].ci
    assert result.variables["effusion"].ci["specificity"] == Interval(1.0, 1.0)


def test_evaluate_labels_with_pairs_ci() -> None:
    specs = [VariableSpec("effusion", "presence")]
    gold = [{"effusion": "present"}] * 4
    gold_pairs = [{("effusion", "left_lung")}, {("effusion", "right_lung")}] * 2
    pred_pairs = [{("effusion", "left_lung")}, {("effusion", "left_lung")}] * 2
    result = evaluate_labels(
        specs, gold, gold, gold_pairs=gold_pairs, pred_pairs=pred_pairs, resamples=300
    )
    assert result.pairs is not None
    assert result.pairs.f1 == 0.5
    assert result.pairs.item_accuracy == 0.5
    assert result.pairs.ci["f1"].low <= 0.5 <= result.pairs.ci["f1"].high


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        binary_counts(["present"], [], "presence")
