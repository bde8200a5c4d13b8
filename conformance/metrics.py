"""The metric core of radbridge evaluation: pure functions, no I/O, one meaning everywhere.

`radbridge eval`, the extraction tests and the benchmarks all count with this module, so a
number means the same wherever it is printed.

Labels. One report gives one label per variable, in the gold form of docs/architecture.md 'Contracts':
presence `"present" | "absent" | "uncertain" | "not_mentioned"`; ordinal an `int`, number a
`float`, enum an option id, each or `"not_mentioned"`; binary (assertion sets such as NegEx:
"is this mention negated?") `"yes" | "no"`.

Conventions:
- **Undefined is None.** A ratio whose denominator is zero (precision with no predicted
  positive, recall with no gold positive, F1 with neither, specificity with no gold negative)
  is `None`, printed "n/a" — never 0, never a fake 1.0, never an exception. Macro averages are
  the mean of the DEFINED per-variable values (None when none is defined).
- **Positive = a stated finding.** Presence: `present` only (strict; `uncertain` is not a
  positive — it counts in the 4-class `class_accuracy` and the confusion matrix). Binary:
  `yes`. Ordinal, number, enum: any stated value.
- **Counting.** Presence and binary: TP both positive, FP predicted positive only, FN gold
  positive only, TN neither. Valued variables: TP stated and right; a stated but WRONG value is one FP and one FN
  (it asserted the wrong thing and missed the right one); a value where gold has none is FP, a
  missed value FN, TN neither stated. A number is right within `tolerance` (absolute).
- `accuracy` = (TP + TN) / reports (binary: positive vs not); `class_accuracy` = exact label
  equality over all reports (presence: 4 classes; valued: the value or not_mentioned).
- `specificity` = TN / (TN + FP): on reports without a gold positive for the variable, how
  often nothing was hallucinated. `negative_report_specificity`: over reports with NO gold
  positive at all, the share where nothing positive was predicted.
- `exact_accuracy`: share of reports whose every variable label is right (pairs not included:
  they have their own `report_exact`).
- Pairs (lesion–location `_pairs`, diagnosis–episode `_episodes`): sets of (item, attribute)
  per report; P/R/F1 micro over reports; `item_accuracy` (per-lesion accuracy) = share of gold
  items (lesions, per report) whose predicted attribute set is exactly the gold set.
- Sizes (`_attributes` `size_mm`): (finding, "16x11x13" in mm) pairs per report, counted like
  pairs (a size is right when the finding and every dimension match); `sizes.recall` is the
  share of gold sizes found.
- Sides (`_attributes` `side`): (finding, side) pairs per report, counted the same way.
- Grades and severities (`_attributes` `grade`, `kl_grade` ... / `severity`): (finding,
  "attribute=value") pairs per report, counted the same way.
- Confidence intervals: percentile bootstrap over reports (1,000 resamples, seeded, the same
  resampled report sets for every metric of one run); a metric undefined in more than half of
  the resamples gets no interval.
- McNemar: exact two-sided binomial test on the discordant pairs (b, c); p = 1 when b + c = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

Label = str | int | float
Kind = Literal["presence", "binary", "ordinal", "number", "enum"]
Pair = tuple[str, str | None]

NOT_MENTIONED = "not_mentioned"
PRESENT = "present"
PRESENCE_CLASSES: tuple[str, ...] = ("present", "absent", "uncertain", NOT_MENTIONED)
YES, NO = "yes", "no"
BINARY_CLASSES: tuple[str, ...] = (YES, NO)
RESAMPLES = 1000
CONFIDENCE = 0.95
_MIN_DEFINED_SHARE = 0.5

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero."""
    return numerator / denominator if denominator else None


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval."""

    low: float
    high: float


@dataclass(frozen=True)
class BinaryCounts:
    """TP/FP/FN/TN over `n` compared reports (a wrong value adds to both FP and FN)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    n: int = 0

    def __add__(self, other: BinaryCounts) -> BinaryCounts:
        return BinaryCounts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
            self.n + other.n,
        )

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP)."""
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        """TP / (TP + FN) (sensitivity)."""
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        """2TP / (2TP + FP + FN); None when there is nothing positive on either side."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def specificity(self) -> float | None:
        """TN / (TN + FP)."""
        return ratio(self.tn, self.tn + self.fp)

    @property
    def accuracy(self) -> float | None:
        """(TP + TN) / n."""
        return ratio(self.tp + self.tn, self.n)

    def as_row(self) -> tuple[int, int, int, int, int]:
        """(tp, fp, fn, tn, n), the order the bootstrap arrays use."""
        return (self.tp, self.fp, self.fn, self.tn, self.n)


