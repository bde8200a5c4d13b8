"""Celery tasks: extract_report, deliver, reconcile (registered on adapter.queue's app).

The store is the truth: a task first claims its message (so two workers never process the same
one), and every outcome is written back (extracted, failed with a retry, dead with a reason).
Retries use exponential backoff with jitter and are bounded by RADBRIDGE_TASK_MAX_RETRIES; then
the message is dead and `radbridge dead-letters` lists it. The model and the store are opened
once per worker process, lazily (after fork).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

from celery import Celery, Task

from adapter.queue import (
    DELIVER_ORU_TASK,
    DELIVER_TASK,
    EXTRACT_TASK,
    RECONCILE_TASK,
    enqueue_delivery,
    enqueue_extract,
    enqueue_oru_delivery,
)
from adapter.settings import Settings
from adapter.store import Store
from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.fhir import build_bundle, reports_from_fhir
from mappings.hl7v2 import parse_oru
from mappings.report import Report
from mappings.routing import route
from mappings.template import load_builtin_templates
from mappings.timeline import TimelineEntry, link_stored, patient_reference
from workers.delivery import backoff_seconds, deliver_bundle
from workers.errors import DeliveryRejected, DeliveryRetryable, WorkerError

log = logging.getLogger("radbridge.tasks")
_STORES: dict[str, Store] = {}
_LOCK = threading.Lock()
FHIR_CONTENT = "application/fhir+json"


def store_for(settings: Settings) -> Store:
    """The process's store (opened once)."""
    from adapter.store import default_database_url

    url = default_database_url(settings)
    with _LOCK:
        if url not in _STORES:
            _STORES[url] = Store.open(settings)
        return _STORES[url]


def parse_message(raw: bytes, content_type: str, settings: Settings) -> list[Report]:
    """Reports from a stored message (HL7v2 or FHIR JSON); MessageRejected when unusable."""
    if content_type == FHIR_CONTENT:
        try:
            resource = json.loads(raw)
        except ValueError:
            raise MessageRejected(
                HL7ErrorCode.DATA_TYPE_ERROR, "not_fhir_json", "invalid JSON"
            ) from None
        return reports_from_fhir(resource, default_language=settings.default_language)
    parsed = parse_oru(
        raw, default_charset=settings.default_charset, default_language=settings.default_language
    )
    return list(parsed.reports)


def process_message(store: Store, settings: Settings, message_id: int) -> list[str] | None:
    """Claim, parse, route, extract and store Bundles for one message; returns the Bundle ids
    (None when the message could not be claimed).

    Raises WorkerError subclasses for failures worth retrying; unusable messages go dead.
    """
    from workers.engine import get_engine
    from workers.stages import run_stage

    if not store.claim(message_id):
        log.info("message %d not claimable (done or taken)", message_id)
        return None
    row = store.get_message(message_id)
    assert row is not None
    try:
        reports = parse_message(store.raw(message_id), _content_type(store, message_id), settings)
    except MessageRejected as exc:
        store.mark_failed(message_id, f"rejected: {exc.reason}", dead=True)
        return []
    templates = list(load_builtin_templates().values())
    bundle_ids: list[str] = []
    for report in reports:
        for template in route(report, templates):
            extraction = run_stage(report, template, settings, lambda: get_engine(settings))
            store.save_extraction(
                message_id, report.report_id, template.id, template.version, extraction.stage.value,
                extraction.model_dump(mode="json"),
            )  # fmt: skip
            bundle = build_bundle(
                report,
                extraction,
                template,
                observation_status=settings.observation_status,
                default_tz=settings.zone(),
                derived_from=timeline_links(
                    store, settings, TimelineEntry(report, extraction, template)
                ),
            )
            bundle_ids.append(store.save_bundle(message_id, report.report_id, bundle))
    store.mark_extracted(message_id, None if bundle_ids else "no template")
    log.info("message %d extracted bundles=%d", message_id, len(bundle_ids))
    return bundle_ids


def timeline_links(store: Store, settings: Settings, entry: TimelineEntry) -> dict[str, str]:
    """`derivedFrom` links to the patient's earlier Observations of this template in the store."""
    patient = patient_reference(entry.report)
    if patient is None or entry.report.observation_time is None:
        return {}
    return link_stored(entry, store.observations_of_subject(patient), settings.zone())


def send_application_ack(
    store: Store, settings: Settings, message_id: int, *, success: bool
) -> None:
    """Enhanced mode: send the application ACK MSH-16 asks for to RADBRIDGE_APP_ACK_TARGET."""
    from mappings.ack import AckError, Outcome, build_ack, needs_application_ack
    from mappings.msh import peek_msh
    from workers.delivery import send_mllp

    if not settings.app_ack_target or _content_type(store, message_id) == FHIR_CONTENT:
        return
    try:
        peek = peek_msh(store.raw(message_id))
    except MessageRejected:
        return
    outcome = Outcome.ACCEPTED if success else Outcome.ERROR
    if not needs_application_ack(peek, outcome):
        return
    error = (
        None
        if success
        else AckError(HL7ErrorCode.APPLICATION_INTERNAL_ERROR, "the report could not be processed")
    )
    ack = build_ack(peek, outcome, control_id=f"RBAPP{message_id}", error=error, application=True)
    try:
        send_mllp(settings.app_ack_target, ack, settings.delivery_timeout_s)
        store.audit(message_id, "application_ack_sent", "AA" if success else "AE")
    except WorkerError as exc:
        log.warning(
            "application ack for message %d not delivered: %s", message_id, type(exc).__name__
        )
        store.audit(message_id, "application_ack_failed", type(exc).__name__)


