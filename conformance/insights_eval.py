"""`radbridge eval` on the labelled insights set (issue 20; tests/fixtures/labelled/README.md):
the insights step against the gold of each insight kind, P/R/F1 with 95% bootstrap CIs. Stage
`rules` scores the rules; `llm` (or `hybrid`: the insights step's model path is the same) scores
what that path delivers, the rules merged with the model's checked items
(`workers.insights.llm`), and beside it the model alone on the kinds it is asked (follow-ups,
critical results, RADS); a report whose model answer is not valid counts as the model finding
nothing (`model_invalid` says how many).

How each kind is matched, per report (a multiset: the n-th equal item is its own item):
- `followups`: (modality, timing) with `conditional` as the attribute; timing is `due`, or
  `due_start..due_end`, or none: the issue's "modality and timing both right";
- `critical`: the finding id;
- `communications`: that a communication is stated (one item per statement);
- `communication recipients`: (recipient, time) as written (case-insensitive);
- `rads`: (system, category) with the side as the attribute;
- `mismatches`: the mismatch kind (laterality, sex, age, exam_type);
- `sizes`: the dimensions in mm in the order written ("16x11x10"); the finding phrase is free
  text on both sides and is not compared (two sizes of one report with equal dimensions are
  rare, and the gold keeps a restatement out as the step does).
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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from conformance.errors import DatasetError, EvaluationError
from conformance.metrics import Pair, PairMetrics, evaluate_labels
from mappings.insights.critical_list import load_critical_list
from mappings.insights.model import Insights
from mappings.report import Report
from workers.errors import ExtractionError
from workers.extraction_engine import ExtractionEngine
from workers.insights.extract import InsightContext, extract_insights
from workers.insights.llm import merge_insights, model_insights

KINDS = (
    "followups",
    "critical",
    "communications",
    "communication recipients",
    "rads",
    "mismatches",
    "sizes",
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


def _dims(dims_mm: Iterable[float]) -> str:
    """Dimensions in mm as one key ("16x11x10"), 0.01 mm apart counting as equal."""
    return "x".join(f"{round(float(d), 2):g}" for d in dims_mm)


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
    if kind == "sizes":
        return _numbered((_dims(g["dims_mm"]), None) for g in gold["sizes"])
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
    if kind == "sizes":
        return _numbered((_dims(s.size.dims_mm), None) for s in insights.sizes)
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


MODEL_KINDS = ("followups", "critical", "rads")
"""The kinds the model is asked for (`workers.insights.llm`)."""


@dataclass
class ModelPath:
    """What the model path of an evaluation found: per report the model's checked insights
    (empty when its answer was not valid) and how many answers were not valid."""

    engine: ExtractionEngine
    max_tokens: int
    found: list[Insights] = field(default_factory=list)
    invalid: int = 0

    def insights(self, report: Report, rules: Insights, context: InsightContext) -> Insights:
        """`rules` merged with the model's insights of `report` (recorded in `found`)."""
        findings = context.critical_findings or load_critical_list()
        try:
            found = model_insights(
                report, self.engine, findings, context.report_date, max_tokens=self.max_tokens
            )
        except ExtractionError:
            self.invalid += 1
            found = Insights()
        self.found.append(found)
        return merge_insights(rules, found, findings)


def score_kinds(
    rows: Sequence[Row],
    predicted: Sequence[Insights],
    kinds: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, PairMetrics]:
    """Pair metrics (with CIs) of `predicted` against the rows' gold, per kind."""
    results: dict[str, PairMetrics] = {}
    for kind in kinds:
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
    return results


def evaluate_insight_rows(
    rows: Sequence[Row],
    *,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
    model: ModelPath | None = None,
) -> tuple[dict[str, PairMetrics], float]:
    """Pair metrics per insight kind (with CIs) and the seconds the step took (the rules, or
    with `model` the model path, whose own finds `model.found` collects)."""
    predicted: list[Insights] = []
    started = time.perf_counter()
    for row in rows:
        report, context = _report(row), _context(row)
        insights = extract_insights(report, context)
        if model is not None:
            insights = model.insights(report, insights, context)
        predicted.append(insights)
        if progress is not None:
            progress()
    seconds = time.perf_counter() - started
    kinds = labelled_kinds(rows)
    return score_kinds(rows, predicted, kinds, resamples=resamples, seed=seed), seconds


