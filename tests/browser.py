"""Debian's chromium for the browser tests (`make test` installs it; a missing one FAILS), and
the README's screenshots they take."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def chromium(needed_by: str) -> str:
    """The chromium executable; fails the test, saying what to install, when there is none."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (`make test` installs it); "
            f"{needed_by} need it"
        )
    return path


def shoot(page: Any, name: str) -> None:
    """README screenshots (not on ordinary runs): `RADBRIDGE_UI_SCREENSHOTS=docs pytest
    tests/test_ui_browser.py tests/test_ui_pages_browser.py tests/test_ui_insights_browser.py`."""
    folder = os.environ.get("RADBRIDGE_UI_SCREENSHOTS")
    if folder:
        target = (ROOT / folder) if not Path(folder).is_absolute() else Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / name), full_page=True)
