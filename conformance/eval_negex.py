"""`radbridge eval` on the NegEx / ConText annotations: stage-1 assertion detection
(`workers.context.assess`) on each annotated sentence."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from conformance.datasets import LabelledReport
from conformance.errors import EvaluationError
from conformance.eval_results import EvaluationResult, Progress, TaskResult
from conformance.eval_scoring import EvalOptions, StageRun, score_stage, yes_if
from conformance.metrics import VariableSpec


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
    run = StageRun()
    for item in items:
        gold = {
            "negated": yes_if(item.gold == "negated"),
            "historical": yes_if(item.temporality == "historical"),
            "hypothetical": yes_if(item.temporality == "hypothetical"),
            "other_experiencer": yes_if(item.experiencer == "other"),
        }
        started = time.perf_counter()
        result = assess(item.sentence, item.start, item.end, "en")
        run.seconds.append(time.perf_counter() - started)
        predicted = {
            "negated": yes_if(result.negated),
            "historical": yes_if(result.historical),
            "hypothetical": yes_if(result.hypothetical),
            "other_experiencer": yes_if(result.other_experiencer),
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
        stages={"rules": score_stage(specs, cases, "rules", run, resamples, seed)},
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


def evaluate_negex_path(path: Path, options: EvalOptions) -> EvaluationResult:
    if options.stage not in (None, "rules"):
        raise EvaluationError("NegEx evaluates stage-1 assertion detection: use --stage rules")
    if options.rewrap is not None:
        raise EvaluationError("--rewrap wraps report texts; NegEx annotates single sentences")
    return evaluate_negex(path, resamples=options.resamples, seed=options.seed)
