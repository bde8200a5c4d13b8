"""Debian's chromium for the browser tests (`make test` installs it; a missing one FAILS), the
browser the UI tests drive, their sign-in, and the README's screenshots they take."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def launched(needed_by: str) -> Iterator[Any]:
    """Headless Debian chromium under Playwright (the UI tests' module-scoped `browser`)."""
    from playwright.sync_api import sync_playwright

    executable = chromium(needed_by)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def sign_in(
    browser: Any,
    base: str,
    user: tuple[str, str],
    *,
    height: int = 1000,
    accept_dialogs: bool = False,
) -> Any:
    """A new page signed in to `base`'s /ui as `user` (name, password); `accept_dialogs`
    answers every confirmation (a Reject asks first) with OK."""
    page = browser.new_context(viewport={"width": 1400, "height": height}).new_page()
    if accept_dialogs:
        page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{base}/ui/login")
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page
