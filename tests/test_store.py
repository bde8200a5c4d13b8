"""adapter/store.py on real databases: SQLite always, PostgreSQL when RADBRIDGE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapter.errors import StoreError
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming

PG_URL = os.environ.get("RADBRIDGE_TEST_DATABASE_URL")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "sqlite":
        opened = Store.open(settings)
        yield opened
        opened.close()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need RADBRIDGE_TEST_DATABASE_URL (CI sets it)")
    schema = f"rb_test_{uuid.uuid4().hex[:10]}"  # each test its own schema: no shared rows
    admin = sa.create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in PG_URL else "?"
    opened = Store.open(settings, url=f"{PG_URL}{separator}options=-csearch_path%3D{schema}")
    yield opened
    opened.close()
    with admin.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def msg(
    raw: bytes = b"MSH|^~\\&|RIS|FAC|||x||ORU^R01|C1|P|2.5", control_id: str = "C1"
) -> Incoming:
    return Incoming(
        raw=raw,
        channel="mllp",
        sending_application="RIS",
        sending_facility="FAC",
        control_id=control_id,
    )


def test_duplicate_returns_identical_ack(store: Store) -> None:
    first = store.accept(msg(), ack=b"ACK-1")
    again = store.accept(msg(), ack=b"ACK-2")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.message_id == first.message_id
    assert again.ack == b"ACK-1"
    row = store.get_message(first.message_id)
    assert row is not None and row.resends == 1


def test_same_control_id_other_content_is_kept_and_flagged(store: Store) -> None:
    first = store.accept(msg(b"MSH|one"))
    second = store.accept(msg(b"MSH|two"))
    assert second.message_id != first.message_id
    assert second.conflict and not second.duplicate
    assert store.raw(second.message_id) == b"MSH|two"
    assert "control_id_conflict" in store.audit_trail(second.message_id)


def test_state_machine(store: Store) -> None:
    message_id = store.accept(msg()).message_id
    with pytest.raises(StoreError):
        store.mark_delivered(message_id)  # accepted -> delivered is illegal
    assert store.claim(message_id)
    assert not store.claim(message_id)  # already processing
    store.mark_failed(message_id, "model timeout")
    assert store.claim(message_id)
    store.mark_extracted(message_id)
    store.mark_delivered(message_id)
    row = store.get_message(message_id)
    assert row is not None and (row.state, row.attempts) == ("delivered", 2)
    assert store.audit_trail(message_id) == [
        "processing",
        "failed",
        "processing",
        "extracted",
        "delivered",
    ]


def test_dead_letters_and_requeue(store: Store) -> None:
    message_id = store.accept(msg()).message_id
    store.claim(message_id)
    store.mark_failed(message_id, "schema error", dead=True)
    assert [r.id for r in store.dead_letters()] == [message_id]
    assert store.dead_letters()[0].reason == "schema error"
    store.requeue(message_id)
    assert store.dead_letters() == []
    assert message_id in store.pending()


def test_concurrent_claim_only_one_wins(store: Store) -> None:
    message_id = store.accept(msg()).message_id
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        results.append(store.claim(message_id))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]


def test_accept_many_is_one_transaction(store: Store) -> None:
    items = [msg(f"MSH|{i}".encode(), control_id=f"C{i}") for i in range(50)]
    results = store.accept_many(items, acks=[b"A"] * 50)
    assert len({r.message_id for r in results}) == 50
    assert store.counts_by_state()["accepted"] == 50
    with pytest.raises(ValueError):
        store.accept_many(items[:2], acks=[b"A"])  # mismatched lengths: nothing stored
    assert store.counts_by_state()["accepted"] == 50


def test_pending_for_reconcile(store: Store) -> None:
    a = store.accept(msg(b"MSH|a", "A")).message_id
    b = store.accept(msg(b"MSH|b", "B")).message_id
    store.claim(b)
    assert store.pending() == [a, b]  # processing counts when older than the limit (0 here)
    assert store.pending(older_than=timedelta(hours=1)) == []


def test_bundle_index_and_search(store: Store) -> None:
    golden = json.loads((FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
    message_id = store.accept(msg()).message_id
    bundle_id = store.save_bundle(message_id, "CT0001-1", golden)
    store.save_bundle(message_id, "CT0001-1", golden)  # replay: idempotent
    assert store.get_bundle(bundle_id) == golden
    observations = [
        e["resource"] for e in golden["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    subject = observations[0]["subject"]["reference"]
    assert len(store.search_observations(subject=subject)) == len(observations)
    assert len(store.search_observations(code="http://snomed.info/sct|60046008")) == 1
    assert len(store.search_observations(code="60046008")) == 1
    report = next(
        e["resource"]
        for e in golden["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert len(store.search_observations(derived_from=f"DiagnosticReport/{report['id']}")) == len(
        observations
    )
    assert store.search_observations(subject="Patient/nobody") == []
    assert store.get_resource("Observation", observations[0]["id"]) == observations[0]


def test_deliveries_are_recorded(store: Store) -> None:
    golden = json.loads((FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
    bundle_id = store.save_bundle(None, "CT0001-1", golden)
    store.record_delivery_attempt(bundle_id, "fhir", state="retry", status=503)
    store.record_delivery_attempt(
        bundle_id, "fhir", state="dead", status=400, outcome={"resourceType": "OperationOutcome"}
    )
    record = store.delivery(bundle_id, "fhir")
    assert record is not None
    assert (record["attempts"], record["state"], record["last_status"]) == (2, "dead", 400)


def test_reopen_sees_committed_rows_and_migrations_are_idempotent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = Store.open(settings)
    ids = [first.accept(msg(f"MSH|{i}".encode(), f"C{i}")).message_id for i in range(5)]
    first.close()
    second = Store.open(settings)
    assert [second.get_message(i) is not None for i in ids] == [True] * 5
    with second.engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="RADBRIDGE_DATABASE_URL"):
        Store.open(Settings(data_dir=tmp_path), url="postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_concurrent_workers_share_the_device_row(store: Store) -> None:
    """Issue 15 item 7: workers saving Bundles of different reports at once all write the same
    Device (and here Patient) row; upserts, not delete-and-insert, so none fails."""
    golden = (FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8")
    bundle = json.loads(golden)["CT0001-1"]
    shared = {
        e["resource"]["id"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] in ("Device", "Patient")
    }
    own = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["id"] not in shared]
    own.append(bundle["id"])

    def variant(n: int) -> dict[str, object]:
        text = json.dumps(bundle)
        for old in own:
            text = text.replace(old, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{old}/{n}")))
        result: dict[str, object] = json.loads(text)
        return result

    threads, per_thread = 6, 8
    bundles = [variant(n) for n in range(threads * per_thread)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(offset: int) -> None:
        start.wait()
        for item in bundles[offset::threads]:
            try:
                store.save_bundle(None, "r", item)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [type(e).__name__ for e in errors] == []
    assert all(store.get_bundle(str(b["id"])) is not None for b in bundles)
    observations = sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"])
    assert store.count_observations() == len(bundles) * observations
