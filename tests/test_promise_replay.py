"""Promise 5 (issue 14): 8 concurrent senders replaying the same 50 messages give 50 rows, 50
extractions and one write per resource at the EHR, on SQLite and PostgreSQL.

Eight MLLP connections to a real `radbridge serve` (its worker, embedded Redis, a real FHIR
server as the EHR) send the same 50 ORU^R01 at the same time, each waiting for its ACKs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.helpers.waiting import wait_for
from tests.promises import SERVE_DOWN, database, make_serve, msa, oru, send_mllp, store_facts

pytestmark = pytest.mark.integration
SENDERS = 8
MESSAGES = 50


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_eight_senders_replaying_fifty_messages_store_extract_and_write_each_once(
    kind: str, tmp_path: Path
) -> None:
    ehr = FhirServer().start()
    payloads = [oru(f"RP{n:03d}", mrn=f"MRN-RP{n:03d}") for n in range(MESSAGES)]
    with database(kind, tmp_path) as db:
        settings = {"RADBRIDGE_FHIR_BASE_URL": ehr.base_url, **EHR_IDENTITY_ENV, **db}
        serve = make_serve(tmp_path, settings)
        acks: list[list[bytes]] = [[] for _ in range(SENDERS)]
        try:
            serve.start().ready()
            barrier = threading.Barrier(SENDERS)

            def sender(index: int) -> None:
                barrier.wait()
                acks[index] = send_mllp(serve.mllp_port, payloads)

            threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            sent_s = time.monotonic() - started
            expected = [("CA", f"RP{n:03d}") for n in range(MESSAGES)]
            assert all([msa(a) for a in sender_acks] == expected for sender_acks in acks)
            waited = wait_for(
                lambda: serve.states().get("delivered", 0) == MESSAGES,
                120,
                "all delivered",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            time.sleep(2)  # a late duplicate delivery would land now
        finally:
            serve.stop()
            ehr.stop()
        facts = store_facts(tmp_path, settings)
    per_report = {u: n for u, n in ehr.puts.items() if not u.startswith("Device/")}
    print(
        f"promise 5 ({kind}): {SENDERS} x {MESSAGES} sent in {sent_s:.1f} s, "
        f"{sum(map(len, acks))} ACKs; {facts.messages} rows, "
        f"{sum(facts.extractions_per_message.values())} extractions, {facts.bundles} bundles; "
        f"EHR {ehr.transactions} transactions, {len(per_report)} resources, "
        f"max {max(per_report.values())} PUT each; delivered {waited:.1f} s after the last ACK"
    )
    assert facts.messages == facts.distinct_keys == MESSAGES
    assert facts.states == {"delivered": MESSAGES}
    assert facts.extractions_per_message == {i: 1 for i in range(1, MESSAGES + 1)}
    assert facts.bundles == ehr.transactions == MESSAGES
    assert set(per_report.values()) == {1}  # every resource written once...
    assert set(ehr.versions.values()) == {1}  # ...and the shared Device never changed
