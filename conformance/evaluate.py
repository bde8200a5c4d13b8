"""`radbridge eval`: labelled reports -> extraction per stage -> metrics (`conformance.metrics`).

Datasets are loaded by `conformance.datasets` and turned into labels by `conformance.labels`;
this module runs the stages, assembles the metrics per task, compares stages (McNemar), and
writes metrics.json and the summary tables. `DATASET_FORMATS` pairs each format's detector with
its evaluator (the first detector that matches wins); NegEx is stage-1 assertion detection
(`workers.context.assess`) on each annotated sentence. `EvalOptions.rewrap` hard-wraps every
report text first (`conformance.rewrap`, `--rewrap N`): the same reports as a RIS that wraps them.

No report text leaves this module: results carry ids, variable ids and labels only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from adapter.settings import Settings
from conformance.datasets import (
    Dataset,
    LabelledReport,
    builtin_template,
    is_dragon,
    is_negex,
    load_dragon,
    load_jsonl,
    template_lookup,
)
from conformance.errors import EvaluationError
from conformance.labels import EPISODES_KEY, PAIRS_KEY, predicted_labels, variable_specs
from conformance.metrics import (
    NO,
    NOT_MENTIONED,
    YES,
    Interval,
    Label,
    LabelMetrics,
    McNemar,
    Pair,
    VariableSpec,
    evaluate_labels,
    labels_equal,
    mcnemar,
    report_correct,
)
from conformance.openi import is_openi
from conformance.rewrap import check_width, rewrap
from mappings.report import Extraction, FindingStatus, Report
from mappings.template import Template, get_template

StageName = Literal["rules", "llm", "hybrid"]
ALL_STAGES: tuple[StageName, ...] = ("rules", "llm", "hybrid")
MAX_ERRORS_LISTED = 500
Progress = Callable[[], None]


# ---------------------------------------------------------------------------------------------
# Running and scoring


@dataclass(frozen=True)
class Timing:
    """Cost of one stage over the dataset."""

    reports: int
    seconds_total: float
    seconds_per_report_mean: float | None
    seconds_per_report_median: float | None
    completion_tokens: int
    decode_seconds: float
    tokens_per_second: float | None


@dataclass(frozen=True)
class CellError:
    """One wrong label (ids and labels only, never report text)."""

    report_id: str
    variable_id: str
    gold: Label
    predicted: Label


@dataclass(frozen=True)
class StageResult:
    """One stage's metrics, timing and wrong labels on one task."""

    stage: str
    metrics: LabelMetrics
    timing: Timing
    errors: tuple[CellError, ...]
    errors_total: int
    model: str | None = None
    failed: tuple[str, ...] = ()
    """Ids of reports whose extraction produced no valid output (scored as not mentioned)."""


@dataclass(frozen=True)
class StageComparison:
    """Two stages on the same reports: agreement and McNemar tests."""

    a: str
    b: str
    agreement: float | None
    exact: McNemar
    variables: dict[str, McNemar]


@dataclass(frozen=True)
class TaskResult:
    """One template (or the NegEx assertion set) evaluated with one or more stages."""

    task: str
    title: str
    kind: Literal["template", "assertion"]
    variables: tuple[VariableSpec, ...]
    stages: dict[str, StageResult]
    comparisons: tuple[StageComparison, ...]


@dataclass(frozen=True)
class EvaluationResult:
    """What `radbridge eval` measured."""

    dataset: str
    format: str
    created: str
    model: str | None
    resamples: int
    seed: int
    tasks: tuple[TaskResult, ...]
    notes: tuple[str, ...] = ()


@dataclass
class _Run:
    labels: list[Mapping[str, Label]] = field(default_factory=list)
    pairs: list[frozenset[Pair]] = field(default_factory=list)
    episodes: list[frozenset[Pair]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_seconds: float = 0.0
    model: str | None = None
    failed: list[str] = field(default_factory=list)


def _timing(run: _Run) -> Timing:
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


def _score(
    specs: Sequence[VariableSpec],
    reports: Sequence[LabelledReport],
    stage: str,
    run: _Run,
    resamples: int,
    seed: int,
) -> StageResult:
    with_pairs = all(r.pairs is not None for r in reports) and bool(reports)
    with_episodes = all(r.episodes is not None for r in reports) and bool(reports)
    metrics = evaluate_labels(
        specs,
        [r.gold for r in reports],
        run.labels,
        gold_pairs=[r.pairs or frozenset() for r in reports] if with_pairs else None,
        pred_pairs=run.pairs if with_pairs else None,
        gold_episodes=[r.episodes or frozenset() for r in reports] if with_episodes else None,
        pred_episodes=run.episodes if with_episodes else None,
        resamples=resamples,
        seed=seed,
    )
    errors, total = _errors(specs, reports, run.labels)
    return StageResult(stage, metrics, _timing(run), errors, total, run.model, tuple(run.failed))


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


def _report(item: LabelledReport, default_language: str) -> Report:
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
) -> _Run:
    """One stage on every report: labels (`empty` when no valid output), pairs, timing.
    Each report goes through the one use case (`workers.process`) with its template named."""
    from workers.engine_registry import get_engine
    from workers.process import process_reports

    stage_settings = settings.model_copy(update={"stage": stage})
    engine = functools.partial(get_engine, stage_settings)
    run = _Run()
    for item in reports:
        report = _report(item, settings.default_language)
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
        else:
            extraction = outcome.results[0].extraction
            run.tokens += extraction.timings.completion_tokens
            run.decode_seconds += extraction.timings.seconds
            run.model = f"{extraction.model.name} (sha256 {extraction.model.sha256[:12]})"
            labels, pairs, episodes = labels_of(extraction)
            run.labels.append(labels)
            run.pairs.append(pairs)
            run.episodes.append(episodes)
        if progress is not None:
            progress()
    return run


