"""Slow senders must not lock out MLLP (issue 15 item 4, issue 14 promise 9): real sockets
against the real listener with store-then-ACK. Flood peers drip a start block and then a byte
every 0.5 s (each byte would reset an idle timeout); a normal sender must still get its ACK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.settings import Settings
from adapter.store import Store
from mappings.framing import FrameReader, frame
from tests.test_mllp import Listener, message, msa

LIMITS = {
    "max_connections": 64,
    "max_connections_per_peer": 8,
    "reserved_connections": 8,
    "frame_timeout": 2.0,
    "idle_timeout": 300.0,
}


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = Listener(Store.open(Settings(data_dir=tmp_path)), **LIMITS)
    yield running
    running.close()


async def drip(port: int, source: str, stop: asyncio.Event) -> float | None:
    """A slowloris connection: start block, then one byte every 0.5 s until closed or told to
    stop; returns how long the listener kept it (None: still open when stopped)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:  # refused before the connection was up
        return 0.0
    opened = time.monotonic()
    try:
        writer.write(b"\x0bMSH|")
        while not stop.is_set():
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    return time.monotonic() - opened
            except TimeoutError:
                writer.write(b"x")
        return None
    except ConnectionError:
        return time.monotonic() - opened
    finally:
        writer.close()


async def send_one(port: int, source: str, n: int) -> tuple[bytes, float]:
    """A normal sender: one message, its ACK and how long the ACK took."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    frames = FrameReader(1 << 20)
    try:
        writer.write(frame(message(n)))
        await writer.drain()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "the listener closed the connection without an ACK"
            for event in frames.feed(data):
                assert event.payload is not None
                return event.payload, time.monotonic() - started
    finally:
        writer.close()


async def flood_then_send(
    port: int, sources: list[str], sender: str, hold: float = 1.0
) -> tuple[bytes, float, list[float | None]]:
    stop = asyncio.Event()
    drips = [asyncio.create_task(drip(port, source, stop)) for source in sources]
    await asyncio.sleep(hold)  # the flood holds its slots
    ack, seconds = await send_one(port, sender, 1)
    await asyncio.sleep(LIMITS["frame_timeout"] + 1.5 - hold)
    stop.set()
    kept = await asyncio.gather(*drips)
    return ack, seconds, kept


def test_two_hundred_slow_connections_from_one_peer_do_not_block_another(
    listener: Listener,
) -> None:
    ack, seconds, kept = asyncio.run(
        flood_then_send(listener.port, ["127.0.0.1"] * 200, sender="127.0.0.2")
    )
    assert msa(ack)[1] == "AA" and seconds < 1.0
    admitted = [k for k in kept if k is None or k > 0.5]  # the others were closed at once
    assert len(admitted) == 8  # the per-peer limit
    assert listener.server.refused >= 192
    # every admitted slow frame was cut at its deadline (2 s after its start block), though
    # it sent a byte every 0.5 s
    assert all(k is not None and k < LIMITS["frame_timeout"] + 1.0 for k in admitted)
    assert listener.server.frame_timeouts == len(admitted)


def test_slow_connections_from_many_peers_leave_room_for_a_new_sender(listener: Listener) -> None:
    sources = [f"127.0.{1 + i // 200}.{1 + i % 200}" for i in range(80)]
    ack, seconds, _ = asyncio.run(flood_then_send(listener.port, sources, sender="127.0.9.9"))
    assert msa(ack)[1] == "AA" and seconds < 1.0
    assert listener.server.evicted + listener.server.frame_timeouts >= 1


def test_a_slow_frame_completed_within_its_deadline_is_answered(listener: Listener) -> None:
    async def slow_but_complete() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        payload = frame(message(7))
        for start in range(0, len(payload), len(payload) // 4 + 1):
            writer.write(payload[start : start + len(payload) // 4 + 1])
            await writer.drain()
            await asyncio.sleep(0.3)  # 1.2 s in all: inside the 2 s deadline
        frames = FrameReader(1 << 20)
        try:
            while True:
                for event in frames.feed(await asyncio.wait_for(reader.read(65536), 10)):
                    assert event.payload is not None
                    return event.payload
        finally:
            writer.close()

    assert msa(asyncio.run(slow_but_complete()))[1] == "AA"
    assert listener.server.frame_timeouts == 0
