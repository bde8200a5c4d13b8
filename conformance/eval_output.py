"""What `radbridge eval` writes: metrics.json and the summary tables (the HTML report is
`conformance.report_html`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from conformance.eval_results import EvaluationResult, StageResult, TaskResult
from conformance.metrics import Interval, PairMetrics


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def result_json(result: EvaluationResult) -> dict[str, Any]:
    """metrics.json content (plain JSON types; undefined metrics are null)."""
    data: dict[str, Any] = _jsonable(asdict(result))
    for task, raw in zip(result.tasks, data["tasks"], strict=True):
        for name, stage in task.stages.items():
            micro = stage.metrics.micro
            raw["stages"][name]["metrics"]["micro_scores"] = _jsonable(
                {
                    "precision": micro.precision,
                    "recall": micro.recall,
                    "f1": micro.f1,
                    "specificity": micro.specificity,
                    "accuracy": micro.accuracy,
                }
            )
    return data


def write_metrics_json(result: EvaluationResult, path: Path) -> None:
    """Write metrics.json (atomically)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(result_json(result), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "utf-8",
    )
    tmp.replace(path)


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for display ("n/a" when undefined)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(stage: StageResult, key: str) -> str:
    """`value [low, high]` of a top-level metric."""
    interval = stage.metrics.ci.get(key)
    if key.startswith("macro_"):
        value = stage.metrics.macro.get(key.removeprefix("macro_"))
    else:
        value = getattr(stage.metrics, key)
    text = fmt(value)
    if interval is not None:
        text += f" [{interval.low:.3f}, {interval.high:.3f}]"
    return text


def _pair_ci(pairs: PairMetrics, key: str) -> str:
    return _with_ci(getattr(pairs, key), pairs.ci.get(key))


def _summary_rows(stage: StageResult) -> list[tuple[str, str]]:
    m, t = stage.metrics, stage.timing
    rows = [
        ("cases", str(m.reports)),
        ("micro precision", fmt(m.micro.precision)),
        ("micro recall", fmt(m.micro.recall)),
        ("micro F1", fmt(m.micro.f1)),
        ("macro precision", fmt_ci(stage, "macro_precision")),
        ("macro recall", fmt_ci(stage, "macro_recall")),
        ("macro F1", fmt_ci(stage, "macro_f1")),
        ("macro specificity", fmt_ci(stage, "macro_specificity")),
        ("macro accuracy", fmt_ci(stage, "macro_accuracy")),
        ("macro class accuracy", fmt_ci(stage, "macro_class_accuracy")),
        ("report exact accuracy", fmt_ci(stage, "exact_accuracy")),
        (
            f"specificity on the {m.negative_reports} all-negative cases",
            fmt(m.negative_report_specificity),
        ),
    ]
    for label, pairs in (("lesion–location", m.pairs), ("diagnosis–episode", m.episodes)):
        if pairs is not None:
            rows.append((f"{label} pair F1", fmt(pairs.f1)))
            rows.append((f"{label} per-item accuracy", fmt(pairs.item_accuracy)))
    for name, attribute in (
        ("size", m.sizes),
        ("side", m.sides),
        ("grade", m.grades),
        ("severity", m.severities),
    ):
        if attribute is not None:
            found = f"{attribute.tp}/{attribute.tp + attribute.fn}"
            rows.append((f"{name} recall ({found})", _pair_ci(attribute, "recall")))
            rows.append((f"{name} precision", _pair_ci(attribute, "precision")))
            rows.append((f"{name} F1", _pair_ci(attribute, "f1")))
    if stage.failed:
        rows.append(("extractions without valid output", str(len(stage.failed))))
    rows.append(("seconds / case (mean)", fmt(t.seconds_per_report_mean, 4)))
    rows.append(("tokens / s (output)", fmt(t.tokens_per_second, 1)))
    return rows


def _with_ci(value: float | None, interval: Interval | None) -> str:
    text = fmt(value)
    if interval is not None and value is not None:
        text += f" [{interval.low:.2f}, {interval.high:.2f}]"
    return text


def _binary_tables(task: TaskResult) -> list[Table]:
    """Per stage, one row per finding: positives, P/R/F1/specificity with 95% bootstrap CIs."""
    tables: list[Table] = []
    for name, stage in task.stages.items():
        table = Table(title=f"{task.task} ({name}): present vs not, per finding (95% CI)")
        for column in ("finding", "positives", "precision", "recall", "F1", "specificity"):
            table.add_column(column, justify="left" if column == "finding" else "right")
        for spec in task.variables:
            vm = stage.metrics.variables[spec.id]
            table.add_row(
                spec.id,
                str(vm.counts.tp + vm.counts.fn),
                _with_ci(vm.precision, vm.ci.get("precision")),
                _with_ci(vm.recall, vm.ci.get("recall")),
                _with_ci(vm.f1, vm.ci.get("f1")),
                _with_ci(vm.specificity, vm.ci.get("specificity")),
            )
        tables.append(table)
    return tables


def summary_tables(result: EvaluationResult) -> list[Table]:
    """Rich tables per task: measures × stages (95% CI in brackets), F1 per variable, McNemar."""
    tables: list[Table] = []
    for task in result.tasks:
        table = Table(title=f"radbridge eval: {task.task} ({result.format})")
        table.add_column("measure")
        for name in task.stages:
            table.add_column(name, justify="right")
        columns = [_summary_rows(stage) for stage in task.stages.values()]
        for index, (label, _) in enumerate(columns[0] if columns else []):
            table.add_row(label, *(column[index][1] for column in columns))
        tables.append(table)
        if all(spec.kind == "binary" for spec in task.variables):
            tables.extend(_binary_tables(task))
            continue
        per_variable = Table(title=f"{task.task}: F1 per variable (class accuracy)")
        per_variable.add_column("variable")
        per_variable.add_column("kind")
        for name in task.stages:
            per_variable.add_column(name, justify="right")
        for spec in task.variables:
            cells = []
            for stage in task.stages.values():
                vm = stage.metrics.variables[spec.id]
                cells.append(f"{fmt(vm.f1)} ({fmt(vm.class_accuracy)})")
            per_variable.add_row(spec.id, spec.kind, *cells)
        tables.append(per_variable)
        if task.comparisons:
            tests = Table(title=f"{task.task}: stage comparison (McNemar, report exactness)")
            for column in ("stages", "agreement", "only A right", "only B right", "p"):
                tests.add_column(column, justify="right")
            for comp in task.comparisons:
                tests.add_row(
                    f"{comp.a} vs {comp.b}",
                    fmt(comp.agreement),
                    str(comp.exact.only_a),
                    str(comp.exact.only_b),
                    fmt(comp.exact.p_value, 4),
                )
            tables.append(tests)
    return tables
