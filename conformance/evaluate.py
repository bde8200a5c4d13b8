"""`radbridge eval`: labelled reports -> extraction per stage -> metrics (`conformance.metrics`).

Datasets are loaded by `conformance.datasets` and turned into labels by `conformance.labels`.
This module detects a dataset's format and hands it to its evaluator: `DATASET_FORMATS` pairs
each format's detector with its evaluator (the first detector that matches wins). One module per
report kind: `eval_labelled` (labelled JSONL, DRAGON), `eval_negex` (stage-1 assertion
detection on each annotated NegEx sentence), `eval_openi`; they share `eval_scoring` (running
and scoring a stage, McNemar) and `eval_results` (what was measured); `eval_output` writes
metrics.json and the summary tables. `EvalOptions.rewrap` hard-wraps every
report text first (`conformance.rewrap`, `--rewrap N`): the same reports as a RIS that wraps them.

No report text leaves this module: results carry ids, variable ids and labels only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conformance.datasets import is_dragon, is_negex, load_dragon, load_jsonl
from conformance.errors import EvaluationError
from conformance.eval_labelled import evaluate_loaded
from conformance.eval_negex import evaluate_negex_path
from conformance.eval_openi import evaluate_openi
from conformance.eval_results import EvaluationResult
from conformance.eval_scoring import EvalOptions
from conformance.openi import is_openi
from conformance.rewrap import check_width


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format: how to recognise it and how to evaluate it."""

    name: str
    detect: Callable[[Path], bool]
    evaluate: Callable[[Path, EvalOptions], EvaluationResult]


DATASET_FORMATS: tuple[DatasetFormat, ...] = (
    DatasetFormat("negex", is_negex, evaluate_negex_path),
    DatasetFormat("openi", is_openi, evaluate_openi),
    DatasetFormat("dragon", is_dragon, lambda p, o: evaluate_loaded(load_dragon(p, o.template), o)),
    DatasetFormat(
        "jsonl",
        Path.is_file,
        lambda p, o: evaluate_loaded(load_jsonl(p, o.template, o.split, o.lookup), o),
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
