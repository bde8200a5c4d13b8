"""Shared test fixtures: where `../shared` is, and the small model settings."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_dir() -> Path:
    return (REPO_ROOT / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The `../shared` folder beside the checkout; a missing folder FAILS the test (never skips)."""
    path = _shared_dir()
    if not (path / "DESIGN.md").is_file():
        pytest.fail(
            f"../shared not found at {path}: tests need the shared data beside the repository"
        )
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures."""
    return FIXTURES
