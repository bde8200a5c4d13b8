"""Real stores for tests: SQLite in a temporary data dir, or PostgreSQL (RADBRIDGE_TEST_DATABASE_URL)
in a schema of the test's own, dropped afterwards (no shared rows, no order dependence)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapter.settings import Settings
from adapter.store import Store

PG_URL = os.environ.get("RADBRIDGE_TEST_DATABASE_URL")
KINDS = ("sqlite", "postgresql")


@contextmanager
def open_store(kind: str, settings: Settings) -> Iterator[Store]:
    """An opened store of `kind`; a missing PostgreSQL URL skips the test with the reason."""
    if kind == "sqlite":
        opened = Store.open(settings)
        try:
            yield opened
        finally:
            opened.close()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need RADBRIDGE_TEST_DATABASE_URL (CI sets it)")
    with pg_schema_url() as url:
        opened = Store.open(settings, url=url)
        try:
            yield opened
        finally:
            opened.close()


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped on exit."""
    assert PG_URL is not None
    schema = f"rb_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def data_dir(tmp_path: Path) -> Path:
    """The data dir a test's Settings use."""
    return tmp_path / "data"
