"""MLLP framing (bytes fed to the reader) and the listener with store-then-ACK on real sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.control_ids import ControlIds
from adapter.ingest import Hl7Ingest
from adapter.mllp import FrameReader, MllpClient, MllpServer, frame
from adapter.settings import Settings
from adapter.store import Store
from mappings.hl7.ack import Disposition, needs_application_ack, needs_commit_ack
from mappings.hl7.msh import peek_msh

MSG = b"MSH|^~\\&|RIS|FAC|RB|RBF|20260101||ORU^R01|C{n}|P|2.5\rPID|1||M1\rOBR|1||A1\rOBX|1|TX|X||text {n}||||||F"


def message(n: int, tail: bytes = b"") -> bytes:
    return MSG.replace(b"{n}", str(n).encode()).replace(b"|P|2.5", b"|P|2.5" + tail)


# -- framing ----------------------------------------------------------------------------------


def test_single_bytes_and_junk_before_start() -> None:
    reader = FrameReader(1024)
    stream = b"junk\r\n" + frame(b"ONE") + frame(b"TWO\x1cX")
    out = [e.payload for byte in stream for e in reader.feed(bytes([byte]))]
    assert out == [b"ONE", b"TWO\x1cX"]
    assert reader.junk_bytes == 6


def test_oversize_frame_is_discarded_and_reader_stays_in_sync() -> None:
    reader = FrameReader(10)
    events = reader.feed(frame(b"x" * 50) + frame(b"ok"))
    assert [(e.oversize, e.size) for e in events] == [(True, 50), (False, 2)]
    assert events[1].payload == b"ok"


@settings(max_examples=100, deadline=None)
@given(
    payloads=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=40),
)
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    reader = FrameReader(1024)
    out: list[bytes | None] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        out += [e.payload for e in reader.feed(stream[position : position + cut])]
        position += cut
    out += [e.payload for e in reader.feed(stream[position:])]
    assert out == payloads


def test_enhanced_mode_table() -> None:
    rules = {"AL": (True, True), "NE": (False, False), "ER": (False, True), "SU": (True, False)}
    for rule, (on_success, on_error) in rules.items():
        peek = peek_msh(message(1, b"|||" + rule.encode() + b"|AL"))
        assert needs_commit_ack(peek, Disposition.ACCEPTED) is on_success, rule
        assert needs_commit_ack(peek, Disposition.REJECTED) is on_error, rule
    original = peek_msh(message(1))
    assert needs_commit_ack(original, Disposition.ACCEPTED) and needs_commit_ack(
        original, Disposition.ERROR
    )
    assert needs_application_ack(peek_msh(message(1, b"|||AL|ER")), Disposition.ERROR)
    assert not needs_application_ack(peek_msh(message(1, b"|||AL|ER")), Disposition.ACCEPTED)


# -- listener on real sockets ------------------------------------------------------------------


class Listener:
    """An MllpServer with Hl7Ingest on a real store, run on its own event loop thread."""

    def __init__(
        self, store: Store, control_ids: ControlIds | None = None, **server_options: object
    ) -> None:
        self.store = store
        self.accepted: list[int] = []
        self.ingest = Hl7Ingest(store, on_accepted=self.accepted.append, control_ids=control_ids)
        self.loop = asyncio.new_event_loop()
        self.server = MllpServer(self.ingest, host="127.0.0.1", port=0, **server_options)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.ingest.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = Listener(Store.open(Settings(data_dir=tmp_path)))
    yield running
    running.close()


def send_raw(port: int, data: bytes, *, expect: int = 1, timeout: float = 10) -> list[bytes]:
    reader = FrameReader(1 << 20)
    acks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        while len(acks) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            acks += [e.payload for e in reader.feed(chunk) if e.payload is not None]
    return acks


def msa(ack: bytes) -> list[str]:
    segment = next(s for s in ack.decode().split("\r") if s.startswith("MSA"))
    return segment.split("|")


def scout_frames(shared_dir: Path, limit: int) -> list[bytes]:
    root = shared_dir / "fixtures/hl7v2/scout/tests/ingest/staging_test_data/postgres"
    frames: list[bytes] = []
    for path in sorted(root.rglob("*.log")):
        for body in re.findall(rb"<SB>\s*(MSH.*?)<EB>", path.read_bytes(), re.DOTALL):
            frames.append(b"\r".join(s.strip() for s in body.split(b"<R>") if s.strip()))
    return frames[:limit]


def test_scout_messages_via_python_hl7_client(listener: Listener, shared_dir: Path) -> None:
    from hl7.client import MLLPClient

    frames = scout_frames(shared_dir, 40)
    assert len(frames) == 40
    with MLLPClient("127.0.0.1", listener.port, encoding="latin-1") as client:
        for payload in frames:
            ack = client.send_message(payload.decode("latin-1"))
            control_id = peek_msh(payload).control_id
            fields = msa(ack.strip(b"\x0b\x1c\r"))
            assert fields[1:3] == ["AA", control_id]
    assert len(listener.accepted) == len({peek_msh(f).control_id for f in frames})
    assert listener.store.counts_by_state()["accepted"] == len(listener.accepted)


def test_duplicate_gets_identical_ack_and_is_not_processed_twice(listener: Listener) -> None:
    first = send_raw(listener.port, frame(message(7)))[0]
    second = send_raw(listener.port, frame(message(7)))[0]
    assert first == second
    assert len(listener.accepted) == 1


def test_junk_frame_gets_ar_with_err(listener: Listener) -> None:
    (ack,) = send_raw(listener.port, frame(b"this is not HL7"))
    assert msa(ack)[1] == "AR"
    err = next(s for s in ack.decode().split("\r") if s.startswith("ERR"))
    assert "100" in err
    assert listener.accepted == []


def test_not_oru_gets_ar_200(listener: Listener) -> None:
    adt = message(3).replace(b"ORU^R01", b"ADT^A01")
    (ack,) = send_raw(listener.port, frame(adt))
    assert msa(ack)[1:3] == ["AR", "C3"]
    assert "200^" in ack.decode()


def test_enhanced_mode_commit_ack(listener: Listener) -> None:
    (ack,) = send_raw(listener.port, frame(message(11, b"|||AL|NE")))
    assert msa(ack)[1] == "CA"
    # NE: no commit ACK; the message is still stored
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
        sock.sendall(frame(message(12, b"|||NE|NE")) + frame(message(13)))
        reader = FrameReader(1 << 20)
        acks: list[bytes] = []
        while not acks:
            acks += [e.payload for e in reader.feed(sock.recv(65536)) if e.payload is not None]
    assert msa(acks[0])[1:3] == ["AA", "C13"]  # the NE message got no answer, the next one did
    assert len(listener.accepted) == 3


def test_oversize_frame_gets_nak_and_connection_continues(tmp_path: Path) -> None:
    running = Listener(Store.open(Settings(data_dir=tmp_path)), max_frame_bytes=1000)
    try:
        acks = send_raw(running.port, frame(b"MSH|" + b"x" * 5000) + frame(message(1)), expect=2)
        assert [msa(a)[1] for a in acks] == ["AR", "AA"]
    finally:
        running.close()


def test_storage_failure_gets_ae_and_resend_succeeds(tmp_path: Path) -> None:
    store = Store.open(Settings(data_dir=tmp_path))
    running = Listener(store)
    try:
        original = store.accept_many

        def broken(*args: object, **kwargs: object) -> object:
            raise __import__("adapter.errors").errors.StoreError("disk full")

        store.accept_many = broken  # type: ignore[method-assign,assignment]
        (nak,) = send_raw(running.port, frame(message(21)))
        assert msa(nak)[1] == "AE"
        assert store.counts_by_state()["accepted"] == 0
        store.accept_many = original  # type: ignore[method-assign]
        (ack,) = send_raw(running.port, frame(message(21)))
        assert msa(ack)[1] == "AA"
        assert running.accepted and len(running.accepted) == 1
    finally:
        running.close()


def test_thousand_messages_on_one_connection(listener: Listener) -> None:
    async def run() -> list[bytes]:
        client = MllpClient("127.0.0.1", listener.port, timeout=10)
        acks = [await client.send(message(n)) for n in range(1000)]
        await client.close()
        return acks

    acks = asyncio.run(run())
    assert [msa(a)[2] for a in acks] == [f"C{n}" for n in range(1000)]
    assert listener.store.counts_by_state()["accepted"] == 1000


def test_idle_timeout_and_max_connections(tmp_path: Path) -> None:
    running = Listener(Store.open(Settings(data_dir=tmp_path)), idle_timeout=0.3, max_connections=1)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as first:
            first.sendall(frame(message(1)))
            assert first.recv(65536)
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as second:
                assert second.recv(65536) == b""  # over the limit: closed, no frame was sent
            first.settimeout(5)
            assert first.recv(65536) == b""  # idle timeout closed the first one
    finally:
        running.close()


def test_tls_listener(tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = Settings(data_dir=tmp_path / "d", mllp_tls_cert=cert, mllp_tls_key=key)
    running = Listener(Store.open(settings), ssl_context=settings.mllp_ssl_context())
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        client_context.check_hostname = False

        async def run() -> bytes:
            client = MllpClient("127.0.0.1", running.port, timeout=10, ssl_context=client_context)
            ack = await client.send(message(5))
            await client.close()
            return ack

        assert msa(asyncio.run(run()))[1:3] == ["AA", "C5"]
        with (
            pytest.raises(ConnectionError),
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as plain,
        ):
            plain.sendall(frame(message(6)))
            if not plain.recv(65536):
                raise ConnectionError("closed without an answer to plain TCP")
    finally:
        running.close()


def test_half_configured_tls_is_refused(tmp_path: Path) -> None:
    from adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="RADBRIDGE_MLLP_TLS_KEY"):
        Settings(mllp_tls_cert=tmp_path / "c.pem").mllp_ssl_context()


SLOW_LISTENER = """
import asyncio, sys, time
from pathlib import Path
from adapter.ingest import Hl7Ingest
from adapter.mllp import MllpServer
from adapter.settings import Settings
from adapter.store import Store

