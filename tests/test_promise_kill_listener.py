"""Promise 1 (issue 14): kill -9 of the listener mid-stream loses no ACKed message and
duplicates none, on SQLite and PostgreSQL.

One sender streams 200 ORU^R01 over one MLLP connection to a real `radbridge serve` (embedded
Redis, its supervised worker; no push target: processing ends at the stored Bundle). After the
100th ACK the serve process gets SIGKILL (its children die with it). serve is restarted on the
same data dir and ports and the sender resends all 200. Then: 200 message rows (one per control
id), every one extracted, one extraction record and one Bundle each.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.waiting import wait_for
from tests.promises import SERVE_DOWN, database, make_serve, msa, oru, send_mllp, store_facts

pytestmark = pytest.mark.integration
STREAM = 200
KILL_AFTER = 100


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_kill_9_of_the_listener_mid_stream_loses_and_duplicates_nothing(
    kind: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with database(kind, tmp_path) as db:
        settings = dict(db)
        serve = make_serve(tmp_path, settings)
        payloads = [oru(f"KL{n:04d}", mrn=f"MRN{n % 17:04d}") for n in range(STREAM)]
        try:
            serve.start().ready()

            def kill_listener(acked: int) -> None:
                if acked == KILL_AFTER:
                    os.kill(serve.pid, signal.SIGKILL)

            first = send_mllp(serve.mllp_port, payloads, on_ack=kill_listener)
            assert serve.process is not None
            serve.process.wait(30)
            assert len(first) == KILL_AFTER  # nothing answered once the listener was gone
            assert all(msa(ack)[0] == "CA" for ack in first)

            serve.start().ready()
            second = send_mllp(serve.mllp_port, payloads)
            assert [msa(a) for a in second] == [("CA", f"KL{n:04d}") for n in range(STREAM)]
            waited = wait_for(
                lambda: serve.states().get("extracted", 0) == STREAM,
                240,
                f"{STREAM} messages extracted",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
        finally:
            serve.stop()
        facts = store_facts(tmp_path, settings)
    twice = sum(1 for n in facts.extractions_per_message.values() if n > 1)
    print(
        f"promise 1 ({kind}): {len(first)} ACKs before the kill, {len(second)} after; "
        f"{facts.messages} rows, states {facts.states}, {facts.bundles} bundles, "
        f"{twice} messages extracted twice; all extracted {waited:.1f} s after the resend, "
        f"{time.monotonic() - started:.1f} s in all"
    )
    assert facts.messages == facts.distinct_keys == STREAM
    assert facts.states == {"extracted": STREAM}
    assert facts.bundles == STREAM
    assert set(facts.extractions_per_message) == set(range(1, STREAM + 1))
    assert twice <= 1  # one worker process: at most the message in hand when it died
