"""Size scoring (issue 20 item 5): gold `_attributes` `size_mm` against the extraction's sizes,
P/R/F1 with intervals, per template in `radbridge eval`; the measured numbers of the sized
labelled sets are in the lead's closing note, the floors here keep them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.settings import Settings
from conformance.datasets import load_jsonl, parse_record
from conformance.errors import DatasetError
from conformance.evaluate import EvalOptions, run_evaluation
from conformance.labels import gold_sizes, size_pair
from conformance.metrics import NOT_MENTIONED, VariableSpec, evaluate_labels
from mappings.template import get_template

LABELLED = Path(__file__).parent / "fixtures" / "labelled"
SIZES = LABELLED / "sizes.jsonl"
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]


def test_a_size_pair_is_the_finding_and_its_dimensions_in_mm() -> None:
    assert size_pair("liver_lesion", (32.0, 21.0)) == ("liver_lesion", "32x21")
    assert size_pair("mass", (8.25,)) == ("mass", "8.25")
    assert gold_sizes([["mass", {"side": "left"}], ["mass", {"size_mm": [12, 9]}]]) == {
        ("mass", "12x9")
    }


def test_size_recall_and_precision_count_like_pairs() -> None:
    spec = VariableSpec("mass", "presence")
    gold = [{"mass": "present"}, {"mass": "present"}, {"mass": NOT_MENTIONED}]
    gold_sets = [
        frozenset({("mass", "12x9")}),
        frozenset({("mass", "8"), ("mass", "5")}),
        frozenset(),
    ]
    pred_sets = [
        frozenset({("mass", "12x9")}),
        frozenset({("mass", "8")}),
        frozenset({("mass", "3")}),
    ]
    metrics = evaluate_labels(
        [spec], gold, gold, gold_sizes=gold_sets, pred_sizes=pred_sets, resamples=50
    )
    assert metrics.sizes is not None
    assert (metrics.sizes.tp, metrics.sizes.fp, metrics.sizes.fn) == (2, 1, 1)
    assert metrics.sizes.recall == pytest.approx(2 / 3)
    assert metrics.sizes.precision == pytest.approx(2 / 3)
    assert evaluate_labels([spec], gold, gold).sizes is None


def test_the_sizes_set_loads_with_its_gold_sizes() -> None:
    dataset = load_jsonl(SIZES)
    assert len(dataset.reports) == 25
    by_id = {r.id: r for r in dataset.reports}
    assert by_id["sz-en-01"].sizes == {("liver_lesion", "32x21")}
    assert by_id["sz-de-02"].sizes == {("liver_lesion", "22"), ("liver_lesion", "7")}


def test_a_size_that_is_not_a_list_of_positive_numbers_is_a_dataset_error() -> None:
    record = json.loads(SIZES.read_text(encoding="utf-8").splitlines()[0])
    record["gold"]["_attributes"] = [["liver_lesion", {"size_mm": "32 x 21"}]]
    with pytest.raises(DatasetError, match="size_mm"):
        parse_record(record, "sizes.jsonl", 1, get_template)


def test_eval_scores_sizes_per_template_on_the_dev_half() -> None:
    result = run_evaluation(
        SIZES, EvalOptions(Settings(), stage="rules", split="dev", resamples=20)
    )
    tp = fn = fp = 0
    for task in result.tasks:
        sizes = task.stages["rules"].metrics.sizes
        assert sizes is not None, task.task
        tp, fn, fp = tp + sizes.tp, fn + sizes.fn, fp + sizes.fp
    # measured 2026-12-07 (dev half, 12 reports): 10 of 14 gold sizes, no wrong size
    assert tp + fn == 14
    assert tp >= 10 and fp == 0


def test_the_cli_prints_size_recall(tmp_path: Path) -> None:
    subset = tmp_path / "two.jsonl"
    lines = SIZES.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [*RADBRIDGE, "eval", str(subset), "--stage", "rules", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "size recall (2/2)" in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert "sizes" in json.dumps(metrics)
