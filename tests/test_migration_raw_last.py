"""Migration 0010 (issue 25 item 4): a store whose `messages.raw` is not the last column (as
0009 left it) keeps every body byte for byte; on SQLite `raw` becomes the last column and new
bodies are written through blob I/O. SQLite always, PostgreSQL when configured (conftest)."""

from __future__ import annotations

import random
from importlib.resources import files

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from adapter.store import Store
from adapter.store.connection import run_migrations
from adapter.store.messages import Incoming


def _incoming(n: int, raw: bytes) -> Incoming:
    return Incoming(
        raw=raw,
        channel="http",
        sending_application="RIS",
        sending_facility="FAC",
        control_id=f"C{n}",
    )


def _bodies() -> list[bytes]:
    generator = random.Random(10)
    return [b"", b"\x00\x0bMSH|^~\\&|\x1c\r"] + [
        generator.randbytes(size) for size in (1, 4095, 4096, 70_000, 2 * 1024 * 1024 + 3)
    ]


def _back_to_0009(store: Store) -> None:
    """Drop 0009's columns and stamp 0008, so 0009 adds them after `raw` (where an older store
    has them); the stored rows stay."""
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE messages DROP COLUMN rejection_code"))
        connection.execute(sa.text("ALTER TABLE messages DROP COLUMN rejection_detail"))
        config = Config()
        config.set_main_option("script_location", str(files("adapter") / "migrations"))
        config.attributes["connection"] = connection
        command.stamp(config, "0008_destinations")


def _columns(store: Store) -> list[str]:
    return [column["name"] for column in sa.inspect(store.engine).get_columns("messages")]


def test_0010_keeps_every_body_and_puts_raw_last_on_sqlite(store: Store) -> None:
    bodies = _bodies()
    ids = [store.accept(_incoming(n, body)).message_id for n, body in enumerate(bodies)]
    _back_to_0009(store)
    run_migrations(store.engine)  # 0009, then 0010
    assert [store.raw(message_id) for message_id in ids] == bodies
    columns = _columns(store)
    assert {"rejection_code", "rejection_detail"} <= set(columns)
    if store.is_sqlite:
        assert columns[-1] == "raw"
    later = bodies[-1][::-1]  # a new body after the migration, through the store's insert path
    new_id = store.accept(_incoming(99, later)).message_id
    assert store.raw(new_id) == later
    with store.engine.connect() as connection:
        size = connection.execute(
            sa.text("SELECT size FROM messages WHERE id = :id"), {"id": new_id}
        ).scalar_one()
    assert size == len(later)


def test_a_fresh_store_has_raw_last_and_0010_leaves_it(store: Store) -> None:
    body = b"MSH|^~\\&|RIS|FAC\r" * 1000
    message_id = store.accept(_incoming(1, body)).message_id
    before = _columns(store)
    run_migrations(store.engine)
    assert _columns(store) == before
    assert before[-1] == "raw"
    assert store.raw(message_id) == body
