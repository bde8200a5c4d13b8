"""Enhanced-mode application ACKs carry the 0357 code of the rejection (issue 14: always 207
before). A real MLLP receiver on a socket, a real SQLite store, the worker's own functions."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from adapter.mllp import FrameEvent, MllpServer
from adapter.settings import Settings
from adapter.store import Incoming
from mappings.ack import Disposition, build_ack
from mappings.msh import peek_msh
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
        assert store.get_message(message.message_id).state == "dead"  # type: ignore[union-attr]
        send_application_ack(store, settings, message.message_id, success=False)
    finally:
        asyncio.run_coroutine_threadsafe(ehr.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert len(received) == 1
    segments = received[0].split(b"\r")
    assert segments[1] == b"MSA|AE|BAD0004"
    assert segments[2].startswith(b"ERR|||102^")  # pdf_only: DATA_TYPE_ERROR, not 207