store = Store.open(Settings(data_dir=Path(sys.argv[1])))
original = store.accept_many
def slow(*args, **kwargs):
    time.sleep(30)  # killed here: received, not yet committed
    return original(*args, **kwargs)
store.accept_many = slow

async def main():
    server = MllpServer(Hl7Ingest(store), host="127.0.0.1", port=0)
    print(await server.start(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_killed_between_receive_and_commit_then_resend(tmp_path: Path) -> None:
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_LISTENER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(frame(message(31)))
            time.sleep(0.5)
            process.kill()  # the listener dies before the commit
            process.wait(10)
            assert sock.recv(65536) == b""  # no ACK was sent for an uncommitted message
    finally:
        if process.poll() is None:
            process.kill()
    store = Store.open(Settings(data_dir=tmp_path))
    assert store.counts_by_state()["accepted"] == 0
    running = Listener(store)
    try:
        (ack,) = send_raw(running.port, frame(message(31)))
        assert msa(ack)[1] == "AA"
        (again,) = send_raw(running.port, frame(message(31)))
        assert again == ack
        assert store.counts_by_state()["accepted"] == 1 and len(running.accepted) == 1
    finally:
        running.close()


def test_ingest_counts_frames(listener: Listener) -> None:
    send_raw(listener.port, frame(message(41)) + frame(message(41)) + frame(b"junk"), expect=3)
    assert listener.ingest.counters == {"received": 3, "acked": 2, "rejected": 1, "duplicates": 1}
