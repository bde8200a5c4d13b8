"""Debian's chromium for the browser tests (`make test` installs it; a missing one FAILS)."""

from __future__ import annotations

import shutil

import pytest


def chromium(needed_by: str) -> str:
    """The chromium executable; fails the test, saying what to install, when there is none."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (`make test` installs it); "
            f"{needed_by} need it"
        )
    return path