def is_stated(label: Label, kind: Kind) -> bool:
    """True when the label is a positive (see module docstring)."""
    if kind == "presence":
        return label == PRESENT
    if kind == "binary":
        return label == YES
    return label != NOT_MENTIONED


def labels_equal(gold: Label, pred: Label, kind: Kind, tolerance: float = 0.0) -> bool:
    """Exact label equality; numbers within `tolerance` (absolute)."""
    if kind == "number" and _is_number(gold) and _is_number(pred):
        return abs(float(gold) - float(pred)) <= tolerance + 1e-9
    if isinstance(gold, str) or isinstance(pred, str):
        return gold == pred
    return float(gold) == float(pred)


def _is_number(value: Label) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(gold: Label, pred: Label, kind: Kind, tolerance: float = 0.0) -> BinaryCounts:
    """The counts one report contributes for one variable."""
    gold_pos, pred_pos = is_stated(gold, kind), is_stated(pred, kind)
    if gold_pos and pred_pos:
        if kind in ("presence", "binary") or labels_equal(gold, pred, kind, tolerance):
            return BinaryCounts(tp=1, n=1)
        return BinaryCounts(fp=1, fn=1, n=1)
    if pred_pos:
        return BinaryCounts(fp=1, n=1)
    if gold_pos:
        return BinaryCounts(fn=1, n=1)
    return BinaryCounts(tn=1, n=1)


def binary_counts(
    gold: Sequence[Label], pred: Sequence[Label], kind: Kind, tolerance: float = 0.0
) -> BinaryCounts:
    """Summed counts over reports (`gold[i]` and `pred[i]` are the same report)."""
    _same_length(gold, pred)
    total = BinaryCounts()
    for g, p in zip(gold, pred, strict=True):
        total = total + compare(g, p, kind, tolerance)
    return total


def _same_length(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"gold and predictions differ in length ({len(a)} != {len(b)})")


def class_label(label: Label) -> str:
    """A label as a confusion-matrix class name (`2`, `26.0`, `present`)."""
    return label if isinstance(label, str) else str(label)