def _kinds_json(metrics: dict[str, PairMetrics]) -> dict[str, Any]:
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
    return kinds


def insights_json(
    path: Path,
    split: str | None,
    metrics: dict[str, PairMetrics],
    seconds: float,
    reports: int,
    *,
    stage: str = "rules",
    model_only: dict[str, PairMetrics] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json of an insights evaluation (`model_only` and `model`: the model path's)."""
    result: dict[str, Any] = {
        "dataset": str(path),
        "format": "insights",
        "split": split,
        "stage": stage,
        "created": datetime.now(UTC).isoformat(),
        "reports": reports,
        "seconds_total": seconds,
        "kinds": _kinds_json(metrics),
    }
    if model_only is not None:
        result["model_only"] = _kinds_json(model_only)
    if model is not None:
        result["model"] = model
    return result


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
    path: Path,
    split: str | None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    stage: str = "rules",
    engine: Callable[[], ExtractionEngine] | None = None,
    max_tokens: int = 768,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> tuple[dict[str, Any], list[Table]]:
    """Evaluate the insights step on `path` (one half with `split`): metrics.json and tables.
    `stage` llm or hybrid needs `engine` (the model path; rules otherwise)."""
    rows = load_insight_rows(path, split)
    if not rows:
        raise EvaluationError(f"{path}: no insights records" + (f" in {split}" if split else ""))
    model = None
    if stage != "rules":
        if engine is None:
            raise EvaluationError(f"--stage {stage} needs a model engine")
        model = ModelPath(engine(), max_tokens)
    tick = progress(len(rows)) if progress is not None else None
    metrics, seconds = evaluate_insight_rows(
        rows, resamples=resamples, seed=seed, progress=tick, model=model
    )
    half = f", {split} half" if split else ""
    tables = [insights_table(metrics, f"radbridge eval: insights ({stage}{half})")]
    if model is None:
        return insights_json(path, split, metrics, seconds, len(rows)), tables
    kinds = [k for k in labelled_kinds(rows) if k in MODEL_KINDS]
    alone = score_kinds(rows, model.found, kinds, resamples=resamples, seed=seed)
    tables.append(insights_table(alone, f"the model alone (before the merge){half}"))
    info = {
        "name": model.engine.model_info.name,
        "sha256": model.engine.model_info.sha256,
        "invalid_answers": model.invalid,
    }
    result = insights_json(
        path, split, metrics, seconds, len(rows), stage=stage, model_only=alone, model=info
    )
    return result, tables


def insights_html(result: dict[str, Any]) -> str:
    """report.html of an insights evaluation: one table of the kinds (no report text)."""
    from html import escape

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def rows(kinds: dict[str, Any]) -> list[str]:
        lines = []
        for kind, m in kinds.items():
            ci = m["ci"].get("f1")
            f1 = fmt(m["f1"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            cells = [kind, m["tp"] + m["fn"], m["tp"], m["fp"], m["fn"], fmt(m["precision"])]
            cells += [fmt(m["recall"]), f1, fmt(m["attribute_accuracy"])]
            lines.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
        return lines

    head = "".join(
        f"<th>{h}</th>"
        for h in ("kind", "gold", "tp", "fp", "fn", "precision", "recall", "F1 (95% CI)", "attr.")
    )
    split = result["split"] or "all records"
    html = (
        "<!doctype html><meta charset='utf-8'><title>radbridge eval: insights</title>"
        f"<h1>radbridge eval: insights ({escape(split)}, stage {escape(result['stage'])})</h1>"
        f"<p>{result['reports']} reports, {escape(result['dataset'])}</p>"
        f"<table border='1'><tr>{head}</tr>{''.join(rows(result['kinds']))}</table>\n"
    )
    if "model_only" in result:
        model = result.get("model") or {}
        html += (
            f"<h2>The model alone ({escape(str(model.get('name', '')))}, before the merge; "
            f"{model.get('invalid_answers', 0)} answers not valid)</h2>"
            f"<table border='1'><tr>{head}</tr>{''.join(rows(result['model_only']))}</table>\n"
        )
    return html
