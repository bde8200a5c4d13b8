"""`radbridge eval` on labelled reports (a labelled JSONL set or a converted DRAGON task): every
template's reports through every stage, scored per variable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from adapter.settings import Settings
from conformance.datasets import Dataset, LabelledReport, builtin_template, template_lookup
from conformance.errors import EvaluationError
from conformance.eval_results import EvaluationResult, Progress, StageName, TaskResult
from conformance.eval_scoring import (
    EvalOptions,
    compare_stages,
    rewrap_notes,
    rewrapped,
    run_reports,
    score_stage,
    stages_of,
)
from conformance.labels import EPISODES_KEY, PAIRS_KEY, predicted_labels, variable_specs
from conformance.metrics import NOT_MENTIONED, Label, Pair
from mappings.report import Extraction
from mappings.template import Template


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
            stage: score_stage(specs, reports, stage, run, resamples, seed)
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


def evaluate_loaded(dataset: Dataset, options: EvalOptions) -> EvaluationResult:
    dataset = dataclasses.replace(
        dataset,
        reports=rewrapped(dataset.reports, options.rewrap),
        notes=(*dataset.notes, *rewrap_notes(options.rewrap)),
    )
    if not dataset.reports:
        suffix = f" for template {options.template}" if options.template else ""
        raise EvaluationError(f"{dataset.path}: no labelled reports{suffix}")
    stages = stages_of(options)
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
