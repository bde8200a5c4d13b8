"""A permanent store error is a rejection, and it fails alone (issue 15 item 5): real sockets,
the real listener with its group commit, on SQLite and PostgreSQL (tests/stores.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.errors import StoreRefused
from adapter.ingest import GroupCommitter, Hl7Ingest
from adapter.mllp import MllpClient
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.stores import open_store
from tests.test_mllp import Listener, message, msa

SENDERS = 8
PER_SENDER = 25
LONG_ID = "L" * 300  # MSH-10 longer than the store's 255-character column


def err_code(ack: bytes) -> str:
    """ERR-3.1 (v2.5: the 0357 code) of a NAK."""
    segment = next(s for s in ack.decode("latin-1").split("\r") if s.startswith("ERR"))
    return segment.split("|")[3].split("^")[0]


async def eight_senders(port: int) -> tuple[list[list[bytes]], bytes]:
    """8 connections send at once; sender 0's 13th message carries a 300-character MSH-10.
    Returns every sender's ACKs (good messages only) and the bad message's ACK."""
    bad_ack: list[bytes] = []

    async def sender(s: int) -> list[bytes]:
        client = MllpClient("127.0.0.1", port, timeout=20)
        acks = []
        try:
            for i in range(PER_SENDER):
                if s == 0 and i == PER_SENDER // 2:
                    long = message(0).replace(b"|C0|", f"|{LONG_ID}|".encode())
                    bad_ack.append(await client.send(long))
                acks.append(await client.send(message(s * 1000 + i)))
        finally:
            await client.close()
        return acks

    acks = await asyncio.gather(*(sender(s) for s in range(SENDERS)))
    return list(acks), bad_ack[0]


def test_overlong_msh10_is_rejected_and_the_other_senders_are_accepted(store: Store) -> None:
    listener = Listener(store)
    try:
        acks, bad = asyncio.run(eight_senders(listener.port))
    finally:
        listener.close()
    # before the fix: AE "please resend" on PostgreSQL (and the rest of its group AE too),
    # AA with the 300 characters stored on SQLite
    assert msa(bad)[1] == "AR"
    assert err_code(bad) == "104" and b"MSH-10 is longer than 255 characters" in bad
    codes = [msa(ack)[1] for sender in acks for ack in sender]
    assert codes == ["AA"] * SENDERS * PER_SENDER
    assert store.counts_by_state()["accepted"] == SENDERS * PER_SENDER
    assert listener.ingest.committer.groups < SENDERS * PER_SENDER  # the group commit grouped


def test_a_nul_in_msh10_is_rejected_before_the_commit(store: Store) -> None:
    listener = Listener(store)
    try:

        async def send() -> bytes:
            client = MllpClient("127.0.0.1", listener.port, timeout=20)
            try:
                return await client.send(message(1).replace(b"|C1|", b"|C\x001|"))
            finally:
                await client.close()

        ack = asyncio.run(send())
    finally:
        listener.close()
    assert msa(ack)[1] == "AR" and err_code(ack) == "102"
    assert sum(store.counts_by_state().values()) == 0


def test_a_row_the_database_refuses_fails_alone_in_its_group(tmp_path: Path) -> None:
    """The isolation behind the validation: 8 commits queued together, one with a value
    PostgreSQL refuses (DataError) that skipped the listener's check."""
    with open_store("postgresql", Settings(data_dir=tmp_path / "data")) as store:

        async def commit_all() -> tuple[list[object], int]:
            committer = GroupCommitter(store)
            items = [
                Incoming(
                    raw=message(n),
                    channel="mllp",
                    sending_application="RIS",
                    control_id=LONG_ID if n == 3 else f"C{n}",
                )
                for n in range(SENDERS)
            ]
            committer.start()
            tasks = [asyncio.ensure_future(committer.commit(item, b"ACK")) for item in items]
            with committer._ready:  # the commit thread waits until all 8 are queued (an RLock)
                await asyncio.sleep(0)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await committer.stop()
            return list(results), committer.groups

        results, groups = asyncio.run(commit_all())
        assert groups == 1  # all 8 were queued before the first commit
        assert isinstance(results[3], StoreRefused)
        assert [isinstance(r, tuple) for r in results] == [n != 3 for n in range(SENDERS)]
        assert store.counts_by_state()["accepted"] == SENDERS - 1


def test_fhir_report_with_an_overlong_identifier_is_a_4xx_outcome(store: Store) -> None:
    client = TestClient(create_app(Settings(), store))
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "CT chest"},
        "identifier": [{"value": "X" * 300}],  # no id: the identifier becomes the store key
        "conclusion": "No effusion.",
    }
    response = client.post("/fhir/DiagnosticReport", json=report)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-long" and "255" in issue["diagnostics"]
    assert sum(store.counts_by_state().values()) == 0


def test_a_bug_inside_the_group_commit_is_ae_and_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit test of the code around the store: its accept_many raises what no store raises
    (a bug), with report text in the message. The sender gets AE (resend); the log has the
    correlation id, the type and the frames, never the message."""
    with open_store("sqlite", Settings(data_dir=tmp_path / "data")) as store:
        ingest = Hl7Ingest(store)

        def broken(*args: object, **kwargs: object) -> object:
            raise KeyError("Jane Doe: 4 cm mass in the left lung")

        monkeypatch.setattr(store, "accept_many", broken)

        async def send() -> bytes | None:
            try:
                return await ingest.handle_message(message(1))
            finally:
                await ingest.close()

        with caplog.at_level("ERROR", logger="radbridge.ingest"):
            ack = asyncio.run(send())
        assert ack is not None and msa(ack)[1] == "AE"
        assert err_code(ack) == "207"
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "internal error in ingest a commit correlation=" in logged
        assert "type=KeyError" in logged and "in broken" in logged  # the frames
        assert "Jane Doe" not in caplog.text and "mass" not in caplog.text
        assert logged.count("type=KeyError") == 1  # logged once
