"""Opening the store's database, its schema (Alembic migrations) and its transactions.

SQLAlchemy 2 Core (no ORM in the hot path); the schema is created and upgraded by Alembic
migrations in `adapter/migrations/`, run by `Store.open`. SQLite in WAL mode with
`synchronous=FULL` is the embedded default (`<data_dir>/radbridge.db`: an ACK means the
message survives a power cut); PostgreSQL via `RADBRIDGE_DATABASE_URL`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adapter.errors import StoreError, StoreRefused
from adapter.settings import Settings

log = logging.getLogger("radbridge.store")


def utc_now() -> datetime:
    """The store's clock (aware, UTC)."""
    return datetime.now(UTC)


def default_database_url(settings: Settings) -> str:
    """SQLite in the data dir unless RADBRIDGE_DATABASE_URL is set."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{(Path(settings.data_dir) / 'radbridge.db').resolve()}"


def _sqlite_pragmas(synchronous: str) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return apply


def run_migrations(engine: Engine) -> None:
    """Upgrade the schema to the newest Alembic revision (idempotent)."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("adapter") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class StoreBase:
    """The database the store's parts share. Thread-safe: every call takes its own connection
    from the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, settings: Settings, *, url: str | None = None, migrate: bool = True) -> Self:
        """Connect (creating the data dir for SQLite) and run migrations (`migrate=False`: a
        worker's pool process, whose worker brought the schema to head before it forked)."""
        url = url or default_database_url(settings)
        try:
            if url.startswith("sqlite"):
                Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}
                )
                sa.event.listen(engine, "connect", _sqlite_pragmas(settings.sqlite_synchronous))
            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            if migrate:
                run_migrations(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the store ({type(exc).__name__}; check RADBRIDGE_DATABASE_URL)"
            ) from None
        store = cls(engine)
        log.info("store opened dialect=%s", engine.dialect.name)
        return store

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction (commit on success, rollback on error); database errors become
        `StoreRefused` (the values) or `StoreError` (anything else), an IntegrityError stays."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DataError:  # the values, not the database: the same row fails again
            raise StoreRefused("the database refused the values (DataError)") from None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store operation failed ({type(exc).__name__})") from None
