"""Issue 25 item 3, several messages per extraction task: serve's `BatchEnqueuer` gathers
accepted ids into tasks, and `extract_batch` claims, stores and records them with the store
round trips of one task, while each message keeps its own outcome (a failure retried on its
own, a message another worker holds left alone, the timeline across the batch, a correction in
the same batch reaching the EHR last). Real stores (SQLite and PostgreSQL), a real FHIR server,
a real Redis for the broker's view."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import workers.tasks
from adapter.enqueue import BatchEnqueuer
from adapter.queue import (
    EXTRACT_BATCH_TASK,
    EXTRACT_TASK,
    enqueue_extract_batch,
    queued_extractions,
    redis_client,
)
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.tables import bundles, deliveries
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.stores import KINDS, open_store
from tests.test_inline_delivery import Sent, worker_app
from tests.test_throughput import Transactions, oru
from workers.tasks import make_worker_app


def accept(store: Store, raw: bytes, control_id: str) -> int:
    return store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", control_id)).message_id


def settings_for(ehr: FhirServer, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", stage="rules", fhir_base_url=ehr.base_url, **EHR_IDENTITY
    )


# -- serve's side: the enqueuer ----------------------------------------------------------------


def test_the_enqueuer_gathers_ids_into_tasks_of_the_batch_size() -> None:
    sent: list[list[int]] = []
    enqueuer = BatchEnqueuer(sent.append, batch=4, wait_s=0.5).start()  # type: ignore[arg-type]
    for message_id in range(1, 11):
        enqueuer.submit(message_id)
    enqueuer.close()  # sends what waits
    assert [m for ids in sent for m in ids] == list(range(1, 11))  # each once, in order
    assert all(len(ids) <= 4 for ids in sent)
    assert len(sent) == 3


def test_the_end_of_a_burst_is_spread_over_the_workers_processes() -> None:
    """Full batches go whole; what the wait gathered short of a batch goes as one task per
    worker process, sent together (no process idles while another works through the end of
    a burst alone)."""
    sent: list[tuple[float, list[int]]] = []
    enqueuer = BatchEnqueuer(
        lambda ids: sent.append((time.monotonic(), list(ids))), batch=8, wait_s=0.05, spread=3
    )
    for message_id in range(1, 19):  # two full batches and two ids, waiting before the start
        enqueuer.submit(message_id)
    enqueuer.start()
    deadline = time.monotonic() + 10
    while sum(len(ids) for _, ids in sent) < 18 and time.monotonic() < deadline:
        time.sleep(0.01)
    enqueuer.close()
    assert [ids for _, ids in sent] == [list(range(1, 9)), list(range(9, 17)), [17], [18]]
    waiting = BatchEnqueuer(lambda ids: None, batch=8, wait_s=0.01, spread=3)
    for message_id in range(1, 8):  # seven, short of a batch: three tasks, sent together
        waiting.submit(message_id)
    assert waiting._next() == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_lone_message_waits_no_longer_than_the_wait() -> None:
    sent: list[tuple[float, list[int]]] = []
    arrived = threading.Event()

    def send(ids: Sequence[int]) -> None:
        sent.append((time.monotonic(), list(ids)))
        arrived.set()

    enqueuer = BatchEnqueuer(send, batch=16, wait_s=0.05).start()
    try:
        submitted = time.monotonic()
        enqueuer.submit(7)
        assert arrived.wait(10)
        ((at, ids),) = sent
        assert ids == [7]
        assert at - submitted >= 0.05  # it waited for others to join it
    finally:
        enqueuer.close()


def test_a_broker_failure_is_logged_and_the_next_task_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[list[int]] = []
    caplog.set_level(logging.WARNING, logger="radbridge.enqueue")
    logging.getLogger("radbridge.enqueue").addHandler(caplog.handler)  # whatever propagates

    def send(ids: Sequence[int]) -> None:
        if 1 in ids:
            raise ConnectionError("broker away")
        sent.append(list(ids))

    enqueuer = BatchEnqueuer(send, batch=1, wait_s=0).start()
    try:
        enqueuer.submit(1)
        enqueuer.submit(2)
        enqueuer.close()
    finally:
        logging.getLogger("radbridge.enqueue").removeHandler(caplog.handler)
    assert sent == [[2]]
    assert "reconcile will queue them" in caplog.text
    assert "broker away" not in caplog.text  # the type only


@pytest.mark.parametrize(
    ("stage", "expected"), [("rules", (32, 0.1)), ("llm", (1, 0.0)), ("hybrid", (1, 0.0))]
)
def test_only_the_rules_stage_batches(stage: str, expected: tuple[int, float]) -> None:
    """With a model each message is a task of its own (its result is not held back for a
    batch's whole generation)."""
    from app.serve import extract_batching

    assert extract_batching(Settings(stage=stage)) == expected  # type: ignore[arg-type]


def test_reconcile_sees_the_messages_of_a_batch_task_in_the_broker(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, stage="rules")
    app = make_worker_app(settings)
    enqueue_extract_batch(app, [11, 12, 13])
    enqueue_extract_batch(app, [14])  # one message: the single task
    try:
        assert queued_extractions(redis_url) == {11, 12, 13, 14}
    finally:
        redis_client(redis_url).flushdb()


# -- the worker's side: extract_batch ----------------------------------------------------------


def test_a_batch_takes_three_transactions_and_a_lookup_per_report(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        sent = Sent(app, monkeypatch)
        ids = [accept(store, oru(n, mrn=f"MRN-B{n}"), f"B{n}") for n in range(5)]
        count = Transactions(store)
        bundle_ids = app.tasks[EXTRACT_BATCH_TASK](ids)
        # the claims, the results with their deliveries claimed, the record of every push;
        # per report its timeline lookup
        assert count.count == 3 + len(ids)
        assert len(bundle_ids) == len(ids)
        assert sent.tasks == []
        assert ehr.transactions == len(ids)
        for message_id in ids:
            row = store.get_message(message_id)
            assert row is not None and row.state == "delivered"
            assert store.audit_trail(message_id) == ["processing", "extracted", "delivered"]
    finally:
        ehr.stop()


def test_a_failing_message_is_retried_on_its_own_and_the_others_go_on(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        sent = Sent(app, monkeypatch)
        ids = [accept(store, oru(n, mrn=f"MRN-F{n}"), f"F{n}") for n in range(3)]
        from workers.process import process_message as real

        def run_message(raw: bytes, *args: Any, **kwargs: Any) -> Any:
            if b"MRN-F1" in raw:
                raise RuntimeError("a bug")
            return real(raw, *args, **kwargs)

        monkeypatch.setattr(workers.tasks, "run_message", run_message)
        assert len(app.tasks[EXTRACT_BATCH_TASK](ids)) == 2
        states = {m: store.get_message(m).state for m in ids}  # type: ignore[union-attr]
        assert states == {ids[0]: "delivered", ids[1]: "failed", ids[2]: "delivered"}
        ((name, args, countdown),) = sent.tasks
        assert (name, args) == (EXTRACT_TASK, [ids[1]])
        assert countdown is not None and countdown > 0
        monkeypatch.setattr(workers.tasks, "run_message", real)
        assert len(app.tasks[EXTRACT_TASK](ids[1])) == 1  # its own retry
        assert store.get_message(ids[1]).state == "delivered"  # type: ignore[union-attr]
    finally:
        ehr.stop()


def test_a_message_another_task_holds_is_left_alone(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        Sent(app, monkeypatch)
        ids = [accept(store, oru(n, mrn=f"MRN-H{n}"), f"H{n}") for n in range(3)]
        assert store.claim_message(ids[1], token="another-task").outcome == "claimed"
        assert len(app.tasks[EXTRACT_BATCH_TASK](ids)) == 2
        row = store.get_message(ids[1])
        assert row is not None and row.state == "processing"
        assert store.audit_trail(ids[1]) == ["processing"]  # its one claim, the other task's
    finally:
        ehr.stop()


@pytest.mark.parametrize("one_by_one", [False, True])
def test_a_batch_claims_each_message_as_a_claim_of_its_own_would(
    store: Store, monkeypatch: pytest.MonkeyPatch, one_by_one: bool
) -> None:
    """One read and one write for the batch (`_claim_all`), or, when a message changed
    between them, each message on its own: the same outcome either way: claimed, held by
    another task, dead at the attempt cap, no such message, and this task's own claim again
    (its worker was lost)."""
    import adapter.store.messages as store_messages

    if one_by_one:

        def changed(*_args: Any) -> Any:
            raise store_messages.StoreError("changed")

        monkeypatch.setattr(store_messages, "_claim_all", changed)
    ids = [accept(store, oru(n, mrn=f"MRN-K{n}"), f"K{n}") for n in range(4)]
    assert store.claim_message(ids[1], token="another-task").outcome == "claimed"
    for attempt in range(2):
        assert store.claim_message(ids[2], token=f"t{attempt}").outcome == "claimed"
        store.mark_failed(ids[2], "boom", retry_at=None)
    assert store.claim_message(ids[3], token="mine").outcome == "claimed"
    claims = store.claim_messages([*ids, 999_999], token="mine", max_attempts=2)
    assert {m: (c.outcome, c.again) for m, c in claims.items()} == {
        ids[0]: ("claimed", False),
        ids[1]: ("taken", False),
        ids[2]: ("dead", False),
        ids[3]: ("claimed", True),
        999_999: ("taken", False),
    }
    assert claims[ids[0]].raw.startswith(b"MSH")
    assert store.audit_trail(ids[0]) == ["processing"]
    assert store.audit_trail(ids[2])[-1] == "dead"


def test_a_report_links_to_the_same_patients_report_earlier_in_the_batch(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeline sees the batch's results before they are stored: the links are those of
    one task per message."""
    findings = "FINDINGS: Small right pleural effusion. Heart size is enlarged."
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        Sent(app, monkeypatch)
        first = accept(store, oru(1, day=0, findings=findings), "L1")
        second = accept(store, oru(2, day=1, findings=findings), "L2")
        earlier_id, later_id = app.tasks[EXTRACT_BATCH_TASK]([first, second])
        earlier, later = store.get_bundle(earlier_id), store.get_bundle(later_id)
        assert earlier is not None and later is not None
        mine = {
            f"Observation/{e['resource']['id']}"
            for e in earlier["entry"]
            if e["resource"]["resourceType"] == "Observation"
        }
        linked = {
            d["reference"]
            for e in later["entry"]
            for d in e["resource"].get("derivedFrom", [])
            if e["resource"]["resourceType"] == "Observation"
        }
        assert linked and linked <= mine
    finally:
        ehr.stop()


def test_a_correction_in_the_same_batch_reaches_the_ehr_last(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both messages save the same report's Bundle: the first's push is of the older content,
    so its record sees the Bundle changed and queues it again; what the EHR ends with is
    what the store holds."""
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        sent = Sent(app, monkeypatch)
        ids = [
            accept(store, oru(8, findings="FINDINGS: Small right pleural effusion."), "C1"),
            accept(store, oru(8, findings="FINDINGS: No pleural effusion."), "C2"),
        ]
        app.tasks[EXTRACT_BATCH_TASK](ids)
        while sent.tasks:  # the deliver tasks it queued, run as the worker would
            name, args, _ = sent.tasks.pop(0)
            app.tasks[name](*args)
        with store.transaction() as connection:
            rows = connection.execute(
                sa.select(bundles.c.updated_at, deliveries.c.delivered_stamp).join(
                    deliveries, deliveries.c.bundle_id == bundles.c.id
                )
            ).all()
        assert len(rows) == 1
        stored_at, delivered = rows[0]
        assert delivered is not None and stored_at == delivered  # the current content went last
    finally:
        ehr.stop()


@pytest.mark.parametrize("missing", [False, True])
def test_the_record_of_a_tasks_pushes_is_each_push_record(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: bool
) -> None:
    """`record_deliveries` writes the pushes of a task with one statement per kind of write;
    a delivery row that is not there (deleted meanwhile) sends it back to a record per push,
    which writes the row: either way each delivery is `delivered` with its stamp and what the
    EHR holds, and each message `delivered` once, audited once."""
    from adapter.store.deliveries import DeliveryRecord

    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    app = worker_app(store, settings, monkeypatch)
    Sent(app, monkeypatch)
    ids = [accept(store, oru(n, mrn=f"MRN-R{n}"), f"R{n}") for n in range(3)]
    app.tasks[EXTRACT_BATCH_TASK](ids)  # no destination: extracted, nothing claimed
    bundle_of = {m: store.bundles_of_message(m)[0] for m in ids}
    store.queue_deliveries(list(bundle_of.values()), ["fhir"])
    if missing:
        with store.transaction() as connection:
            connection.execute(
                deliveries.delete().where(deliveries.c.bundle_id == bundle_of[ids[1]])
            )
    with store.transaction() as connection:
        stamp_of = dict(connection.execute(sa.select(bundles.c.id, bundles.c.updated_at)).all())
    records = [
        DeliveryRecord(
            bundle_of[m], "fhir", 200, {"k": m_hash}, m, ("fhir",), stamp_of[bundle_of[m]]
        )
        for m, m_hash in zip(ids, ("a", "b", "c"), strict=True)
    ]
    assert store.record_deliveries(records) == [False, False, False]
    for m in ids:
        (state,) = store.delivery_states(m)
        assert (state["state"], state["last_status"]) == ("delivered", 200)
        assert store.audit_trail(m) == ["processing", "extracted", "delivered"]
    # the same pushes recorded again (a re-push): nothing moves twice, nothing is audited twice
    store.record_deliveries(records)
    assert all(store.audit_trail(m).count("delivered") == 1 for m in ids)


def with_identifier(raw: bytes, identifier: bytes) -> bytes:
    """The message with one more patient identifier (PID-3): the Patient's body changes."""
    segments = raw.split(b"\r")
    pid = segments[1].split(b"|")
    pid[3] += b"~" + identifier
    segments[1] = b"|".join(pid)
    return b"\r".join(segments)


def stored_state(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """What the store holds of results, without the times it wrote them."""
    from adapter.tables import audit_events, messages, resource_versions, resources, search_tokens

    reads = {
        "resources": sa.select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.bundle_id,
            resources.c.status,
            resources.c.subject,
            resources.c.code,
            resources.c.report_ref,
            resources.c.template_id,
            resources.c.variable_id,
            resources.c.body,
        ),
        "versions": sa.select(
            resource_versions.c.resource_type,
            resource_versions.c.id,
            resource_versions.c.version_id,
            resource_versions.c.body,
        ),
        "bundles": sa.select(bundles.c.id, bundles.c.message_id, bundles.c.body),
        "deliveries": sa.select(deliveries.c.bundle_id, deliveries.c.target, deliveries.c.state),
        "messages": sa.select(messages.c.id, messages.c.state, messages.c.reason),
        "audit": sa.select(audit_events.c.message_id, audit_events.c.event, audit_events.c.detail),
        "tokens": sa.select(search_tokens),
    }
    with store.transaction() as connection:
        return {
            name: sorted(
                tuple(_NOW.sub("<now>", str(v)) for v in row) for row in connection.execute(read)
            )
            for name, read in reads.items()
        }


_NOW = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)?")
"""A time the store or the pipeline took when it wrote (`issued`, `recorded`...)."""


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_stores_what_one_task_per_message_stores(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch writes its new results with one statement per table and reads the store only
    for the others; what it leaves is what one task per message leaves: the same index rows
    and search terms, resource versions (a Patient changed within the batch gets its next
    version), deliveries, message states and audit trail, with a correction of a report of the
    batch and the same report sent again in it."""
    raws = [
        oru(8, findings="FINDINGS: Small right pleural effusion. Heart size is enlarged."),
        oru(9, mrn="MRN-I9"),
        with_identifier(oru(10, mrn="MRN-I9"), b"NH-77^^^NHS^NH"),  # the Patient changes
        oru(8, findings="FINDINGS: No pleural effusion. Normal heart size."),  # a correction
        oru(9, mrn="MRN-I9"),  # the same report again
        oru(11, mrn="MRN-I11"),
    ]
    states = []
    for way in ("batch", "one by one"):
        settings = Settings(data_dir=tmp_path / way, stage="rules")
        with open_store(kind, settings) as store:
            app = worker_app(store, settings, monkeypatch)
            Sent(app, monkeypatch)
            ids = [accept(store, raw, f"I{n}") for n, raw in enumerate(raws)]
            if way == "batch":
                app.tasks[EXTRACT_BATCH_TASK](ids)
            else:
                for message_id in ids:
                    app.tasks[EXTRACT_TASK](message_id)
            states.append(stored_state(store))
    batch, one_by_one = states
    for table in batch:
        assert batch[table] == one_by_one[table], table
    assert len(batch["tokens"]) > 20
    assert any(row[0] == "Patient" for row in batch["versions"])  # the rename's earlier version


class Inserts:
    """Counts the INSERT statements an engine runs (an executemany counts once), by table."""

    def __init__(self, store: Store) -> None:
        self.into: dict[str, int] = {}
        sa.event.listen(store.engine, "before_cursor_execute", self.counted)

    def counted(self, _c: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.split()
        if words[:2] == ["INSERT", "INTO"]:
            self.into[words[2]] = self.into.get(words[2], 0) + 1


def test_a_batch_of_new_reports_writes_each_table_with_one_statement(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    app = worker_app(store, settings, monkeypatch)
    Sent(app, monkeypatch)
    ids = [accept(store, oru(n, mrn=f"MRN-N{n}"), f"N{n}") for n in range(6)]
    count = Inserts(store)
    assert len(app.tasks[EXTRACT_BATCH_TASK](ids)) == len(ids)
    for table in ("extractions", "bundles", "resources", "search_tokens"):
        assert count.into.get(table) == 1, table
    assert [store.audit_trail(m) for m in ids] == [["processing", "extracted"]] * len(ids)


def test_a_batch_whose_worker_was_lost_sends_each_message_to_a_task_of_its_own(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery delivers the batch again after its worker died (a message that kills its
    process): each message goes back, due now, to a task of its own, so that only the one at
    fault can end dead; the lost attempt counts, the claim that found it does not."""
    ehr = FhirServer().start()
    try:
        app = worker_app(store, settings_for(ehr, tmp_path), monkeypatch)
        sent = Sent(app, monkeypatch)
        ids = [accept(store, oru(n, mrn=f"MRN-K{n}"), f"K{n}") for n in range(3)]
        store.claim_messages(ids, token="lost-batch", max_attempts=6)  # the run that died
        assert app.tasks[EXTRACT_BATCH_TASK].apply(args=[ids], task_id="lost-batch").get() == []
        assert sorted(args[0] for name, args, _ in sent.tasks if name == EXTRACT_TASK) == ids
        for message_id in ids:
            row = store.get_message(message_id)
            assert row is not None and (row.state, row.attempts) == ("failed", 1)
        assert ehr.transactions == 0
        for message_id in ids:  # each on its own
            assert len(app.tasks[EXTRACT_TASK](message_id)) == 1
            assert store.get_message(message_id).state == "delivered"  # type: ignore[union-attr]
    finally:
        ehr.stop()
