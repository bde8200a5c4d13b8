"""`python -m app.cli` runs the same command line as the `radbridge` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
        check=False,
    )  # fmt: skip


def test_python_m_app_cli_is_the_radbridge_command() -> None:
    module = _run("-m", "app.cli", "--help")
    script = _run("-c", "from app.cli import main; main()", "--help")
    assert module.returncode == 0, module.stderr
    assert "eval" in module.stdout and "templates" in module.stdout

    # the same help but for the program name of its "Usage:" line
    def commands(text: str) -> list[str]:
        return [line for line in text.splitlines() if "Usage:" not in line]

    assert commands(module.stdout) == commands(script.stdout)


def test_python_m_app_cli_runs_a_command() -> None:
    listed = _run("-m", "app.cli", "templates", "list")
    assert listed.returncode == 0, listed.stderr
    assert "msk_radiograph" in listed.stdout


def test_python_m_app_cli_bad_option_exits_2() -> None:
    assert _run("-m", "app.cli", "eval", "--no-such-option").returncode == 2