def _content_type(store: Store, message_id: int) -> str:
    return store.content_type(message_id)


def register_tasks(app: Celery) -> None:
    """Register the radbridge tasks on a Celery app made by `adapter.queue.make_celery`."""
    settings: Settings = app.conf.radbridge_settings

    @app.task(name=EXTRACT_TASK, bind=True, shared=False, max_retries=settings.task_max_retries)  # type: ignore[untyped-decorator]
    def extract_report(self: Task, message_id: int) -> list[str]:
        store = store_for(settings)
        try:
            bundle_ids = process_message(store, settings, message_id)
        except Exception as exc:
            # any failure (a bad template file, a bug) leaves the message `failed` with a reason
            # and retries bounded: never stuck in `processing` until the visibility timeout
            attempt = self.request.retries
            if attempt >= settings.task_max_retries:
                store.mark_failed(
                    message_id, f"{type(exc).__name__} after {attempt + 1} attempts", dead=True
                )
                send_application_ack(store, settings, message_id, success=False)
                return []
            store.mark_failed(message_id, type(exc).__name__)
            raise self.retry(countdown=backoff_seconds(attempt), exc=exc) from None
        if bundle_ids is None:  # not claimed: another worker has it, or it is done
            return []
        row = store.get_message(message_id)
        if row is not None and row.state in ("extracted", "dead"):
            send_application_ack(store, settings, message_id, success=row.state == "extracted")
        for bundle_id in bundle_ids:
            if settings.fhir_base_url:
                enqueue_delivery(app, bundle_id)
            if settings.oru_target:
                enqueue_oru_delivery(app, bundle_id)
        return bundle_ids

    @app.task(name=DELIVER_TASK, bind=True, shared=False, max_retries=settings.task_max_retries)  # type: ignore[untyped-decorator]
    def deliver(self: Task, bundle_id: str) -> str:
        store = store_for(settings)
        bundle = store.get_bundle(bundle_id)
        if bundle is None:
            return "missing"
        message_id = store.message_of_bundle(bundle_id)
        attempt = self.request.retries
        try:
            result = deliver_bundle(bundle, settings)
        except DeliveryRetryable as exc:
            if attempt >= settings.task_max_retries:
                store.record_delivery_attempt(bundle_id, "fhir", state="dead", status=exc.status)
                if message_id is not None:
                    store.mark_failed(
                        message_id, f"delivery failed after {attempt + 1} attempts", dead=True
                    )
                return "dead"
            store.record_delivery_attempt(bundle_id, "fhir", state="retry", status=exc.status)
            raise self.retry(
                countdown=backoff_seconds(attempt, retry_after=exc.retry_after), exc=exc
            ) from None
        except DeliveryRejected as exc:
            store.record_delivery_attempt(
                bundle_id, "fhir", state="dead", status=exc.status, outcome=exc.outcome
            )
            if message_id is not None:
                store.mark_failed(message_id, f"delivery rejected ({exc.status})", dead=True)
            return "rejected"
        store.record_delivery_attempt(bundle_id, "fhir", state="delivered", status=result.status)
        if message_id is not None:
            store.mark_delivered_if_extracted(message_id)
        return "delivered"

    @app.task(name=RECONCILE_TASK, shared=False)  # type: ignore[untyped-decorator]
    def reconcile() -> int:
        store = store_for(settings)
        stale = timedelta(seconds=settings.task_visibility_timeout_s)
        requeued = 0
        for message_id in store.pending():
            row = store.get_message(message_id)
            if row is None:
                continue
            if row.state == "processing":
                if message_id not in store.pending(older_than=stale):
                    continue  # a worker is on it
                store.requeue(message_id)
            enqueue_extract(app, message_id)
            requeued += 1
        return requeued

    @app.task(name=DELIVER_ORU_TASK, bind=True, shared=False, max_retries=settings.task_max_retries)  # type: ignore[untyped-decorator]
    def deliver_oru(self: Task, bundle_id: str) -> str:
        from workers.delivery import deliver_oru_message

        store = store_for(settings)
        bundle = store.get_bundle(bundle_id)
        if bundle is None:
            return "missing"
        attempt = self.request.retries
        try:
            deliver_oru_message(bundle, settings)
        except DeliveryRetryable as exc:
            if attempt >= settings.task_max_retries:
                store.record_delivery_attempt(bundle_id, "oru", state="dead")
                return "dead"
            store.record_delivery_attempt(bundle_id, "oru", state="retry")
            raise self.retry(countdown=backoff_seconds(attempt), exc=exc) from None
        except DeliveryRejected as exc:
            store.record_delivery_attempt(bundle_id, "oru", state="dead", status=exc.status)
            return "rejected"
        store.record_delivery_attempt(bundle_id, "oru", state="delivered")
        if not settings.fhir_base_url:
            message_id = store.message_of_bundle(bundle_id)
            if message_id is not None:
                store.mark_delivered_if_extracted(message_id)
        return "delivered"

    _ = (extract_report, deliver, reconcile, deliver_oru)


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app with the radbridge tasks registered."""
    from adapter.queue import make_celery

    app = make_celery(settings)
    register_tasks(app)
    return app


def describe(app: Celery) -> dict[str, Any]:
    """The registered radbridge task names (for `radbridge worker --help` and tests)."""
    return {name: task for name, task in app.tasks.items() if name.startswith("radbridge.")}
