"""Enhanced-mode application ACKs carry the 0357 code of the rejection (issue 14: always 207
before), kept with the dead state (issue 22: the message is not parsed again). A real MLLP
receiver on a socket, a real SQLite store, the worker's own functions."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from adapter.mllp import FrameEvent, MllpServer
from adapter.settings import Settings
from adapter.store.messages import Incoming
from mappings import inbound
from mappings.hl7.ack import Disposition, build_ack
from mappings.hl7.msh import peek_msh
from workers import tasks
from workers.tasks import process_message, send_application_ack, store_for

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"


def test_application_ack_carries_the_rejection_code(tmp_path: Path) -> None:
    received: list[bytes] = []

    async def handler(event: FrameEvent) -> bytes:
        assert event.payload is not None
        received.append(event.payload)
        return build_ack(peek_msh(event.payload), Disposition.ACCEPTED, control_id="EHR1")

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ehr = MllpServer(handler, host="127.0.0.1", port=0)
    port = asyncio.run_coroutine_threadsafe(ehr.start(), loop).result(10)
    try:
        settings = Settings(
            data_dir=tmp_path, stage="rules", app_ack_target=f"mllp://127.0.0.1:{port}"
        )  # type: ignore[arg-type]
        store = store_for(settings)
        raw = (HL7_DIR / "bad_pdf_only.hl7").read_bytes().strip()
        raw = raw.replace(b"|P|2.5", b"|P|2.5|||AL|AL", 1)  # enhanced mode: MSH-15/16
        message = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "BAD0004"))
        assert process_message(store, settings, message.message_id) == []
        row = store.get_message(message.message_id)
        assert row is not None and row.state == "dead"
        assert (row.reason, row.rejection_code) == ("rejected: pdf_only", "102")
        with pytest.MonkeyPatch.context() as patch:  # the ACK needs no second parse
            patch.setattr(tasks, "parse_message", _no_second_parse)
            patch.setattr(inbound, "parse_message", _no_second_parse)
            send_application_ack(store, settings, message.message_id, success=False)
    finally:
        asyncio.run_coroutine_threadsafe(ehr.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert len(received) == 1
    segments = received[0].split(b"\r")
    assert segments[1] == b"MSA|AE|BAD0004"
    assert segments[2].startswith(b"ERR|||102^")  # pdf_only: DATA_TYPE_ERROR, not 207
    assert b"OBR 1: only non-text (e.g. PDF) content" in segments[2]  # the rejection's detail


def _no_second_parse(*_: object, **__: object) -> object:
    raise AssertionError("the message was parsed again")


def test_migration_0009_adds_the_rejection_columns_to_an_older_store(tmp_path: Path) -> None:
    from importlib.resources import files

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from adapter.store.connection import run_migrations

    store = store_for(Settings(data_dir=tmp_path, stage="rules"))  # type: ignore[arg-type]
    with store.engine.begin() as connection:  # back to what 0008 left
        connection.execute(sa.text("ALTER TABLE messages DROP COLUMN rejection_code"))
        connection.execute(sa.text("ALTER TABLE messages DROP COLUMN rejection_detail"))
        config = Config()
        config.set_main_option("script_location", str(files("adapter") / "migrations"))
        config.attributes["connection"] = connection
        command.stamp(config, "0008_destinations")
    run_migrations(store.engine)
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("messages")}
    assert {"rejection_code", "rejection_detail"} <= columns
