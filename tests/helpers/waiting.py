"""Polling until a condition holds, for tests that wait on a worker, a listener or a process."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 120.0,
    what: str = "the condition",
    *,
    interval: float = 0.2,
    tolerate: tuple[type[BaseException], ...] = (),
) -> float:
    """Poll `predicate()` until it is true; the seconds it took. Fails the test naming `what`
    after `timeout` seconds; exceptions of the `tolerate` types count as not yet."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with suppress(*tolerate):
            if predicate():
                return time.monotonic() - started
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