@dataclass(frozen=True)
class ConfusionMatrix:
    """Rows = gold class, columns = predicted class, in `labels` order."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def class_f1(self) -> dict[str, float | None]:
        """One-vs-rest F1 per class (None when the class occurs on neither side)."""
        result: dict[str, float | None] = {}
        for i, label in enumerate(self.labels):
            tp = self.counts[i][i]
            fp = sum(self.counts[r][i] for r in range(len(self.labels))) - tp
            fn = sum(self.counts[i]) - tp
            result[label] = ratio(2 * tp, 2 * tp + fp + fn)
        return result

    def macro_f1(self) -> float | None:
        """Mean of the defined per-class F1 values."""
        return mean_defined(list(self.class_f1().values()))


def _sort_key(label: str) -> tuple[int, float, str]:
    if label == NOT_MENTIONED:
        return (2, 0.0, label)
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def confusion_matrix(
    gold: Sequence[Label], pred: Sequence[Label], classes: Sequence[Label] = ()
) -> ConfusionMatrix:
    """Confusion matrix; `classes` fixes the order, other labels seen are appended sorted."""
    _same_length(gold, pred)
    labels = [class_label(c) for c in classes]
    seen = {class_label(x) for x in (*gold, *pred)} - set(labels)
    labels += sorted(seen, key=_sort_key)
    index = {label: i for i, label in enumerate(labels)}
    grid = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        grid[index[class_label(g)]][index[class_label(p)]] += 1
    return ConfusionMatrix(tuple(labels), tuple(tuple(row) for row in grid))


@dataclass(frozen=True)
class VariableSpec:
    """What the metric core needs to know about one variable."""

    id: str
    kind: Kind
    classes: tuple[Label, ...] = ()
    tolerance: float = 0.0


@dataclass(frozen=True)
class VariableMetrics:
    """All metrics of one variable over one set of reports."""

    variable_id: str
    kind: Kind
    counts: BinaryCounts
    precision: float | None
    recall: float | None
    f1: float | None
    specificity: float | None
    accuracy: float | None
    class_accuracy: float | None
    class_macro_f1: float | None
    confusion: ConfusionMatrix | None
    mae: float | None = None
    within_tolerance: float | None = None
    ci: dict[str, Interval] = field(default_factory=dict)


def variable_metrics(
    spec: VariableSpec, gold: Sequence[Label], pred: Sequence[Label]
) -> VariableMetrics:
    """Per-variable metrics (no confidence intervals: see `evaluate_labels`)."""
    counts = binary_counts(gold, pred, spec.kind, spec.tolerance)
    correct = [
        labels_equal(g, p, spec.kind, spec.tolerance) for g, p in zip(gold, pred, strict=True)
    ]
    classes: tuple[Label, ...]
    if spec.kind == "presence":
        classes = PRESENCE_CLASSES
    elif spec.kind == "binary":
        classes = BINARY_CLASSES
    else:
        classes = (*spec.classes, NOT_MENTIONED)
    confusion = None if spec.kind == "number" else confusion_matrix(gold, pred, classes)
    mae = within = None
    if spec.kind == "number":
        both = [
            (float(g), float(p))
            for g, p in zip(gold, pred, strict=True)
            if _is_number(g) and _is_number(p)
        ]
        mae = mean_defined([abs(g - p) for g, p in both])
        stated = [i for i, g in enumerate(gold) if is_stated(g, "number")]
        within = ratio(sum(1 for i in stated if correct[i]), len(stated))
    return VariableMetrics(
        variable_id=spec.id,
        kind=spec.kind,
        counts=counts,
        precision=counts.precision,
        recall=counts.recall,
        f1=counts.f1,
        specificity=counts.specificity,
        accuracy=counts.accuracy,
        class_accuracy=ratio(sum(correct), len(correct)),
        class_macro_f1=None if confusion is None else confusion.macro_f1(),
        confusion=confusion,
        mae=mae,
        within_tolerance=within,
    )


@dataclass(frozen=True)
class PairMetrics:
    """Relation metrics for (item, attribute) pairs, e.g. lesion–location."""

    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    gold_items: int
    items_correct: int
    item_accuracy: float | None
    reports: int
    report_exact: float | None
    ci: dict[str, Interval] = field(default_factory=dict)


def _pair_report(gold: Set[Pair], pred: Set[Pair]) -> tuple[int, int, int, int, int, int]:
    """(tp, fp, fn, gold items, items right, exact) for one report."""
    items = {item for item, _ in gold}
    right = sum(
        1
        for item in items
        if {a for i, a in gold if i == item} == {a for i, a in pred if i == item}
    )
    return (
        len(gold & pred),
        len(pred - gold),
        len(gold - pred),
        len(items),
        right,
        int(gold == pred),
    )


def pair_metrics(gold: Sequence[Set[Pair]], pred: Sequence[Set[Pair]]) -> PairMetrics:
    """Pair P/R/F1 (micro over reports), per-item accuracy and report-level exactness."""
    _same_length(gold, pred)
    rows = [_pair_report(g, p) for g, p in zip(gold, pred, strict=True)]
    tp, fp, fn, items, right, exact = (
        (sum(col) for col in zip(*rows, strict=True)) if rows else (0,) * 6
    )
    return PairMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=ratio(tp, tp + fp),
        recall=ratio(tp, tp + fn),
        f1=ratio(2 * tp, 2 * tp + fp + fn),
        gold_items=items,
        items_correct=right,
        item_accuracy=ratio(right, items),
        reports=len(rows),
        report_exact=ratio(exact, len(rows)),
    )


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two systems on the same items."""

    n: int
    only_a: int
    only_b: int
    p_value: float


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Two-sided exact binomial test on the discordant pairs (b = only A right, c = only B)."""
    _same_length(a_correct, b_correct)
    b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    discordant = b + c
    if discordant == 0:
        return McNemar(len(a_correct), b, c, 1.0)
    tail = sum(math.comb(discordant, k) for k in range(min(b, c) + 1)) / 2**discordant
    return McNemar(len(a_correct), b, c, min(1.0, 2 * tail))


def agreement(
    a: Sequence[Label], b: Sequence[Label], kind: Kind, tolerance: float = 0.0
) -> float | None:
    """Share of items on which two systems give the same label."""
    _same_length(a, b)
    return ratio(
        sum(labels_equal(x, y, kind, tolerance) for x, y in zip(a, b, strict=True)), len(a)
    )


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> IntArray:
    """`resamples` × `n` report indices drawn with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, n, size=(resamples, n), dtype=np.int64)
        if n
        else np.zeros((resamples, 0), np.int64)
    )


