"""report.html: self-contained, escaped, and rendered with its plots by headless Chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adapter.settings import Settings
from conformance.datasets import load_jsonl
from conformance.eval_labelled import evaluate_dataset
from conformance.eval_results import CellError, EvaluationResult, StageResult, TaskResult, Timing
from conformance.eval_scoring import compare_stages
from conformance.metrics import NOT_MENTIONED, VariableSpec, evaluate_labels
from conformance.report_html import render_html, write_report
from tests.browser import chromium

DATASET = Path(__file__).parent / "fixtures" / "eval" / "chest_findings.jsonl"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
BAR_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # the first stage's bar colour


@pytest.fixture(scope="module")
def chest_result() -> EvaluationResult:
    return evaluate_dataset(load_jsonl(DATASET), ("rules",), Settings(), resamples=200)


def _typed_result() -> EvaluationResult:
    """Two stages on an ordinal and an enum variable, with a hostile report id."""
    specs = (
        VariableSpec("fazekas", "ordinal", (0, 1, 2, 3)),
        VariableSpec("diagnosis", "enum", ("dcm", "hcm", "normal")),
    )
    gold = [
        {"fazekas": g, "diagnosis": d}
        for g, d in [(1, "dcm"), (2, "hcm"), (NOT_MENTIONED, "normal"), (3, "dcm")]
    ]
    runs = {
        "rules": [{"fazekas": 1, "diagnosis": NOT_MENTIONED}, {"fazekas": 2, "diagnosis": "hcm"},
                  {"fazekas": NOT_MENTIONED, "diagnosis": "normal"}, {"fazekas": 2, "diagnosis": "dcm"}],
        "llm": [{"fazekas": 1, "diagnosis": "dcm"}, {"fazekas": 3, "diagnosis": "hcm"},
                {"fazekas": 0, "diagnosis": "normal"}, {"fazekas": 3, "diagnosis": "dcm"}],
    }  # fmt: skip
    timing = Timing(4, 0.4, 0.1, 0.1, 0, 0.0, None)
    stages = {
        name: StageResult(
            name,
            evaluate_labels(specs, gold, labels, resamples=100),
            timing,
            (CellError("<script>alert(1)</script>", "fazekas", 3, 2),),
            1,
        )
        for name, labels in runs.items()
    }
    task = TaskResult(
        "typed & <demo>", "Typed demo", "template", specs, stages, compare_stages(specs, gold, runs)
    )
    return EvaluationResult(
        "set.jsonl", "jsonl", "2026-11-24T00:00:00+00:00", None, 100, 0, (task,)
    )


def test_html_is_self_contained(chest_result: EvaluationResult) -> None:
    html = render_html(chest_result)
    assert '<img src="data:image/png;base64,' in html
    # one F1 bar plot and one confusion-matrix grid (one stage)
    assert html.count("<img ") == 2
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    assert "cardiomegaly" in html and "0.833" in html  # the macro F1 (5/6)


def test_html_escapes_and_shows_every_stage() -> None:
    html = render_html(_typed_result())
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "typed &amp; &lt;demo&gt;" in html
    assert html.count("<img ") == 3  # bar plot + one confusion grid per stage
    assert "rules vs llm" in html
    assert "McNemar p" in html


def _chromium() -> str:
    return chromium("the HTML report screenshot tests")


def _screenshot(html: Path, png: Path, profile: Path) -> None:
    result = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--screenshot={png}",
            "--window-size=1200,2000",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_chromium_renders_the_plots(chest_result: EvaluationResult, tmp_path: Path) -> None:
    from matplotlib.image import imread

    html = tmp_path / "report.html"
    write_report(chest_result, html)
    png = tmp_path / "shot.png"
    _screenshot(html, png, tmp_path / "profile")
    assert png.is_file() and png.stat().st_size > 20_000
    pixels = imread(str(png))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    not_white = np.any(pixels < 0.94, axis=-1).mean()
    assert not_white > 0.03, f"page looks blank ({not_white:.1%} non-white pixels)"
    bar_pixels = np.all(np.abs(pixels - BAR_BLUE) < 0.04, axis=-1).sum()
    assert bar_pixels > 2_000, f"the F1 bar plot did not render ({bar_pixels} bar-blue pixels)"


def test_chromium_renders_a_blank_page_as_blank(tmp_path: Path) -> None:
    """The pixel checks above can tell a page without plots from one with them."""
    from matplotlib.image import imread

    html = tmp_path / "empty.html"
    html.write_text("<!DOCTYPE html><html><body><p>nothing</p></body></html>", "utf-8")
    png = tmp_path / "empty.png"
    _screenshot(html, png, tmp_path / "profile")
    pixels = imread(str(png))[..., :3]
    assert np.all(np.abs(pixels - BAR_BLUE) < 0.04, axis=-1).sum() == 0
    assert np.any(pixels < 0.94, axis=-1).mean() < 0.01
