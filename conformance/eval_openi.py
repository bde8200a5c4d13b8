"""`radbridge eval` on Open-i reports with NegBio's labels: present vs not, per finding, for
every stage, with a headline macro F1."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from conformance.datasets import LabelledReport
from conformance.eval_results import EvaluationResult, StageResult, TaskResult
from conformance.eval_scoring import (
    EvalOptions,
    compare_stages,
    rewrap_notes,
    rewrapped,
    routing_notes,
    run_reports,
    score_stage,
    stages_of,
    yes_if,
)
from conformance.metrics import NO, YES, Label, Pair, VariableSpec
from mappings.report import Extraction, FindingStatus


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
    notes: list[str] = list(rewrap_notes(options.rewrap))
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
                gold={LABEL_VARIABLES[n]: yes_if(item.labels.get(n, 0) == 1) for n in covered},
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
            spec.id: yes_if(openi_positive(status.get(spec.id, FindingStatus.NOT_MENTIONED)))
            for spec in specs
        }
        return labels, frozenset(), frozenset()

    stages = stages_of(options)
    advance = options.progress(len(cases) * len(stages)) if options.progress else None
    empty: dict[str, Label] = {spec.id: NO for spec in specs}
    runs = {
        stage: run_reports(template, cases, stage, options.settings, labels_of, empty, advance)
        for stage in stages
    }
    scored: dict[str, StageResult] = {
        stage: score_stage(specs, cases, stage, run, options.resamples, options.seed)
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