def percentile_interval(samples: FloatArray, level: float = CONFIDENCE) -> Interval | None:
    """Percentile interval of the defined (finite) samples; None when too few are defined."""
    finite = samples[np.isfinite(samples)]
    if samples.size == 0 or finite.size < _MIN_DEFINED_SHARE * samples.size:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(round(float(low), 6), round(float(high), 6))


def _safe_div(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def bootstrap_weights(n: int, resamples: int = RESAMPLES, seed: int = 0) -> FloatArray:
    """How often each report is drawn in each resample (`resamples` × `n`), from
    `bootstrap_indices`: a resampled sum is then one matrix product (memory `resamples` × `n`)."""
    idx = bootstrap_indices(n, resamples, seed)
    flat = (np.arange(resamples, dtype=np.int64)[:, None] * n + idx).ravel()
    counts = np.bincount(flat, minlength=resamples * n)
    return np.asarray(counts.reshape(resamples, n), dtype=np.float64)


def _resampled_binary(rows: IntArray, weights: FloatArray) -> dict[str, FloatArray]:
    """Per resample: precision, recall, f1, specificity, accuracy from per-report count rows."""
    sums = weights @ rows.astype(np.float64)
    tp, fp, fn, tn, n = (sums[:, k] for k in range(5))
    return {
        "precision": _safe_div(tp, tp + fp),
        "recall": _safe_div(tp, tp + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "specificity": _safe_div(tn, tn + fp),
        "accuracy": _safe_div(tp + tn, n),
    }


def _nanmean_rows(columns: list[FloatArray], length: int) -> FloatArray:
    if not columns:
        return np.full(length, np.nan)
    stacked = np.vstack(columns)
    defined = np.isfinite(stacked)
    count = defined.sum(axis=0).astype(np.float64)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    return _safe_div(total, count)


def _intervals(samples: Mapping[str, FloatArray]) -> dict[str, Interval]:
    result: dict[str, Interval] = {}
    for name, values in samples.items():
        interval = percentile_interval(values)
        if interval is not None:
            result[name] = interval
    return result


@dataclass(frozen=True)
class LabelMetrics:
    """Everything measured for one system (stage) on one set of labelled reports."""

    reports: int
    variables: dict[str, VariableMetrics]
    micro: BinaryCounts
    macro: dict[str, float | None]
    exact_accuracy: float | None
    negative_reports: int
    negative_report_specificity: float | None
    pairs: PairMetrics | None
    episodes: PairMetrics | None
    sizes: PairMetrics | None = None
    sides: PairMetrics | None = None
    grades: PairMetrics | None = None
    severities: PairMetrics | None = None
    ci: dict[str, Interval] = field(default_factory=dict)


MACRO_KEYS = ("precision", "recall", "f1", "specificity", "accuracy", "class_accuracy")


def report_correct(
    specs: Sequence[VariableSpec], gold: Mapping[str, Label], pred: Mapping[str, Label]
) -> bool:
    """True when every variable label of one report is right."""
    return all(labels_equal(gold[s.id], pred[s.id], s.kind, s.tolerance) for s in specs)


def _has_positive(specs: Sequence[VariableSpec], row: Mapping[str, Label]) -> bool:
    return any(is_stated(row[s.id], s.kind) for s in specs)


def evaluate_labels(
    specs: Sequence[VariableSpec],
    gold: Sequence[Mapping[str, Label]],
    pred: Sequence[Mapping[str, Label]],
    *,
    gold_pairs: Sequence[Set[Pair]] | None = None,
    pred_pairs: Sequence[Set[Pair]] | None = None,
    gold_episodes: Sequence[Set[Pair]] | None = None,
    pred_episodes: Sequence[Set[Pair]] | None = None,
    gold_sizes: Sequence[Set[Pair]] | None = None,
    pred_sizes: Sequence[Set[Pair]] | None = None,
    gold_sides: Sequence[Set[Pair]] | None = None,
    pred_sides: Sequence[Set[Pair]] | None = None,
    gold_grades: Sequence[Set[Pair]] | None = None,
    pred_grades: Sequence[Set[Pair]] | None = None,
    gold_severities: Sequence[Set[Pair]] | None = None,
    pred_severities: Sequence[Set[Pair]] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> LabelMetrics:
    """All metrics with bootstrap intervals; row i of every sequence is the same report."""
    _same_length(gold, pred)
    n = len(gold)
    weights = bootstrap_weights(n, resamples, seed)
    variables: dict[str, VariableMetrics] = {}
    per_variable_samples: dict[str, dict[str, FloatArray]] = {}
    for spec in specs:
        g = [row[spec.id] for row in gold]
        p = [row[spec.id] for row in pred]
        metrics = variable_metrics(spec, g, p)
        rows = np.array(
            [compare(a, b, spec.kind, spec.tolerance).as_row() for a, b in zip(g, p, strict=True)],
            dtype=np.int64,
        ).reshape(n, 5)
        samples = _resampled_binary(rows, weights)
        correct = np.array(
            [labels_equal(a, b, spec.kind, spec.tolerance) for a, b in zip(g, p, strict=True)],
            dtype=np.float64,
        )
        samples["class_accuracy"] = _resampled_mean(correct, weights)
        per_variable_samples[spec.id] = samples
        variables[spec.id] = _with_ci(metrics, _intervals(samples))
    micro = BinaryCounts()
    for metrics in variables.values():
        micro = micro + metrics.counts
    macro = {key: mean_defined([getattr(m, key) for m in variables.values()]) for key in MACRO_KEYS}
    exact = np.array(
        [report_correct(specs, g, p) for g, p in zip(gold, pred, strict=True)], dtype=np.float64
    )
    negatives = [i for i, row in enumerate(gold) if not _has_positive(specs, row)]
    clean = sum(1 for i in negatives if not _has_positive(specs, pred[i]))
    ci_samples = {
        f"macro_{key}": _nanmean_rows([s[key] for s in per_variable_samples.values()], resamples)
        for key in MACRO_KEYS
    }
    ci_samples["exact_accuracy"] = _resampled_mean(exact, weights)
    return LabelMetrics(
        reports=n,
        variables=variables,
        micro=micro,
        macro=macro,
        exact_accuracy=ratio(float(exact.sum()), n),
        negative_reports=len(negatives),
        negative_report_specificity=ratio(clean, len(negatives)),
        pairs=_pairs_with_ci(gold_pairs, pred_pairs, weights),
        episodes=_pairs_with_ci(gold_episodes, pred_episodes, weights),
        sizes=_pairs_with_ci(gold_sizes, pred_sizes, weights),
        sides=_pairs_with_ci(gold_sides, pred_sides, weights),
        grades=_pairs_with_ci(gold_grades, pred_grades, weights),
        severities=_pairs_with_ci(gold_severities, pred_severities, weights),
        ci=_intervals(ci_samples),
    )


def _resampled_mean(values: FloatArray, weights: FloatArray) -> FloatArray:
    return _safe_div(weights @ values, np.full(len(weights), float(values.size)))


def _with_ci(metrics: VariableMetrics, ci: dict[str, Interval]) -> VariableMetrics:
    return replace(metrics, ci=ci)


def _pairs_with_ci(
    gold: Sequence[Set[Pair]] | None, pred: Sequence[Set[Pair]] | None, weights: FloatArray
) -> PairMetrics | None:
    if gold is None or pred is None:
        return None
    metrics = pair_metrics(gold, pred)
    rows = np.array(
        [_pair_report(g, p) for g, p in zip(gold, pred, strict=True)], dtype=np.int64
    ).reshape(len(gold), 6)
    sums = weights @ rows.astype(np.float64)
    tp, fp, fn, items, right, exact = (sums[:, k] for k in range(6))
    samples = {
        "precision": _safe_div(tp, tp + fp),
        "recall": _safe_div(tp, tp + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "item_accuracy": _safe_div(right, items),
        "report_exact": _safe_div(exact, np.full(len(weights), float(len(gold)))),
    }
    return replace(metrics, ci=_intervals(samples))


Statistic = Callable[[IntArray], float | None]


def bootstrap_ci(
    n: int,
    statistic: Statistic,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = CONFIDENCE,
) -> Interval | None:
    """Percentile bootstrap interval of any statistic of a resampled index array (slow path)."""
    idx = bootstrap_indices(n, resamples, seed)
    values = np.array(
        [np.nan if (v := statistic(row)) is None else v for row in idx], dtype=np.float64
    )
    return percentile_interval(values, level)
