"""`radbridge eval` on the labelled insights set (issue 20; tests/fixtures/labelled/README.md):
the insights step's rules against the gold of each insight kind, P/R/F1 with 95% bootstrap CIs.

How each kind is matched, per report (a multiset: the n-th equal item is its own item):
- `followups`: (modality, timing) with `conditional` as the attribute; timing is `due`, or
  `due_start..due_end`, or none: the issue's "modality and timing both right";
- `critical`: the finding id;
- `communications`: that a communication is stated (one item per statement);
- `communication recipients`: (recipient, time) as written (case-insensitive);
- `rads`: (system, category) with the side as the attribute;
- `mismatches`: the mismatch kind (laterality, sex, age, exam_type).
A file is scored on the kinds it labels: those whose gold key every record carries
(mismatches.jsonl labels only `mismatches`; `communication recipients` needs `communications`).
An item is right only with its attribute (the n-th equal item and attribute is numbered n, so a
wrong attribute is one false positive and one false negative); `attribute accuracy` is the share
of gold items predicted with exactly their attribute. No report text leaves this module.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from conformance.errors import DatasetError, EvaluationError
from conformance.metrics import Pair, PairMetrics, evaluate_labels
from mappings.insights.model import Insights
from mappings.report import Report
from workers.insights.extract import InsightContext, extract_insights

KINDS = (
    "followups",
    "critical",
    "communications",
    "communication recipients",
    "rads",
    "mismatches",
)
GOLD_KEY = {"communication recipients": "communications"}
Row = dict[str, Any]
Key = tuple[str, str | None]


def is_insights(path: Path) -> bool:
    """A JSONL file whose first record is of kind `insights`."""
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        return bool(json.loads(first).get("kind") == "insights")
    except (OSError, ValueError, AttributeError):
        return False


def load_insight_rows(path: Path, split: str | None = None) -> list[Row]:
    """The records of an insights set (only `split`'s half when given)."""
    rows: list[Row] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(str(path), number, f"not JSON ({exc})") from None
            if not isinstance(row, dict) or "text" not in row or "gold" not in row:
                raise DatasetError(str(path), number, "an insights record needs text and gold")
            if split is None or row.get("split") == split:
                rows.append(row)
    return rows


def _timing(due: object, start: object, end: object) -> str:
    if due:
        return str(due)
    return f"{start}..{end}" if start or end else "none"


def _numbered(keys: Iterable[Key]) -> frozenset[Pair]:
    seen: Counter[Key] = Counter()
    pairs: set[Pair] = set()
    for item, attribute in keys:
        seen[(item, attribute)] += 1
        pairs.add((f"{item}#{seen[(item, attribute)]}", attribute))
    return frozenset(pairs)


def gold_pairs(gold: Row, kind: str) -> frozenset[Pair]:
    """The gold items of one kind of one record, as (item, attribute) pairs."""
    if kind == "followups":
        return _numbered(
            (
                f"{g['modality']}|{_timing(g['due'], g['due_start'], g['due_end'])}",
                "conditional" if g["conditional"] else None,
            )
            for g in gold["followups"]
        )
    if kind == "critical":
        return _numbered((g["finding"], None) for g in gold["critical"])
    if kind == "communications":
        return _numbered(("communication", None) for _ in gold["communications"])
    if kind == "communication recipients":
        return _numbered(
            (str(g["recipient"]).casefold(), (g["time"] or "").casefold() or None)
            for g in gold["communications"]
        )
    if kind == "mismatches":
        return _numbered((g["kind"], None) for g in gold["mismatches"])
    return _numbered((f"{g['system']}|{g['category']}", g["side"]) for g in gold["rads"])


def labelled_kinds(rows: Sequence[Row]) -> tuple[str, ...]:
    """The kinds every record of `rows` has gold for (in `KINDS` order)."""
    return tuple(
        kind for kind in KINDS if all(GOLD_KEY.get(kind, kind) in row["gold"] for row in rows)
    )


def predicted_pairs(insights: Insights, kind: str) -> frozenset[Pair]:
    """What the insights step found, in the same pairs as `gold_pairs`."""
    if kind == "followups":
        return _numbered(
            (
                f"{f.modality}|{_timing(f.due, f.due_start, f.due_end)}",
                "conditional" if f.conditional else None,
            )
            for f in insights.followups
        )
    if kind == "critical":
        return _numbered((c.finding, None) for c in insights.critical)
    if kind == "communications":
        return _numbered(("communication", None) for _ in insights.communications)
    if kind == "communication recipients":
        return _numbered(
            (str(c.recipient).casefold(), (c.time or "").casefold() or None)
            for c in insights.communications
        )
    if kind == "mismatches":
        return _numbered((m.kind, None) for m in insights.mismatches)
    return _numbered((f"{r.system}|{r.category}", r.side) for r in insights.rads)


def _report(row: Row) -> Report:
    return Report(
        source_format="fhir",
        report_id=str(row["id"]),
        text=str(row["text"]),
        language=row.get("language"),
    )


def _date(raw: object) -> date | None:
    """An ISO date, None when absent or impossible ("1985-02-30")."""
    try:
        return date.fromisoformat(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


def _context(row: Row) -> InsightContext:
    context = row.get("context") or {}
    return InsightContext(
        report_date=_date(context.get("report_date")),
        exam=context.get("exam"),
        patient_sex=context.get("patient_sex"),
        birth_date=_date(context.get("birth_date")),
    )


def evaluate_insight_rows(
    rows: Sequence[Row],
    *,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> tuple[dict[str, PairMetrics], float]:
    """Pair metrics per insight kind (with CIs) and the seconds the rules took."""
    predicted: list[Insights] = []
    started = time.perf_counter()
    for row in rows:
        predicted.append(extract_insights(_report(row), _context(row)))
        if progress is not None:
            progress()
    seconds = time.perf_counter() - started
    results: dict[str, PairMetrics] = {}
    for kind in labelled_kinds(rows):
        metrics = evaluate_labels(
            (),
            [{} for _ in rows],
            [{} for _ in rows],
            gold_pairs=[gold_pairs(row["gold"], kind) for row in rows],
            pred_pairs=[predicted_pairs(p, kind) for p in predicted],
            resamples=resamples,
            seed=seed,
        )
        assert metrics.pairs is not None
        results[kind] = metrics.pairs
    return results, seconds


def insights_json(
    path: Path, split: str | None, metrics: dict[str, PairMetrics], seconds: float, reports: int
) -> dict[str, Any]:
    """metrics.json of an insights evaluation."""
    kinds: dict[str, Any] = {}
    for kind, m in metrics.items():
        kinds[kind] = {
            "tp": m.tp,
            "fp": m.fp,
            "fn": m.fn,
            "precision": m.precision,
            "recall": m.recall,
            "f1": m.f1,
            "attribute_accuracy": m.item_accuracy,
            "report_exact": m.report_exact,
            "ci": {k: [v.low, v.high] for k, v in m.ci.items()},
        }
    return {
        "dataset": str(path),
        "format": "insights",
        "split": split,
        "stage": "rules",
        "created": datetime.now(UTC).isoformat(),
        "reports": reports,
        "seconds_total": seconds,
        "kinds": kinds,
    }


def _cell(value: float | None, interval: Any) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{interval.low:.2f}, {interval.high:.2f}]" if interval else "")


def insights_table(metrics: dict[str, PairMetrics], title: str) -> Table:
    """One row per insight kind: counts, P/R/F1 (95% CI) and attribute accuracy."""
    table = Table(title=title)
    for column in ("kind", "gold", "tp", "fp", "fn", "precision", "recall", "F1", "attribute"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, m in metrics.items():
        table.add_row(
            kind,
            str(m.tp + m.fn),
            str(m.tp),
            str(m.fp),
            str(m.fn),
            _cell(m.precision, m.ci.get("precision")),
            _cell(m.recall, m.ci.get("recall")),
            _cell(m.f1, m.ci.get("f1")),
            _cell(m.item_accuracy, None),
        )
    return table


def run_insights_evaluation(
    path: Path, split: str | None, *, resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], Table]:
    """Evaluate the insights rules on `path` (one half with `split`): metrics.json and a table."""
    rows = load_insight_rows(path, split)
    if not rows:
        raise EvaluationError(f"{path}: no insights records" + (f" in {split}" if split else ""))
    metrics, seconds = evaluate_insight_rows(rows, resamples=resamples, seed=seed)
    title = f"radbridge eval: insights (rules){f', {split} half' if split else ''}"
    return insights_json(path, split, metrics, seconds, len(rows)), insights_table(metrics, title)


def insights_html(result: dict[str, Any]) -> str:
    """report.html of an insights evaluation: one table of the kinds (no report text)."""
    from html import escape

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = []
    for kind, m in result["kinds"].items():
        ci = m["ci"].get("f1")
        f1 = fmt(m["f1"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        cells = [kind, m["tp"] + m["fn"], m["tp"], m["fp"], m["fn"], fmt(m["precision"])]
        cells += [fmt(m["recall"]), f1, fmt(m["attribute_accuracy"])]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("kind", "gold", "tp", "fp", "fn", "precision", "recall", "F1 (95% CI)", "attr.")
    )
    split = result["split"] or "all records"
    return (
        "<!doctype html><meta charset='utf-8'><title>radbridge eval: insights</title>"
        f"<h1>radbridge eval: insights ({escape(split)}, stage rules)</h1>"
        f"<p>{result['reports']} reports, {escape(result['dataset'])}</p>"
        f"<table border='1'><tr>{head}</tr>{''.join(rows)}</table>\n"
    )
