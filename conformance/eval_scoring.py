"""Running and scoring one stage of `radbridge eval`: each labelled report through the one use
case (`workers.process`), its labels scored against the gold ones, stages compared (McNemar);
the options `radbridge eval` was given."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from adapter.settings import Settings
from conformance.datasets import LabelledReport
from conformance.errors import EvaluationError
from conformance.eval_results import (
    ALL_STAGES,
    MAX_ERRORS_LISTED,
    CellError,
    Progress,
    StageComparison,
    StageName,
    StageResult,
    Timing,
)
from conformance.labels import predicted_grades, predicted_sides, predicted_sizes
from conformance.metrics import (
    NO,
    YES,
    Label,
    Pair,
    VariableSpec,
    evaluate_labels,
    labels_equal,
    mcnemar,
    report_correct,
)
from conformance.rewrap import rewrap
from mappings.report import Extraction, Report
from mappings.template import Template, get_template


@dataclass
class StageRun:
    labels: list[Mapping[str, Label]] = field(default_factory=list)
    pairs: list[frozenset[Pair]] = field(default_factory=list)
    episodes: list[frozenset[Pair]] = field(default_factory=list)
    sizes: list[frozenset[Pair]] = field(default_factory=list)
    sides: list[frozenset[Pair]] = field(default_factory=list)
    grades: list[frozenset[Pair]] = field(default_factory=list)
    severities: list[frozenset[Pair]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_seconds: float = 0.0
    model: str | None = None
    failed: list[str] = field(default_factory=list)


def timing_of(run: StageRun) -> Timing:
    total = sum(run.seconds)
    return Timing(
        reports=len(run.seconds),
        seconds_total=round(total, 6),
        seconds_per_report_mean=round(total / len(run.seconds), 6) if run.seconds else None,
        seconds_per_report_median=round(statistics.median(run.seconds), 6) if run.seconds else None,
        completion_tokens=run.tokens,
        decode_seconds=round(run.decode_seconds, 6),
        tokens_per_second=round(run.tokens / run.decode_seconds, 3)
        if run.decode_seconds > 0 and run.tokens
        else None,
    )


def _errors(
    specs: Sequence[VariableSpec],
    reports: Sequence[LabelledReport],
    labels: Sequence[Mapping[str, Label]],
) -> tuple[tuple[CellError, ...], int]:
    errors = [
        CellError(report.id, spec.id, report.gold[spec.id], row[spec.id])
        for report, row in zip(reports, labels, strict=True)
        for spec in specs
        if not labels_equal(report.gold[spec.id], row[spec.id], spec.kind, spec.tolerance)
    ]
    return tuple(errors[:MAX_ERRORS_LISTED]), len(errors)


def score_stage(
    specs: Sequence[VariableSpec],
    reports: Sequence[LabelledReport],
    stage: str,
    run: StageRun,
    resamples: int,
    seed: int,
) -> StageResult:
    with_pairs = all(r.pairs is not None for r in reports) and bool(reports)
    with_episodes = all(r.episodes is not None for r in reports) and bool(reports)
    with_sizes = all(r.sizes is not None for r in reports) and bool(reports)
    with_sides = all(r.sides is not None for r in reports) and bool(reports)
    with_grades = all(r.grades is not None for r in reports) and bool(reports)
    with_severities = all(r.severities is not None for r in reports) and bool(reports)
    metrics = evaluate_labels(
        specs,
        [r.gold for r in reports],
        run.labels,
        gold_pairs=[r.pairs or frozenset() for r in reports] if with_pairs else None,
        pred_pairs=run.pairs if with_pairs else None,
        gold_episodes=[r.episodes or frozenset() for r in reports] if with_episodes else None,
        pred_episodes=run.episodes if with_episodes else None,
        gold_sizes=[r.sizes or frozenset() for r in reports] if with_sizes else None,
        pred_sizes=run.sizes if with_sizes else None,
        gold_sides=[r.sides or frozenset() for r in reports] if with_sides else None,
        pred_sides=run.sides if with_sides else None,
        gold_grades=[r.grades or frozenset() for r in reports] if with_grades else None,
        pred_grades=run.grades if with_grades else None,
        gold_severities=[r.severities or frozenset() for r in reports] if with_severities else None,
        pred_severities=run.severities if with_severities else None,
        resamples=resamples,
        seed=seed,
    )
    errors, total = _errors(specs, reports, run.labels)
    return StageResult(stage, metrics, timing_of(run), errors, total, run.model, tuple(run.failed))


def compare_stages(
    specs: Sequence[VariableSpec],
    gold: Sequence[Mapping[str, Label]],
    runs: Mapping[str, Sequence[Mapping[str, Label]]],
) -> tuple[StageComparison, ...]:
    """Agreement (over report × variable cells) and McNemar tests for every pair of stages."""
    comparisons = []
    for a, b in combinations(list(runs), 2):
        la, lb = runs[a], runs[b]
        kinds_equal = [
            labels_equal(x[s.id], y[s.id], s.kind, s.tolerance)
            for x, y in zip(la, lb, strict=True)
            for s in specs
        ]
        agree = (sum(kinds_equal) / len(kinds_equal)) if kinds_equal else None
        exact = mcnemar(
            [report_correct(specs, g, p) for g, p in zip(gold, la, strict=True)],
            [report_correct(specs, g, p) for g, p in zip(gold, lb, strict=True)],
        )
        per_variable = {
            s.id: mcnemar(
                [
                    labels_equal(g[s.id], p[s.id], s.kind, s.tolerance)
                    for g, p in zip(gold, la, strict=True)
                ],
                [
                    labels_equal(g[s.id], p[s.id], s.kind, s.tolerance)
                    for g, p in zip(gold, lb, strict=True)
                ],
            )
            for s in specs
        }
        comparisons.append(StageComparison(a, b, agree, exact, per_variable))
    return tuple(comparisons)


def report_of(item: LabelledReport, default_language: str) -> Report:
    """The labelled case as a Report (`mappings.inbound.report_from_record`)."""
    from mappings.inbound import report_from_record

    record = {"id": item.id, "text": item.text, "language": item.language, "date": item.time}
    return report_from_record(record, default_language=default_language)


LabelsOf = Callable[[Extraction], tuple[dict[str, Label], frozenset[Pair], frozenset[Pair]]]


def run_reports(
    template: Template,
    reports: Sequence[LabelledReport],
    stage: StageName,
    settings: Settings,
    labels_of: LabelsOf,
    empty: Mapping[str, Label],
    progress: Progress | None = None,
) -> StageRun:
    """One stage on every report: labels (`empty` when no valid output), pairs, timing.
    Each report goes through the one use case (`workers.process`) with its template named."""
    from workers.engine_registry import get_engine
    from workers.process import process_reports

    stage_settings = settings.model_copy(update={"stage": stage})
    engine = functools.partial(get_engine, stage_settings)
    run = StageRun()
    for item in reports:
        report = report_of(item, settings.default_language)
        started = time.perf_counter()
        outcome = process_reports(
            [report], [template], stage_settings, engine, explicit=True, reject_failed=True,
            with_bundles=False,
        )  # fmt: skip
        run.seconds.append(time.perf_counter() - started)
        if not outcome.results:
            # no valid output: nothing was extracted (scored as `empty`), and counted
            run.failed.append(item.id)
            run.labels.append(dict(empty))
            run.pairs.append(frozenset())
            run.episodes.append(frozenset())
            run.sizes.append(frozenset())
            run.sides.append(frozenset())
            run.grades.append(frozenset())
            run.severities.append(frozenset())
        else:
            extraction = outcome.results[0].extraction
            run.tokens += extraction.timings.completion_tokens
            run.decode_seconds += extraction.timings.seconds
            run.model = f"{extraction.model.name} (sha256 {extraction.model.sha256[:12]})"
            labels, pairs, episodes = labels_of(extraction)
            run.labels.append(labels)
            run.pairs.append(pairs)
            run.episodes.append(episodes)
            run.sizes.append(predicted_sizes(extraction))
            run.sides.append(predicted_sides(extraction))
            run.grades.append(predicted_grades(extraction, template))
            run.severities.append(predicted_grades(extraction, template, severity=True))
        if progress is not None:
            progress()
    return run


def yes_if(flag: bool) -> Label:
    return YES if flag else NO


@dataclass(frozen=True)
class EvalOptions:
    """What `radbridge eval` was asked for (`stage` None: the settings' stage)."""

    settings: Settings
    stage: str | None = None
    template: str | None = None
    tolerance: float = 0.0
    resamples: int = 1000
    seed: int = 0
    progress: Callable[[int], Progress] | None = None
    """Called once with the number of steps; returns the function that advances one step."""
    split: str | None = None
    """`dev` or `test`: only that half of a labelled JSONL set (None: every record)."""
    rewrap: int | None = None
    """Hard-wrap every report text at this many characters first (`conformance.rewrap`): what
    a RIS that sends one OBX per display line does to the same reports (None: as written)."""
    modality: str | None = None
    """Open-i: route every report as one sent with this modality and no exam line, and note
    how many routing leaves without a template (`routing_notes`)."""

    def lookup(self, template_id: str) -> Template:
        """A template by id: built-in or from RADBRIDGE_TEMPLATES_DIR (settings)."""
        return get_template(template_id, self.settings.templates_dir)


def stages_of(options: EvalOptions) -> tuple[StageName, ...]:
    if options.stage == "all":
        return ALL_STAGES
    stage = options.stage or options.settings.stage
    for known in ALL_STAGES:
        if stage == known:
            return (known,)
    raise EvaluationError(f"unknown stage {stage!r} (rules, llm, hybrid or all)")


def rewrapped(reports: Sequence[LabelledReport], width: int | None) -> tuple[LabelledReport, ...]:
    """The reports with their texts hard-wrapped at `width` characters (None: unchanged)."""
    if width is None:
        return tuple(reports)
    return tuple(dataclasses.replace(report, text=rewrap(report.text, width)) for report in reports)


def routing_notes(
    cases: Sequence[LabelledReport], modality: str, options: EvalOptions, expected: str
) -> tuple[str, ...]:
    """What routing chooses for each case sent with `modality` and no exam line: one note
    counting the reports per outcome (`no_template`, `expected`, any other template)."""
    from mappings.routing import decide
    from mappings.template import load_templates

    templates = list(load_templates(options.settings.templates_dir).values())
    outcomes: dict[str, int] = {}
    for item in cases:
        report = report_of(item, options.settings.default_language)
        chosen = decide(report.model_copy(update={"modality": modality}), templates).chosen
        key = "+".join(sorted(t.id for t in chosen)) or "no_template"
        outcomes[key] = outcomes.get(key, 0) + 1
    counts = ", ".join(f"{key} {n}" for key, n in sorted(outcomes.items()))
    return (
        f"routing with modality {modality} and no exam line ({len(cases)} reports; "
        f"{expected} expected): {counts}",
    )


def rewrap_notes(width: int | None) -> tuple[str, ...]:
    if width is None:
        return ()
    return (f"every report text hard-wrapped at {width} characters first (--rewrap {width})",)
