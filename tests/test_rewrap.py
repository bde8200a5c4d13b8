"""Re-wrapped reports score as the reports do (issue 26), and `radbridge eval --rewrap N`.

Every labelled set's TEST half and the Open-i check half, hard-wrapped at 60 and 80 characters,
must score within 0.01 of the unwrapped text with the rules stage (macro and micro F1, macro
class accuracy, and lesion-location and diagnosis-episode pair F1 where the set has them). Scored
through `conformance.evaluate`, the code behind `radbridge eval`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.settings import Settings
from conformance.errors import EvaluationError
from conformance.eval_results import EvaluationResult
from conformance.eval_scoring import EvalOptions
from conformance.evaluate import run_evaluation
from conformance.rewrap import rewrap
from mappings.template import load_builtin_templates

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# every labelled set `radbridge eval` scores against a built-in template (a set written before its
# template ships joins when the template does)
LABELLED = sorted(
    path
    for path in (Path(__file__).parent / "fixtures" / "labelled").glob("*.jsonl")
    if path.stem in load_builtin_templates()
)
WIDTHS = (60, 80)
TOLERANCE = 0.01
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]


def _scores(result: EvaluationResult) -> dict[str, float]:
    scores: dict[str, float] = {}
    for task in result.tasks:
        metrics = task.stages["rules"].metrics
        named = {
            "macro F1": metrics.macro["f1"],
            "micro F1": metrics.micro.f1,
            "macro class accuracy": metrics.macro["class_accuracy"],
            "pair F1": metrics.pairs.f1 if metrics.pairs is not None else None,
            "episode F1": metrics.episodes.f1 if metrics.episodes is not None else None,
        }
        scores.update({f"{task.task} {k}": v for k, v in named.items() if v is not None})
    return scores


def _evaluate(path: Path, width: int | None, split: str | None) -> dict[str, float]:
    options = EvalOptions(Settings(), stage="rules", resamples=1, split=split, rewrap=width)
    return _scores(run_evaluation(path, options))


def _assert_within(path: Path, split: str | None) -> None:
    plain = _evaluate(path, None, split)
    assert plain
    for width in WIDTHS:
        wrapped = _evaluate(path, width, split)
        for name, score in plain.items():
            print(f"{path.name} {name}: unwrapped {score:.4f}, wrapped at {width} "
                  f"{wrapped[name]:.4f}")  # fmt: skip
            assert wrapped[name] >= score - TOLERANCE, (path.name, name, width)


@pytest.mark.parametrize("path", LABELLED, ids=lambda p: p.stem)
def test_rewrapped_test_half_scores_as_unwrapped(path: Path) -> None:
    _assert_within(path, "test")


def test_rewrapped_openi_check_half_scores_as_unwrapped() -> None:
    path = SHARED / "data" / "openi" / "openi_check.jsonl"
    if not path.is_file():
        pytest.skip(f"the Open-i check half is not in {path.parent} (../shared/data/openi)")
    _assert_within(path, None)


def test_rewrap_keeps_length_offsets_and_lines() -> None:
    text = (
        "FINDINGS: Heart is normal in size. There is no pericardial effusion.\n\n"
        "IMPRESSION:  Normal   chest. Supercalifragilisticexpialidocious-and-more-than-twenty"
    )
    wrapped = rewrap(text, 20)
    assert len(wrapped) == len(text)
    assert [a for a, b in zip(text, wrapped, strict=True) if a != b] == [" "] * (
        wrapped.count("\n") - text.count("\n")
    )
    assert "\n\nIMPRESSION:" in wrapped
    lines = wrapped.split("\n")
    assert all(len(line.rstrip()) <= 20 or " " not in line.strip() for line in lines)
    assert rewrap("short line", 20) == "short line"
    with pytest.raises(EvaluationError, match="at least 20"):
        rewrap(text, 19)


def test_eval_rewrap_option(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    dataset = str(LABELLED[0])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RADBRIDGE, "eval", dataset, "--stage", "rules", *args],
            capture_output=True, text=True, timeout=600, check=False, env=env,
        )  # fmt: skip

    done = run("--split", "test", "--rewrap", "60", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "hard-wrapped at 60 characters first (--rewrap 60)" in done.stderr.replace("\n", " ")
    assert (tmp_path / "metrics.json").is_file()
    narrow = run("--rewrap", "10", "--out", str(tmp_path / "narrow"))
    assert narrow.returncode == 2
    assert "--rewrap must be at least 20 characters" in narrow.stderr


def test_rewrap_is_refused_for_negex() -> None:
    negex = SHARED / "data" / "negex" / "Annotations-1-120.txt"
    if not negex.is_file():
        pytest.skip(f"the NegEx annotations are not in {negex.parent}")
    with pytest.raises(EvaluationError, match="NegEx annotates single sentences"):
        run_evaluation(negex, EvalOptions(Settings(), stage="rules", rewrap=60))
