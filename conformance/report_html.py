"""A self-contained HTML page of an evaluation: tables, bar plots, confusion matrices.

Self-contained: CSS inline, plots as inline base64 PNGs (matplotlib, Agg backend, no pyplot
global state), no script, no external URL. It shows ids, variable ids and labels only — never
report text. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.eval_output import fmt
from conformance.eval_results import EvaluationResult, StageResult, TaskResult
from conformance.metrics import MACRO_KEYS, ConfusionMatrix, Interval, PairMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_ERROR_ROWS = 200
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #ddd; }
h3 { margin-top: 1.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.na { color: #999; } .ci { color: #666; font-size: 0.85em; white-space: nowrap; } .note { color: #555; font-size: 0.9em; }
img.plot { display: block; margin: 0.5em 0 1em; max-width: 100%; border: 1px solid #eee; }
"""


def _png(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" class="plot" alt="{escape(alt)}">'


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _cell(value: float | None, interval: Interval | None = None, digits: int = 3) -> str:
    if value is None:
        return '<td class="na">n/a</td>'
    text = escape(fmt(value, digits))
    if interval is not None:
        bounds = f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
        text += f'<br><span class="ci">{escape(bounds)}</span>'
    return f"<td>{text}</td>"


def _table(header: Sequence[str], rows: Iterable[str], left: int = 1) -> str:
    head = "".join(
        f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>"
        for i, h in enumerate(header)
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _text_cells(*values: object) -> str:
    return "".join(f'<td class="l">{escape(str(v))}</td>' for v in values)


def f1_bar_plot(task: TaskResult) -> str:
    """Grouped bars: F1 per variable and stage, with 95% bootstrap intervals."""
    names = [spec.id for spec in task.variables]
    stages = list(task.stages.items())
    figure = _figure(max(6.0, 0.9 * len(names) * max(1, len(stages)) / 2 + 2), 4.2)
    axes = figure.subplots()
    width = 0.8 / max(1, len(stages))
    for s, (stage_name, stage) in enumerate(stages):
        xs, heights, low, high = [], [], [], []
        for i, name in enumerate(names):
            metrics = stage.metrics.variables[name]
            if metrics.f1 is None:
                axes.text(i + (s - (len(stages) - 1) / 2) * width, 0.01, "n/a", ha="center",
                          va="bottom", fontsize=7, rotation=90, color="#777")  # fmt: skip
                continue
            interval = metrics.ci.get("f1")
            xs.append(i + (s - (len(stages) - 1) / 2) * width)
            heights.append(metrics.f1)
            low.append(metrics.f1 - interval.low if interval else 0.0)
            high.append(interval.high - metrics.f1 if interval else 0.0)
        axes.bar(xs, heights, width, label=stage_name, color=_COLOURS[s % len(_COLOURS)],
                 yerr=[low, high], capsize=2, error_kw={"elinewidth": 0.8})  # fmt: skip
    axes.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("F1 (95% bootstrap CI)")
    axes.set_title(f"{task.task}: F1 per variable")
    from matplotlib.container import BarContainer

    for container in axes.containers:
        if isinstance(container, BarContainer):
            axes.bar_label(container, fmt="%.2f", fontsize=7, padding=2)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(figure, f"{task.task}: F1 per variable")


def confusion_plot(stage_name: str, matrices: Sequence[tuple[str, ConfusionMatrix]]) -> str:
    """A grid of confusion matrices (rows gold, columns predicted) for one stage."""
    columns = min(3, len(matrices))
    rows = math.ceil(len(matrices) / columns)
    figure = _figure(3.6 * columns, 3.2 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(matrices):
            axes.set_axis_off()
            continue
        name, matrix = matrices[index]
        counts = [list(row) for row in matrix.counts]
        axes.imshow(counts, cmap="Blues", vmin=0)
        peak = max((max(row) for row in counts), default=0)
        for r, row in enumerate(counts):
            for c, value in enumerate(row):
                axes.text(c, r, str(value), ha="center", va="center", fontsize=8,
                          color="white" if peak and value > peak / 2 else "black")  # fmt: skip
        ticks = range(len(matrix.labels))
        axes.set_xticks(ticks, matrix.labels, rotation=40, ha="right", fontsize=7)
        axes.set_yticks(ticks, matrix.labels, fontsize=7)
        axes.set_xlabel("predicted", fontsize=8)
        axes.set_ylabel("gold", fontsize=8)
        axes.set_title(f"{name} ({stage_name})", fontsize=9)
    return _png(figure, f"confusion matrices ({stage_name})")


def _summary_cells(stage: StageResult) -> list[tuple[str, str]]:
    m = stage.metrics
    cells = [
        ("cases", f"<td>{m.reports}</td>"),
        ("micro precision", _cell(m.micro.precision)),
        ("micro recall", _cell(m.micro.recall)),
        ("micro F1", _cell(m.micro.f1)),
    ]
    cells += [
        (
            f"macro {key.replace('_', ' ').replace('f1', 'F1')}",
            _cell(m.macro[key], m.ci.get(f"macro_{key}")),
        )
        for key in MACRO_KEYS
    ]
    cells += [
        ("report exact accuracy", _cell(m.exact_accuracy, m.ci.get("exact_accuracy"))),
        ("all-negative cases", f"<td>{m.negative_reports}</td>"),
        ("specificity on all-negative cases", _cell(m.negative_report_specificity)),
    ]
    return cells


def _summary(task: TaskResult) -> str:
    """Measures × stages."""
    columns = [_summary_cells(stage) for stage in task.stages.values()]
    rows = [
        f"<tr>{_text_cells(label)}{''.join(column[i][1] for column in columns)}</tr>"
        for i, (label, _) in enumerate(columns[0] if columns else [])
    ]
    return _table(["measure", *task.stages], rows)


def _variables(task: TaskResult, stage: StageResult) -> str:
    header = ["variable", "kind", "TP", "FP", "FN", "TN", "precision", "recall", "F1",
              "specificity", "accuracy", "class accuracy", "class macro F1", "MAE",
              "within tolerance"]  # fmt: skip
    rows = []
    for spec in task.variables:
        v = stage.metrics.variables[spec.id]
        c = v.counts
        cells = _text_cells(spec.id, spec.kind)
        cells += "".join(f"<td>{n}</td>" for n in (c.tp, c.fp, c.fn, c.tn))
        cells += _cell(v.precision, v.ci.get("precision")) + _cell(v.recall, v.ci.get("recall"))
        cells += _cell(v.f1, v.ci.get("f1")) + _cell(v.specificity, v.ci.get("specificity"))
        cells += _cell(v.accuracy) + _cell(v.class_accuracy, v.ci.get("class_accuracy"))
        cells += _cell(v.class_macro_f1) + _cell(v.mae) + _cell(v.within_tolerance)
        rows.append(f"<tr>{cells}</tr>")
    return _table(header, rows, left=2)


def _pair_rows(name: str, label: str, metrics: PairMetrics | None) -> str:
    if metrics is None:
        return ""
    cells = _text_cells(name, label) + "".join(
        f"<td>{n}</td>" for n in (metrics.tp, metrics.fp, metrics.fn)
    )
    cells += _cell(metrics.precision, metrics.ci.get("precision"))
    cells += _cell(metrics.recall, metrics.ci.get("recall"))
    cells += _cell(metrics.f1, metrics.ci.get("f1"))
    cells += f"<td>{metrics.items_correct}/{metrics.gold_items}</td>"
    cells += _cell(metrics.item_accuracy, metrics.ci.get("item_accuracy"))
    cells += _cell(metrics.report_exact, metrics.ci.get("report_exact"))
    return f"<tr>{cells}</tr>"


def _pairs(task: TaskResult) -> str:
    rows = [
        _pair_rows(name, label, pairs)
        for name, stage in task.stages.items()
        for label, pairs in (
            ("lesion–location", stage.metrics.pairs),
            ("diagnosis–episode", stage.metrics.episodes),
            ("finding–size", stage.metrics.sizes),
            ("finding–side", stage.metrics.sides),
            ("finding–grade", stage.metrics.grades),
            ("finding–severity", stage.metrics.severities),
        )
    ]
    rows = [row for row in rows if row]
    if not rows:
        return '<p class="note">No relation gold (_pairs / _episodes / sizes / sides / grades) in this dataset.</p>'
    header = ["stage", "relation", "TP", "FP", "FN", "precision", "recall", "F1",
              "items right", "per-item accuracy", "reports exact"]  # fmt: skip
    return _table(header, rows, left=2)


def _comparisons(task: TaskResult) -> str:
    if not task.comparisons:
        return '<p class="note">One stage only: no comparison.</p>'
    rows = []
    for comp in task.comparisons:
        cells = _text_cells(f"{comp.a} vs {comp.b}", "report exact") + _cell(comp.agreement)
        cells += f"<td>{comp.exact.only_a}</td><td>{comp.exact.only_b}</td>"
        cells += _cell(comp.exact.p_value, digits=4)
        rows.append(f"<tr>{cells}</tr>")
        for variable, test in comp.variables.items():
            if test.only_a or test.only_b:
                cells = _text_cells(f"{comp.a} vs {comp.b}", variable) + "<td></td>"
                cells += f"<td>{test.only_a}</td><td>{test.only_b}</td>"
                cells += _cell(test.p_value, digits=4)
                rows.append(f"<tr>{cells}</tr>")
    header = ["stages", "on", "agreement", "only A right", "only B right", "McNemar p"]
    return _table(header, rows, left=2) + (
        '<p class="note">Exact two-sided McNemar test on discordant reports; agreement over '
        "report × variable labels. Variables listed where the stages differ.</p>"
    )


def _timing(task: TaskResult) -> str:
    rows = []
    for name, stage in task.stages.items():
        t = stage.timing
        cells = _text_cells(name) + f"<td>{t.reports}</td>"
        cells += _cell(t.seconds_total, digits=2) + _cell(t.seconds_per_report_mean, digits=4)
        cells += _cell(t.seconds_per_report_median, digits=4)
        cells += f"<td>{t.completion_tokens}</td>" + _cell(t.tokens_per_second, digits=1)
        cells += f"<td>{len(stage.failed)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    header = ["stage", "reports", "seconds", "s/report (mean)", "s/report (median)",
              "output tokens", "tokens/s", "no valid output"]  # fmt: skip
    return _table(header, rows)


def _errors(stage_name: str, stage: StageResult) -> str:
    if not stage.errors_total:
        return f'<p class="note">{escape(stage_name)}: no wrong labels.</p>'
    rows = [
        f"<tr>{_text_cells(e.report_id, e.variable_id, e.gold, e.predicted)}</tr>"
        for e in stage.errors[:MAX_ERROR_ROWS]
    ]
    shown = min(len(stage.errors), MAX_ERROR_ROWS)
    note = f'<p class="note">{escape(stage_name)}: {stage.errors_total} wrong label(s)'
    note += f", first {shown} shown.</p>" if shown < stage.errors_total else ".</p>"
    return note + _table(["report id", "variable", "gold", "predicted"], rows, left=4)


def _task_section(task: TaskResult) -> str:
    parts = [f"<h2>{escape(task.task)}: {escape(task.title)}</h2>", _summary(task)]
    parts.append(f1_bar_plot(task))
    for name, stage in task.stages.items():
        parts.append(f"<h3>Per variable — {escape(name)}</h3>")
        parts.append(_variables(task, stage))
        matrices = [
            (spec.id, stage.metrics.variables[spec.id].confusion)
            for spec in task.variables
            if stage.metrics.variables[spec.id].confusion is not None
        ]
        if matrices:
            parts.append(f"<h3>Confusion matrices — {escape(name)}</h3>")
            parts.append(confusion_plot(name, [(n, m) for n, m in matrices if m is not None]))
    parts += ["<h3>Relations</h3>", _pairs(task)]
    parts += ["<h3>Stage comparison</h3>", _comparisons(task)]
    parts += ["<h3>Timing</h3>", _timing(task)]
    parts.append("<h3>Wrong labels</h3>")
    parts += [_errors(name, stage) for name, stage in task.stages.items()]
    return "\n".join(parts)


def render_html(result: EvaluationResult) -> str:
    """The whole page as one string."""
    meta = (
        f"dataset {result.dataset} ({result.format}) · created {result.created} · "
        f"model {result.model or 'none (rules)'} · bootstrap {result.resamples} resamples, "
        f"seed {result.seed}"
    )
    body = "\n".join(_task_section(task) for task in result.tasks)
    if result.notes:
        items = "".join(f"<li>{escape(note)}</li>" for note in result.notes)
        body = f'<ul class="note">{items}</ul>' + body
    conventions = (
        "Positive = a stated finding (presence: present; uncertain is not positive). "
        "n/a = undefined (zero denominator). Intervals: 95% percentile bootstrap over reports. "
        "Specificity: share of reports without a gold positive where none was predicted."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>radbridge evaluation</title>"
        f"<style>{CSS}</style></head><body>"
        f'<h1>radbridge evaluation</h1><p class="note">{escape(meta)}</p>'
        f'<p class="note">{escape(conventions)}</p>{body}</body></html>\n'
    )


def write_report(result: EvaluationResult, path: Path) -> None:
    """Write report.html (atomically)."""
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(result), encoding="utf-8")
    tmp.replace(path)
