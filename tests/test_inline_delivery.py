"""Issue 25 item 3, one task per message: the extraction task pushes its Bundles itself (the
deliveries claimed in the results' transaction), an EHR that is down leaves the push to a
deliver task after its backoff and never holds up extraction, and reconcile does not queue
again what the broker holds. Real stores (SQLite and PostgreSQL), a real FHIR server, a real
Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import workers.tasks
from adapter.queue import EXTRACT_TASK, enqueue_extract, queued_extractions, redis_client
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.test_throughput import Transactions, oru
from workers.tasks import make_worker_app


def accept(store: Store, n: int) -> int:
    return store.accept(Incoming(oru(n), "mllp", "RIS", "RBHOSP", f"T25-{n}")).message_id


class Sent:
    """The tasks an app sent (name, args, countdown) instead of sending them."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tasks: list[tuple[str, list[Any], float | None]] = []

        def send_task(
            name: str, args: Any = None, countdown: float | None = None, **_: Any
        ) -> None:
            self.tasks.append((name, list(args or []), countdown))

        monkeypatch.setattr(app, "send_task", send_task)


def worker_app(store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The worker's tasks, run in this process on `store`."""
    monkeypatch.setattr(workers.tasks, "store_for", lambda _settings: store)
    return make_worker_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))


def test_one_task_extracts_and_delivers_in_four_transactions(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the extraction task, then a deliver task per Bundle; six transactions."""
    ehr = FhirServer().start()
    try:
        settings = Settings(
            data_dir=tmp_path / "data", stage="rules", fhir_base_url=ehr.base_url, **EHR_IDENTITY
        )
        app = worker_app(store, settings, monkeypatch)
        sent = Sent(app, monkeypatch)
        message_id = accept(store, 1)
        count = Transactions(store)
        (bundle_id,) = app.tasks[EXTRACT_TASK](message_id)
        # the claim, the timeline lookup, the results with their deliveries claimed, the record
        assert count.count == 4
        assert sent.tasks == []  # no deliver task
        row = store.get_message(message_id)
        assert row is not None and row.state == "delivered"
        assert store.audit_trail(message_id) == ["processing", "extracted", "delivered"]
        assert ehr.transactions == 1
        (record,) = store.delivery_states(message_id)
        assert (record["bundle_id"], record["state"], record["attempts"]) == (
            bundle_id,
            "delivered",
            1,
        )
        # a second copy of the deliver task (reconcile) finds it delivered and pushes nothing
        assert app.tasks["radbridge.deliver"](bundle_id) == "already delivered"
        assert ehr.transactions == 1
    finally:
        ehr.stop()


def test_with_the_setting_off_a_deliver_task_pushes(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = FhirServer().start()
    try:
        settings = Settings(
            data_dir=tmp_path / "data",
            stage="rules",
            fhir_base_url=ehr.base_url,
            deliver_inline=False,
            **EHR_IDENTITY,
        )
        app = worker_app(store, settings, monkeypatch)
        sent = Sent(app, monkeypatch)
        message_id = accept(store, 2)
        (bundle_id,) = app.tasks[EXTRACT_TASK](message_id)
        assert sent.tasks == [("radbridge.deliver", [bundle_id], None)]
        assert ehr.transactions == 0
        assert [r["state"] for r in store.delivery_states(message_id)] == ["queued"]
        assert app.tasks["radbridge.deliver"](bundle_id) == "delivered"
        row = store.get_message(message_id)
        assert row is not None and row.state == "delivered"
    finally:
        ehr.stop()


def test_an_ehr_that_is_down_gets_a_deliver_task_after_the_backoff(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push fails: recorded `retry` (never dead), a deliver task sent with the backoff's
    countdown, the message stays `extracted`; the next messages of this process go through
    deliver tasks at once (no push, no timeout per message), then deliver when the EHR is back."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"
    monkeypatch.setattr(workers.tasks, "_PAUSED_UNTIL", {})
    settings = Settings(
        data_dir=tmp_path / "data", stage="rules", fhir_base_url=down, **EHR_IDENTITY
    )
    app = worker_app(store, settings, monkeypatch)
    sent = Sent(app, monkeypatch)
    first, second = accept(store, 3), accept(store, 4)
    (bundle_id,) = app.tasks[EXTRACT_TASK](first)
    ((name, args, countdown),) = sent.tasks
    assert (name, args) == ("radbridge.deliver", [bundle_id])
    assert countdown is not None and 0 <= countdown <= settings.delivery_retry_max_interval_s
    (record,) = store.delivery_states(first)
    assert (record["state"], record["attempts"]) == ("retry", 1)
    assert record["next_attempt_at"] is not None and record["reason"]
    row = store.get_message(first)
    assert row is not None and row.state == "extracted"
    # the destination is paused in this process: the next message queues a deliver task
    (second_bundle,) = app.tasks[EXTRACT_TASK](second)
    assert sent.tasks[1] == ("radbridge.deliver", [second_bundle], None)
    assert [r["state"] for r in store.delivery_states(second)] == ["queued"]
    # the EHR is back: the deliver tasks deliver both
    ehr = FhirServer().start()
    try:
        back = settings.model_copy(update={"fhir_base_url": ehr.base_url})
        app = worker_app(store, back, monkeypatch)
        assert app.tasks["radbridge.deliver"](bundle_id) == "delivered"
        assert app.tasks["radbridge.deliver"](second_bundle) == "delivered"
    finally:
        ehr.stop()
    for message_id in (first, second):
        row = store.get_message(message_id)
        assert row is not None and row.state == "delivered"


def test_a_claim_held_by_a_copy_in_flight_is_left_to_it(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-extraction while a deliver task of the same Bundle pushes: the extraction does not
    push; the copy in flight sees the Bundle changed when it records and sends it again."""
    from adapter.tables import deliveries

    ehr = FhirServer().start()
    try:
        settings = Settings(
            data_dir=tmp_path / "data", stage="rules", fhir_base_url=ehr.base_url, **EHR_IDENTITY
        )
        app = worker_app(store, settings, monkeypatch)
        sent = Sent(app, monkeypatch)
        message_id = accept(store, 5)
        (bundle_id,) = app.tasks[EXTRACT_TASK](message_id)
        with store.transaction() as connection:  # a deliver task's claim, just taken
            connection.execute(
                deliveries.update()
                .where(deliveries.c.bundle_id == bundle_id)
                .values(state="sending", updated_at=sa.func.now())
            )
        again = store.accept(
            Incoming(
                oru(5, findings="FINDINGS: No pleural effusion."), "mllp", "RIS", "RBHOSP", "R5"
            )
        ).message_id
        assert app.tasks[EXTRACT_TASK](again) == [bundle_id]
        assert ehr.transactions == 1  # not pushed again by the extraction
        assert sent.tasks == []
        assert [r["state"] for r in store.delivery_states(again)] == ["sending"]
    finally:
        ehr.stop()


def test_reconcile_does_not_queue_again_what_the_broker_holds(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, stage="rules")
    store = Store.open(settings)
    app = make_worker_app(settings)
    try:
        waiting, lost = accept(store, 6), accept(store, 7)
        enqueue_extract(app, waiting)  # the other one's task was lost (Redis flushed)
        assert queued_extractions(redis_url) == {waiting}
        monkey_store = pytest.MonkeyPatch()
        monkey_store.setattr(workers.tasks, "store_for", lambda _settings: store)
        try:
            assert app.tasks["radbridge.reconcile"]() == 1
        finally:
            monkey_store.undo()
        assert queued_extractions(redis_url) == {waiting, lost}
        assert redis_client(redis_url).llen("celery") == 2
    finally:
        store.close()


def test_queued_extractions_is_none_when_the_broker_is_away() -> None:
    assert queued_extractions("redis://127.0.0.1:1/0") is None


def test_the_worker_warms_up_the_rules_stage(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="radbridge.tasks"):
        workers.tasks.warm_up(Settings(stage="rules"))
    assert any("warmed up" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radbridge.tasks"):
        workers.tasks.warm_up(Settings(stage="llm"))  # a model stage: nothing to run
    assert not caplog.records
