"""`radbridge eval` progress on stderr: a bar on a terminal (a real pty), lines elsewhere (a
pipe), nothing with --quiet (subprocess, the labelled fixture, rules stage); `LineProgress` on
its own with a clock the test moves."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from app.progress import LineProgress

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
DATASET = Path(__file__).parent / "fixtures" / "eval" / "chest_findings.jsonl"
REPORTS = sum(1 for line in DATASET.read_text("utf-8").splitlines() if line.strip())
ENV = {**os.environ, "COLUMNS": "200", "TERM": "xterm-256color"}


def _eval(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [*RADBRIDGE, "eval", str(DATASET), "--stage", "rules", "--out", str(tmp_path), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV, check=False)


def test_eval_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = _eval(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("evaluating")]
    assert lines[0].startswith(f"evaluating (rules): 0/{REPORTS} (0%), 0:00:")
    assert lines[-1].startswith(f"evaluating (rules): {REPORTS}/{REPORTS} (100%)")
    assert "elapsed" in lines[-1] and "left" not in lines[-1]
    assert "progress" not in result.stdout and "evaluating" not in result.stdout


def test_eval_quiet_prints_no_progress(tmp_path: Path) -> None:
    result = _eval(tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "evaluating" not in result.stderr
    assert (tmp_path / "metrics.json").is_file()


def test_eval_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    args = [*RADBRIDGE, "eval", str(DATASET), "--stage", "rules", "--out", str(tmp_path)]
    process = subprocess.Popen(
        args, env=ENV, stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL
    )
    os.close(terminal)
    seen = b""
    while True:  # read as it comes (a full pty would block the child) until the child closes it
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=600) == 0
    text = seen.decode("utf-8", "replace")
    assert "evaluating (rules)" in text and f"{REPORTS}/{REPORTS}" in text
    assert "━" in text  # the bar
    assert "(100%)" not in text  # not the plain lines


def test_line_progress_prints_each_tenth_and_while_a_step_takes_long() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = LineProgress(stream, interval_s=30.0, clock=lambda: now[0])
    advance = progress.start("evaluating (llm)", 20)
    for _ in range(2):  # 1/20, then 2/20: a tenth
        now[0] += 1.0
        advance()
    now[0] += 45.0  # one slow report: a line although it reaches no new tenth
    advance()
    for _ in range(17):
        advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "evaluating (llm): 0/20 (0%), 0:00:00 elapsed"
    assert lines[1] == "evaluating (llm): 2/20 (10%), 0:00:02 elapsed, about 0:00:18 left"
    assert lines[2] == "evaluating (llm): 3/20 (15%), 0:00:47 elapsed, about 0:04:26 left"
    assert lines[3].startswith("evaluating (llm): 4/20 (20%)")
    assert lines[-1] == "evaluating (llm): 20/20 (100%), 0:00:47 elapsed"
    assert len(lines) == 12  # the start, each tenth, and the slow step