def evaluate_template(
    template: Template,
    reports: Sequence[LabelledReport],
    stages: Sequence[StageName],
    settings: Settings,
    *,
    tolerance: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> TaskResult:
    """Run every stage on every report of one template and score it."""
    specs = variable_specs(template, tolerance)
    empty: dict[str, Label] = {spec.id: NOT_MENTIONED for spec in specs}

    def labels_of(
        extraction: Extraction,
    ) -> tuple[dict[str, Label], frozenset[Pair], frozenset[Pair]]:
        labels = predicted_labels(extraction, template)
        pairs = labels.pop(PAIRS_KEY)
        episodes = labels.pop(EPISODES_KEY)
        return labels, pairs, episodes

    runs = {
        stage: run_reports(template, reports, stage, settings, labels_of, empty, progress)
        for stage in stages
    }
    return TaskResult(
        task=template.id,
        title=template.title,
        kind="template",
        variables=specs,
        stages={
            stage: _score(specs, reports, stage, run, resamples, seed)
            for stage, run in runs.items()
        },
        comparisons=compare_stages(
            specs, [r.gold for r in reports], {s: r.labels for s, r in runs.items()}
        ),
    )


def group_by_template(reports: Iterable[LabelledReport]) -> dict[str, list[LabelledReport]]:
    """Reports per template id, in first-seen order."""
    groups: dict[str, list[LabelledReport]] = {}
    for report in reports:
        groups.setdefault(report.template, []).append(report)
    return groups


def evaluate_dataset(
    dataset: Dataset,
    stages: Sequence[StageName],
    settings: Settings,
    *,
    templates: Callable[[str], Template] = builtin_template,
    tolerance: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate every template of a loaded (JSONL or converted) dataset."""
    if not dataset.reports:
        raise EvaluationError(f"{dataset.path}: no labelled reports to evaluate")
    if dataset.templates is not None:
        templates = template_lookup(dataset.templates)
    tasks = tuple(
        evaluate_template(
            templates(template_id),
            group,
            stages,
            settings,
            tolerance=tolerance,
            resamples=resamples,
            seed=seed,
            progress=progress,
        )
        for template_id, group in group_by_template(dataset.reports).items()
    )
    return EvaluationResult(
        dataset=str(dataset.path),
        format=dataset.format,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=next(
            (
                result.model
                for task in tasks
                for name, result in task.stages.items()
                if name != "rules" and result.model
            ),
            None,
        ),
        resamples=resamples,
        seed=seed,
        tasks=tasks,
        notes=dataset.notes,
    )


def _yes(flag: bool) -> Label:
    return YES if flag else NO


def evaluate_negex(
    path: Path,
    *,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Stage-1 assertion detection (`workers.context.assess`) on the NegEx / ConText annotations.

    One case per annotated sentence–concept pair (`conformance.negex.load_negex`); binary
    variables `negated`, and with the ConText file also `historical`, `hypothetical`,
    `other_experiencer` (positive = the assertion holds).
    """
    from conformance.negex import load_negex
    from workers.context import assess

    items = load_negex(path)
    if not items:
        raise EvaluationError(f"{path}: no NegEx annotations")
    with_context = all(item.temporality is not None for item in items)
    names = ("negated", "historical", "hypothetical", "other_experiencer")
    specs = tuple(VariableSpec(name, "binary") for name in names[: 4 if with_context else 1])
    cases: list[LabelledReport] = []
    run = _Run()
    for item in items:
        gold = {
            "negated": _yes(item.gold == "negated"),
            "historical": _yes(item.temporality == "historical"),
            "hypothetical": _yes(item.temporality == "hypothetical"),
            "other_experiencer": _yes(item.experiencer == "other"),
        }
        started = time.perf_counter()
        result = assess(item.sentence, item.start, item.end, "en")
        run.seconds.append(time.perf_counter() - started)
        predicted = {
            "negated": _yes(result.negated),
            "historical": _yes(result.historical),
            "hypothetical": _yes(result.hypothetical),
            "other_experiencer": _yes(result.other_experiencer),
        }
        keep = {spec.id for spec in specs}
        cases.append(
            LabelledReport(
                id=item.id,
                source=item.id,
                text="",
                language="en",
                template="negex",
                gold={k: v for k, v in gold.items() if k in keep},
            )
        )
        run.labels.append({k: v for k, v in predicted.items() if k in keep})
        if progress is not None:
            progress()
    task = TaskResult(
        task="negex",
        title="NegEx / ConText assertion detection (stage 1)",
        kind="assertion",
        variables=specs,
        stages={"rules": _score(specs, cases, "rules", run, resamples, seed)},
        comparisons=(),
    )
    return EvaluationResult(
        dataset=str(path),
        format="negex",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=None,
        resamples=resamples,
        seed=seed,
        tasks=(task,),
    )


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


def _stages(options: EvalOptions) -> tuple[StageName, ...]:
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
        report = _report(item, options.settings.default_language)
        chosen = decide(report.model_copy(update={"modality": modality}), templates).chosen
        key = "+".join(sorted(t.id for t in chosen)) or "no_template"
        outcomes[key] = outcomes.get(key, 0) + 1
    counts = ", ".join(f"{key} {n}" for key, n in sorted(outcomes.items()))
    return (
        f"routing with modality {modality} and no exam line ({len(cases)} reports; "
        f"{expected} expected): {counts}",
    )


def _rewrap_notes(width: int | None) -> tuple[str, ...]:
    if width is None:
        return ()
    return (f"every report text hard-wrapped at {width} characters first (--rewrap {width})",)


def _evaluate_loaded(dataset: Dataset, options: EvalOptions) -> EvaluationResult:
    dataset = dataclasses.replace(
        dataset,
        reports=rewrapped(dataset.reports, options.rewrap),
        notes=(*dataset.notes, *_rewrap_notes(options.rewrap)),
    )
    if not dataset.reports:
        suffix = f" for template {options.template}" if options.template else ""
        raise EvaluationError(f"{dataset.path}: no labelled reports{suffix}")
    stages = _stages(options)
    advance = options.progress(len(dataset.reports) * len(stages)) if options.progress else None
    return evaluate_dataset(
        dataset,
        stages,
        options.settings,
        templates=options.lookup,
        tolerance=options.tolerance,
        resamples=options.resamples,
        seed=options.seed,
        progress=advance,
    )


def _evaluate_negex_path(path: Path, options: EvalOptions) -> EvaluationResult:
    if options.stage not in (None, "rules"):
        raise EvaluationError("NegEx evaluates stage-1 assertion detection: use --stage rules")
    if options.rewrap is not None:
        raise EvaluationError("--rewrap wraps report texts; NegEx annotates single sentences")
    return evaluate_negex(path, resamples=options.resamples, seed=options.seed)


def openi_positive(status: FindingStatus) -> bool:
    """The labels' convention: a finding stated present counts; negated, hedged
    (`uncertain`) and unmentioned findings do not (see mappings/templates/README.md)."""
    return status is FindingStatus.PRESENT


def evaluate_openi(path: Path, options: EvalOptions) -> EvaluationResult:
    """Open-i reports with NegBio's labels: present vs not, per finding, for every stage.

    The labels map to `chest_findings` variables (`conformance.openi.LABEL_VARIABLES`); labels
    the template lacks are listed as not covered in the notes, `normal` is never scored, and a
    headline macro F1 over the findings with enough positive reports is added to the notes.
    """
    from conformance.openi import HEADLINE_MIN_POSITIVES, LABEL_VARIABLES, NOT_SCORED, load_openi

    template = options.lookup(options.template or "chest_findings")
    known = {variable.id for variable in template.variables}
    items = load_openi(path)
    names = sorted({name for item in items for name in item.labels})
    positives = {name: sum(item.labels.get(name, 0) for item in items) for name in names}
    covered = [
        n
        for n in LABEL_VARIABLES
        if n in names and LABEL_VARIABLES[n] in known and positives[n] > 0
    ]
    notes: list[str] = list(_rewrap_notes(options.rewrap))
    for name in names:
        if name in NOT_SCORED:
            notes.append(
                f"label {name!r} ({positives[name]} positive) is not a finding: not scored"
            )
        elif name in LABEL_VARIABLES and LABEL_VARIABLES[name] in known and not positives[name]:
            notes.append(
                f"label {name!r} has no positive report in this file: not scored "
                "(F1 and recall are undefined without one)"
            )
        elif name not in covered:
            why = (
                f"no variable {LABEL_VARIABLES[name]!r} in {template.id}"
                if name in LABEL_VARIABLES
                else "no mapping to a template variable"
            )
            notes.append(f"label {name!r} ({positives[name]} positive) not covered: {why}")
    specs = tuple(VariableSpec(LABEL_VARIABLES[name], "binary") for name in covered)
    cases = rewrapped(
        [
            LabelledReport(
                id=item.id,
                source=f"{path}:{item.id}",
                text=item.text,
                language="en",
                template=template.id,
                gold={LABEL_VARIABLES[n]: _yes(item.labels.get(n, 0) == 1) for n in covered},
            )
            for item in items
        ],
        options.rewrap,
    )
    if options.modality is not None:
        notes.extend(routing_notes(cases, options.modality, options, template.id))

    def labels_of(
        extraction: Extraction,
    ) -> tuple[dict[str, Label], frozenset[Pair], frozenset[Pair]]:
        status = {value.variable_id: value.status for value in extraction.values}
        labels: dict[str, Label] = {
            spec.id: _yes(openi_positive(status.get(spec.id, FindingStatus.NOT_MENTIONED)))
            for spec in specs
        }
        return labels, frozenset(), frozenset()

    stages = _stages(options)
    advance = options.progress(len(cases) * len(stages)) if options.progress else None
    empty: dict[str, Label] = {spec.id: NO for spec in specs}
    runs = {
        stage: run_reports(template, cases, stage, options.settings, labels_of, empty, advance)
        for stage in stages
    }
    scored: dict[str, StageResult] = {
        stage: _score(specs, cases, stage, run, options.resamples, options.seed)
        for stage, run in runs.items()
    }
    headline = [
        spec.id
        for spec in specs
        if sum(case.gold[spec.id] == YES for case in cases) >= HEADLINE_MIN_POSITIVES
    ]
    for stage, result in scored.items():
        f1s = [result.metrics.variables[v].f1 for v in headline]
        defined = [f for f in f1s if f is not None]
        if defined:
            notes.append(
                f"{stage}: macro F1 over the {len(headline)} findings with >= "
                f"{HEADLINE_MIN_POSITIVES} positive reports ({', '.join(headline)}): "
                f"{sum(defined) / len(defined):.3f}"
            )
    task = TaskResult(
        task=template.id,
        title=f"{template.title}: Open-i present vs not",
        kind="template",
        variables=specs,
        stages=scored,
        comparisons=compare_stages(
            specs, [c.gold for c in cases], {s: r.labels for s, r in runs.items()}
        ),
    )
    return EvaluationResult(
        dataset=str(path),
        format="openi",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=next((r.model for s, r in scored.items() if s != "rules" and r.model), None),
        resamples=options.resamples,
        seed=options.seed,
        tasks=(task,),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format: how to recognise it and how to evaluate it."""

    name: str
    detect: Callable[[Path], bool]
    evaluate: Callable[[Path, EvalOptions], EvaluationResult]


DATASET_FORMATS: tuple[DatasetFormat, ...] = (
    DatasetFormat("negex", is_negex, _evaluate_negex_path),
    DatasetFormat("openi", is_openi, evaluate_openi),
    DatasetFormat(
        "dragon", is_dragon, lambda p, o: _evaluate_loaded(load_dragon(p, o.template), o)
    ),
    DatasetFormat(
        "jsonl",
        Path.is_file,
        lambda p, o: _evaluate_loaded(load_jsonl(p, o.template, o.split, o.lookup), o),
    ),
)
"""Dataset formats, first match wins: a new format is a detector plus an evaluator."""


def run_evaluation(path: Path, options: EvalOptions) -> EvaluationResult:
    """Detect the dataset's format and evaluate it."""
    dataset_format = _format_of(path)
    if options.rewrap is not None:
        check_width(options.rewrap)
    if options.split is not None and dataset_format.name != "jsonl":
        raise EvaluationError(
            f"--split selects a half of a labelled JSONL set; {path} is {dataset_format.name}"
            + (
                " (its files are already the tune and check halves)"
                if dataset_format.name == "openi"
                else ""
            )
        )
    return dataset_format.evaluate(path, options)


def detect_format(path: Path) -> str:
    """The name of the first format in `DATASET_FORMATS` whose detector accepts `path`."""
    return _format_of(path).name


def _format_of(path: Path) -> DatasetFormat:
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or folder")
    for fmt in DATASET_FORMATS:
        if fmt.detect(path):
            return fmt
    raise EvaluationError(
        f"{path}: not a recognised dataset (JSONL file, Open-i JSONL, NegEx, DRAGON folder)"
    )


# ---------------------------------------------------------------------------------------------
# Output


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
