"""Celery tasks: `extract_report`, `deliver` (one body, bound once per Bundle destination of
`adapter.destinations`' table; `workers.delivery.PUSHES` pushes) and `reconcile`: module-level
functions bound to a Celery app made by `adapter.queue.make_celery` in one place,
`register_tasks`; each reads its settings from the app it is bound to.

The store is the truth: a task first claims its message (so two workers never process the same
one), and every outcome is written back (extracted, failed with a retry, dead with a reason).
Retries use exponential backoff with jitter; attempts are counted in the store at each claim
(a task that raised, a worker process that died, a reconcile requeue: all count), and after
RADBRIDGE_TASK_MAX_RETRIES + 1 attempts the message is dead and `radbridge dead-letters` lists
it. Deliveries go to every destination of `adapter.destinations`' table, each with its own
record: 408/429/5xx, timeouts, a NAK AE and a silent receiver are retried with capped exponential
backoff (RADBRIDGE_DELIVERY_RETRY_MAX_INTERVAL_S) until RADBRIDGE_DELIVERY_RETRY_FOR has passed
since the first failure (then `dead`); other refusals are `refused` at once. Neither touches
the message or another destination: the message is `delivered` once every destination has
every Bundle of it. Any delivery error is recorded. `reconcile` re-enqueues extraction and
delivery work Redis lost, never a retry in its backoff. The model and the store are opened once
per worker process, lazily (after fork).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task

from adapter import destinations
from adapter.destinations import Destination
from adapter.queue import (
    EXTRACT_BATCH_TASK,
    EXTRACT_TASK,
    RECONCILE_DONE_KEY,
    RECONCILE_TASK,
    enqueue_extract,
    queued_extractions,
    redis_client,
    redis_url,
)
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.deliveries import REFUSED, RETRY, DeliveryJob, DeliveryRecord
from adapter.store.messages import CLAIMED, DEAD, PROCESSING, Claim, MessageRow
from adapter.store.results import Output, SavedResult
from mappings import ehr, inbound
from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.media_types import FHIR_JSON
from mappings.report import FindingStatus, Report
from mappings.template import load_templates
from mappings.timeline import TimelineEntry, link_stored, patient_reference
from workers.delivery import PUSHES, PreRead, backoff_seconds, http_client, read_states
from workers.errors import (
    DeliveryError,
    DeliveryRejected,
    DeliveryRetryable,
    EngineUnavailable,
    WorkerError,
)
from workers.process import INVALID_OUTPUT, Result
from workers.process import process_message as run_message

log = logging.getLogger("radbridge.tasks")
_STORES: dict[str, Store] = {}
_MIGRATED: set[str] = set()  # databases the worker brought to the schema's head before its fork
_LOCK = threading.Lock()


def store_for(settings: Settings) -> Store:
    """The process's store (opened once). SQLite: with RADBRIDGE_WORKER_SQLITE_SYNCHRONOUS
    (NORMAL: a commit does not wait for an fsync). The worker's writes are redone when lost:
    in WAL mode a power cut loses only the last transactions, never one committed before an
    fsync of serve's (an accepted message: its ACK waited for it), and what the worker had
    written of a message after its acceptance is claimed, extracted and delivered again
    (deliveries are idempotent). Migrations run unless `warm_up` ran them before the fork."""
    from adapter.store.connection import default_database_url

    url = default_database_url(settings)
    with _LOCK:
        if url not in _STORES:
            update = {"sqlite_synchronous": settings.worker_sqlite_synchronous}
            migrate = url not in _MIGRATED
            _STORES[url] = Store.open(settings.model_copy(update=update), migrate=migrate)
        return _STORES[url]


def migrate_before_fork(settings: Settings) -> None:
    """Bring the store's schema to head once, in the worker before its pool forks (each pool
    process then opens the store without loading Alembic and its scripts); a store that cannot
    be opened now is left to the pool processes, which migrate it themselves."""
    from adapter.errors import StoreError
    from adapter.store.connection import default_database_url

    try:
        Store.open(settings).close()
    except StoreError as exc:
        log.warning("worker warm-up: store not migrated before the fork (%s)", type(exc).__name__)
        return
    _MIGRATED.add(default_database_url(settings))


def parse_message(raw: bytes, content_type: str, settings: Settings) -> list[Report]:
    """Reports from a stored message (`mappings.inbound.parse_message`); MessageRejected."""
    return inbound.parse_message(
        raw,
        content_type,
        default_charset=settings.default_charset,
        default_language=settings.default_language,
    )


def max_attempts(settings: Settings) -> int:
    """How many times a message is tried: the first attempt and RADBRIDGE_TASK_MAX_RETRIES more."""
    return settings.task_max_retries + 1


@dataclass(frozen=True)
class Extracted:
    """What `extract_message` kept of one message: its saved Bundles (with the deliveries it
    claimed for its own push) and the source Report of each, by Bundle id."""

    saved: list[SavedResult]
    reports: dict[str, Report] = field(default_factory=dict)

    @property
    def bundle_ids(self) -> list[str]:
        """The Bundles saved (superseded ones are not)."""
        return [s.bundle_id for s in self.saved if s.saved]


def process_message(
    store: Store, settings: Settings, message_id: int, *, token: str | None = None
) -> list[str] | None:
    """`extract_message` without deliveries: the Bundle ids (None when not claimed)."""
    extracted = extract_message(store, settings, message_id, token=token)
    return None if extracted is None else extracted.bundle_ids


def extract_message(
    store: Store,
    settings: Settings,
    message_id: int,
    *,
    token: str | None = None,
    queue: Sequence[str] = (),
    claim: Sequence[str] = (),
) -> Extracted | None:
    """Claim, parse, route, extract and store Bundles for one message (None when the message
    could not be claimed: done, taken, or dead after the attempt cap); `queue` and `claim`:
    the destinations whose deliveries of each saved Bundle are recorded in the same
    transaction (`Store.finish_extraction`).

    The claim counts the attempt in the store, so an attempt that crashed its process counts
    too. Raises WorkerError subclasses for failures worth retrying; unusable messages go dead.
    Three store round trips per message: the claim (with the message's bytes), the timeline
    lookup (one per report and template, bounded) and one transaction that keeps every result,
    records its deliveries and marks the message extracted (all or nothing).
    """
    claimed = store.claim_message(message_id, token=token, max_attempts=max_attempts(settings))
    if claimed.outcome != CLAIMED:
        unclaimed(store, settings, message_id, claimed)
        return None
    processed = process_claimed(store, settings, message_id, claimed, [])
    if processed is None:
        return Extracted([])
    saved = store.finish_extraction(
        message_id, processed.outputs, queue=queue, claim=claim, lease=delivery_lease(settings)
    )
    return extracted_of(message_id, saved, processed)


def unclaimed(store: Store, settings: Settings, message_id: int, claimed: Claim) -> None:
    """A message a task did not claim (done, another task's, or dead at its attempt cap: then
    its negative application ACK goes)."""
    log.info("message %d not claimed (%s)", message_id, claimed.outcome)
    if claimed.outcome == DEAD:
        send_application_ack(store, settings, message_id, success=False)


@dataclass(frozen=True)
class Processed:
    """A claimed message run through the pipeline: what the store keeps of each result
    (`finish_extraction`) and the source Report of each Bundle, by Bundle id."""

    message_id: int
    outputs: list[Output]
    reports: dict[str, Report]


def process_claimed(
    store: Store, settings: Settings, message_id: int, claimed: Claim, earlier: list[Result]
) -> Processed | None:
    """Parse, route and extract a claimed message; None when it was rejected (recorded dead
    here: nothing of it leaves). `earlier`: the results not stored yet that the timeline sees
    (those of the message itself and, in a batch, of the messages before it); this message's
    are appended, and taken out again when it is rejected."""
    from workers.engine_registry import get_engine

    before = len(earlier)
    try:
        outcome = run_message(
            claimed.raw,
            claimed.content_type,
            list(load_templates(settings.templates_dir).values()),
            settings,
            lambda: get_engine(settings),
            stored_links=lambda entry: timeline_links(store, settings, entry, earlier),
            on_result=earlier.append,
        )
    except Exception:
        del earlier[before:]
        raise
    rejected = outcome.message_rejected
    invalid = next((r for r in outcome.rejected if r.reason == INVALID_OUTPUT), None)
    if rejected is not None or invalid is not None:
        del earlier[before:]
    if rejected is not None:
        code = (rejected.hl7_code or HL7ErrorCode.APPLICATION_INTERNAL_ERROR).value
        store.mark_rejected(message_id, f"rejected: {rejected.reason}", code, rejected.detail)
        return None
    if invalid is not None:  # a Bundle that fails its output check: nothing of the message leaves
        log.error("message %d rejected: a built Bundle failed its output check", message_id)
        store.mark_failed(message_id, f"rejected: {INVALID_OUTPUT}: {invalid.detail}", dead=True)
        return None
    return Processed(
        message_id,
        [_output(result) for result in outcome.results],
        {str(r.bundle["id"]): r.report for r in outcome.results if r.bundle is not None},
    )


def extracted_of(message_id: int, saved: list[SavedResult], processed: Processed) -> Extracted:
    """What `extract_message` returns of a stored message (logged: counts only)."""
    extracted = Extracted(saved, processed.reports)
    log.info(
        "message %d extracted bundles=%d superseded=%d",
        message_id,
        len(extracted.bundle_ids),
        len(saved) - len(extracted.bundle_ids),
    )
    return extracted


def source_report(job: DeliveryJob, settings: Settings) -> Report | None:
    """The source `Report` a Bundle to deliver was extracted from (its stored message parsed
    again: the identity at the EHR and the ORU's PID/PV1/OBR come from what the source sent);
    None for a Bundle without a message or whose message no longer parses."""
    if job.raw is None or job.content_type is None:
        return None
    try:
        reports = parse_message(job.raw, job.content_type, settings)
    except MessageRejected:
        return None
    return next((r for r in reports if r.report_id == job.report_id), None)


def _output(result: Result) -> Output:
    """What the store keeps of one result."""
    template = result.template
    return Output(
        result.report.report_id,
        template.id,
        template.version,
        result.extraction.stage.value,
        result.record(),
        result.bundle,
    )


def timeline_links(
    store: Store, settings: Settings, entry: TimelineEntry, earlier: Sequence[Result] = ()
) -> dict[str, str]:
    """`derivedFrom` links to the patient's earlier Observations of this template: the latest
    one per finding in the store (`Store.latest_observations`, an index seek per finding) and
    those of the message's own `earlier` results (not stored yet)."""
    patient = patient_reference(entry.report)
    if patient is None or entry.report.observation_time is None:
        return {}
    before = entry.report.observation_time
    if before.tzinfo is None:
        before = before.replace(tzinfo=settings.zone())
    variables = [
        v.variable_id
        for v in entry.extraction.values
        if v.status is not FindingStatus.NOT_MENTIONED
    ]
    stored = store.latest_observations(patient, entry.template.id, variables, before)
    own = [e["resource"] for result in earlier if result.bundle for e in result.bundle["entry"]]
    return link_stored(entry, [*stored, *own], settings.zone())


def send_application_ack(
    store: Store,
    settings: Settings,
    message_id: int,
    *,
    success: bool,
    row: MessageRow | None = None,
) -> None:
    """Enhanced mode: send the application ACK MSH-16 asks for to RADBRIDGE_APP_ACK_TARGET
    (`row`: the message's row when the caller has read it)."""
    from mappings.hl7.ack import Disposition, build_ack, needs_application_ack
    from mappings.hl7.msh import peek_msh
    from workers.delivery import send_mllp

    target = settings.app_ack_target  # the table's `app_ack` destination
    if not target or _content_type(store, message_id) == FHIR_JSON:
        return
    try:
        peek = peek_msh(store.raw(message_id))
    except MessageRejected:
        return
    outcome = Disposition.ACCEPTED if success else Disposition.ERROR
    if not needs_application_ack(peek, outcome):
        return
    error = None if success else _application_error(row or store.get_message(message_id))
    ack = build_ack(peek, outcome, control_id=f"RBAPP{message_id}", error=error, application=True)
    try:
        send_mllp(target, ack, settings.delivery_timeout_s)
        store.audit(message_id, "application_ack_sent", "AA" if success else "AE")
    except WorkerError as exc:
        log.warning(
            "application ack for message %d not delivered: %s", message_id, type(exc).__name__
        )
        store.audit(message_id, "application_ack_failed", type(exc).__name__)


def _application_error(row: MessageRow | None) -> Any:
    """The ERR of a negative application ACK: the rejection's own 0357 code and detail, kept
    with the dead state (`Store.mark_rejected`), else 207 internal error."""
    from mappings.hl7.ack import AckErrorDetail

    if row is not None and row.rejection_code and (row.reason or "").startswith("rejected:"):
        return AckErrorDetail(HL7ErrorCode(row.rejection_code), row.rejection_detail or "")
    return AckErrorDetail(
        HL7ErrorCode.APPLICATION_INTERNAL_ERROR, "the report could not be processed"
    )


def _content_type(store: Store, message_id: int) -> str:
    return store.content_type(message_id)


def _settings(task: Task) -> Settings:
    """The settings of the app a task is bound to (`adapter.queue.make_celery` keeps them)."""
    settings: Settings = task.app.conf.radbridge_settings
    return settings


def extract_report(task: Task, message_id: int) -> list[str]:
    """Celery task: extract one stored message (`extract_message`), then send its application
    ACK (enhanced mode) and deliver its Bundles to every destination (`after_extraction`); a
    failure of the extraction is retried (`extraction_failed`)."""
    # the attempt cap is counted in the store (every claim), not by Celery: a retry, a
    # redelivery after a crash and a reconcile requeue all count alike
    settings = _settings(task)
    store = store_for(settings)
    inline, later = split_destinations(settings)
    try:
        extracted = extract_message(
            store,
            settings,
            message_id,
            token=task.request.id,
            queue=[d.name for d in later],
            claim=inline,
        )
    except Exception as exc:
        return extraction_failed(task, store, settings, message_id, exc)
    if extracted is None:  # not claimed: another worker has it, it is done, or dead
        return []
    after_extraction(task.app, store, settings, [(message_id, extracted)], later)
    return extracted.bundle_ids


def extract_batch(task: Task, message_ids: list[int]) -> list[str]:
    """Celery task: extract several stored messages (serve queues the messages it accepts
    close together as one task, `adapter.enqueue`) with the store round trips of one: one
    transaction claims them all, each runs through the pipeline (the timeline sees the
    results of the batch's earlier messages), one transaction stores every result, then each
    goes on as in `extract_report`. A message that fails is retried on its own
    (`extract_report` with its backoff, `failed_in_batch`); the others go on."""
    settings = _settings(task)
    store = store_for(settings)
    inline, later = split_destinations(settings)
    claims = store.claim_messages(
        message_ids, token=task.request.id, max_attempts=max_attempts(settings)
    )
    if any(claim.again for claim in claims.values()):  # its worker was lost during this batch
        return split_batch(task.app, store, settings, claims)
    earlier: list[Result] = []  # the batch's results so far: the timeline sees them too
    processed: list[Processed] = []
    for message_id, claimed in claims.items():
        if claimed.outcome != CLAIMED:
            unclaimed(store, settings, message_id, claimed)
            continue
        try:
            done = process_claimed(store, settings, message_id, claimed, earlier)
        except Exception as exc:
            failed_in_batch(task.app, store, settings, message_id, exc)
            continue
        if done is not None:
            processed.append(done)
    queue, lease = [d.name for d in later], delivery_lease(settings)
    finished = [(p.message_id, p.outputs) for p in processed]
    try:
        stored = store.finish_extractions(finished, queue=queue, claim=inline, lease=lease)
    except Exception:  # a message no longer processing, or a value refused: each on its own
        stored = {}
        for message_id, outputs in finished:
            try:
                stored[message_id] = store.finish_extraction(
                    message_id, outputs, queue=queue, claim=inline, lease=lease
                )
            except Exception as exc:
                failed_in_batch(task.app, store, settings, message_id, exc)
    extractions = [
        (done.message_id, extracted_of(done.message_id, stored[done.message_id], done))
        for done in processed
        if done.message_id in stored
    ]
    after_extraction(task.app, store, settings, extractions, later)
    return [bundle_id for _, extracted in extractions for bundle_id in extracted.bundle_ids]


def split_batch(
    app: Celery, store: Store, settings: Settings, claims: dict[int, Claim]
) -> list[str]:
    """A batch whose worker was lost while it ran (a message that kills its process, as a
    native crash would): every message it claims again goes back, `failed` and due now, to a
    task of its own (`extract_report`), so that the one at fault ends `dead` at its attempt cap
    alone while the others are extracted. The claim that found this is refunded; the lost
    attempt counts."""
    for message_id, claimed in claims.items():
        if claimed.outcome != CLAIMED:
            unclaimed(store, settings, message_id, claimed)
            continue
        store.mark_failed(
            message_id,
            "worker lost during a batch: retried on its own",
            retry_at=datetime.now(UTC),
            refund_attempt=True,
        )
        send_or_leave(app, EXTRACT_TASK, message_id)
    log.warning("a batch of %d message(s) lost its worker: each retried on its own", len(claims))
    return []


def split_destinations(settings: Settings) -> tuple[list[str], list[Destination]]:
    """The Bundle destinations (`adapter.destinations`) an extraction task pushes to itself
    (RADBRIDGE_DELIVER_INLINE, unless that destination's pushes are paused after a failure)
    and those it leaves to a deliver task per Bundle."""
    chosen = destinations.bundle_destinations(settings)
    inline = [d.name for d in chosen if settings.deliver_inline and not _paused(d.name)]
    return inline, [d for d in chosen if d.name not in inline]


def after_extraction(
    app: Celery,
    store: Store,
    settings: Settings,
    extractions: Sequence[tuple[int, Extracted]],
    later: Sequence[Destination],
) -> None:
    """Stored messages' next steps (message id, what was kept): each one's application ACK
    (enhanced mode), a deliver task per Bundle and destination of `later`, and the inline
    pushes (`deliver_inline`)."""
    for message_id, extracted in extractions:
        if settings.app_ack_target:  # the state is read only when an application ACK may go
            row = store.get_message(message_id)
            if row is not None and row.state in ("extracted", "dead"):
                success = row.state == "extracted"
                send_application_ack(store, settings, message_id, success=success, row=row)
        for bundle_id in extracted.bundle_ids:
            for destination in later:
                assert destination.task is not None
                app.send_task(destination.task, args=[bundle_id])
    deliver_inline(app, store, settings, extractions)


INLINE_PAUSE_S = 60.0
"""After a push from the extraction task fails (not a refusal of that Bundle), this process
sends that destination's Bundles through deliver tasks (with their backoff) for this long: an
EHR outage must not hold up extraction for a timeout per message."""
_PAUSED_UNTIL: dict[str, float] = {}


def _paused(target: str) -> bool:
    return time.monotonic() < _PAUSED_UNTIL.get(target, 0.0)


def deliver_inline(
    app: Celery, store: Store, settings: Settings, extractions: Sequence[tuple[int, Extracted]]
) -> None:
    """Push each saved Bundle of the extracted messages (message id, what was kept) to the
    destinations `Store.finish_extraction` claimed for this task, message by message, then
    record the pushes that went through in one transaction (`Store.record_deliveries`, as the
    deliver task records one; with its last Bundle a message goes `delivered`): one write
    lock for the task, not one per message (each lock a writer waits for costs SQLite's
    busy-wait sleeps). A worker lost before the record leaves the task's pushes unrecorded,
    as it leaves the Bundles it had not pushed yet: both are pushed, idempotently, when their
    claim runs out. A Bundle saved again
    meanwhile is queued again. A failed push is recorded by `delivery_failed`: retried by a
    deliver task after its backoff (sent with a countdown; reconcile sends it when due if
    Redis lost it), or refused/dead; after such a failure the task's later Bundles for that
    destination are not pushed but go the same way (an outage costs one timeout, not one per
    Bundle). The extraction stays done either way. The EHR state of the Bundles pushed to the
    FHIR destination is read first, in one request (`read_ahead`)."""
    required = destinations.required(settings)
    ahead = read_ahead(settings, extractions)
    pushes: list[tuple[DeliveryRecord, str]] = []
    for message_id, extracted in extractions:
        for result in extracted.saved:
            for target, held in result.claimed.items():
                bundle, task_name = result.bundle, destinations.by_name(target).task
                assert bundle is not None and task_name is not None
                bundle_id = result.bundle_id

                def later(
                    countdown: float, exc: Exception, name: str = task_name, sent: str = bundle_id
                ) -> None:
                    send_or_leave(app, name, sent, countdown)

                try:
                    if _paused(target):
                        raise DeliveryRetryable("a push to this destination failed just before")
                    report = extracted.reports.get(bundle_id)
                    state = ahead.get(bundle_id) if target == FHIR else None
                    pushed = PUSHES[target](bundle, report, settings, held, state=state)
                except Exception as exc:
                    if not isinstance(exc, DeliveryRejected) and not _paused(target):
                        _PAUSED_UNTIL[target] = time.monotonic() + INLINE_PAUSE_S
                    delivery_failed(later, store, settings, bundle_id, target, exc)
                    continue
                record = DeliveryRecord(
                    bundle_id,
                    target,
                    pushed.status,
                    pushed.delivered,
                    message_id,
                    required,
                    result.stamp,
                )
                pushes.append((record, task_name))
    record_pushes(app, store, pushes)


FHIR = "fhir"
"""The FHIR write-back's destination (`adapter.destinations`), whose reads go ahead."""


def read_ahead(
    settings: Settings, extractions: Sequence[tuple[int, Extracted]]
) -> dict[str, PreRead]:
    """The EHR states of the Bundles `deliver_inline` pushes to the FHIR destination (claimed,
    with content, with a source report), by Bundle id, read in one request
    (`workers.delivery.read_states`; a Bundle left out reads on its own). A failure of that
    request leaves each to read on its own (and fail as it would): it pauses nothing."""
    if _paused(FHIR):
        return {}
    wanted = [
        (result.bundle_id, report)
        for _, extracted in extractions
        for result in extracted.saved
        if FHIR in result.claimed
        and result.bundle is not None
        and ehr.has_content(result.bundle)
        and (report := extracted.reports.get(result.bundle_id)) is not None
    ]
    if len(wanted) < 2:
        return {}
    try:
        states = read_states([r for _, r in wanted], settings, client=http_client(settings))
    except Exception as exc:
        log.warning(
            "the EHR reads of %d report(s) ahead failed (%s): each reads on its own",
            len(wanted), type(exc).__name__,
        )  # fmt: skip
        return {}
    return {
        bundle_id: state
        for (bundle_id, _), state in zip(wanted, states, strict=True)
        if state is not None
    }


def send_or_leave(app: Celery, name: str, argument: Any, countdown: float | None = None) -> None:
    """Send a task for work the store already records as due (a retry, a delivery after its
    backoff); a broker that refuses it is logged (the error's type): reconcile sends it."""
    try:
        app.send_task(name, args=[argument], countdown=countdown)
    except Exception as error:
        log.warning("%s task not sent (%s): reconcile sends it", name, type(error).__name__)


def extraction_failed(
    task: Task, store: Store, settings: Settings, message_id: int, exc: Exception
) -> list[str]:
    """Any failure of an extraction (a bad template file, a bug) leaves the message `failed`
    with a reason and a retry in its backoff (raises Celery's Retry), or `dead` at the attempt
    cap: never stuck in `processing` until the visibility timeout (`record_failure`)."""
    countdown = record_failure(store, settings, message_id, exc)
    if countdown is None:
        return []
    raise task.retry(countdown=countdown, exc=exc) from None


def failed_in_batch(
    app: Celery, store: Store, settings: Settings, message_id: int, exc: Exception
) -> None:
    """`extraction_failed` for one message of an `extract_batch` task: its retry is an
    `extract_report` task of its own, sent with the backoff (reconcile sends it when due if
    that fails); the batch's other messages go on."""
    log.warning(
        "message %d failed in a batch (%s): retried on its own", message_id, type(exc).__name__
    )
    log.debug("message %d failure", message_id, exc_info=exc)
    try:
        countdown = record_failure(store, settings, message_id, exc)
    except Exception as error:  # not processing any more, or the store: reconcile retries
        log.warning("message %d failure not recorded (%s)", message_id, type(error).__name__)
        return
    if countdown is not None:
        send_or_leave(app, EXTRACT_TASK, message_id, countdown)


def record_failure(
    store: Store, settings: Settings, message_id: int, exc: Exception
) -> float | None:
    """Record a failed extraction: `failed` with a retry due after the returned seconds, or
    `dead` at the attempt cap (None; the negative application ACK sent). A model server that
    is down or busy (EngineUnavailable) refunds the attempt: the message waits for it, never
    goes dead. Raises `exc` when the message is not `processing` (the failure came before
    its claim, e.g. the store: reconcile retries it)."""
    row = store.get_message(message_id)
    if row is None or row.state != PROCESSING:
        raise exc
    waiting = isinstance(exc, EngineUnavailable)
    if row.attempts >= max_attempts(settings) and not waiting:
        store.mark_failed(
            message_id, f"{type(exc).__name__} after {row.attempts} attempts", dead=True
        )
        send_application_ack(store, settings, message_id, success=False, row=row)
        return None
    countdown = backoff_seconds(row.attempts - 1, retry_after=getattr(exc, "retry_after", None))
    store.mark_failed(
        message_id,
        type(exc).__name__,
        retry_at=datetime.now(UTC) + timedelta(seconds=countdown),
        refund_attempt=waiting,
    )
    return countdown


def deliver(task: Task, bundle_id: str) -> str:
    """Celery task, one per Bundle destination (`adapter.destinations`; the task's name says
    which): push one Bundle (`workers.delivery.PUSHES`) and record it. Two store round trips:
    the claimed job (Bundle, message, delivered already?) and the record of the delivery with
    the message's state. A copy that finds the claim held or the Bundle delivered pushes
    nothing; a decision saved during the push queues the Bundle again."""
    settings = _settings(task)
    target = destination_of(task.name)
    store = store_for(settings)
    job = store.delivery_job(bundle_id, target, lease=delivery_lease(settings))
    if job is None:
        return "missing"
    if job.busy:  # another copy holds the claim and pushes
        return "busy"
    if job.delivered_already:  # a second copy (reconcile): push nothing
        return "already delivered"
    try:
        pushed = PUSHES[target](job.bundle, source_report(job, settings), settings, job.delivered)
    except Exception as exc:

        def retry(countdown: float, error: Exception) -> None:
            raise task.retry(countdown=countdown, exc=error) from None

        return delivery_failed(retry, store, settings, bundle_id, target, exc)
    record = DeliveryRecord(
        bundle_id,
        target,
        pushed.status,
        pushed.delivered,
        job.message_id,
        destinations.required(settings),
        job.stamp,
    )
    record_pushes(task.app, store, [(record, task.name)])
    return "delivered"


def record_pushes(app: Celery, store: Store, pushes: Sequence[tuple[DeliveryRecord, str]]) -> None:
    """Record pushes that went through, each with its deliver task's name, in one transaction
    (`Store.record_deliveries`), by the deliver task and the extraction task's inline pushes
    alike; a Bundle saved again during its push (a decision) is queued again."""
    if not pushes:
        return
    changed = store.record_deliveries([record for record, _ in pushes])
    for (record, task_name), again in zip(pushes, changed, strict=True):
        if again:
            app.send_task(task_name, args=[record.bundle_id])


def destination_of(task_name: str) -> str:
    """The destination (`adapter.destinations` table) whose Bundles a task delivers."""
    return next(d.name for d in destinations.DESTINATIONS if d.task == task_name)


def delivery_failed(
    retry: Callable[[float, Exception], None],
    store: Store,
    settings: Settings,
    bundle_id: str,
    target: str,
    exc: Exception,
) -> str:
    """A delivery attempt to one destination failed: retried with capped exponential backoff
    while RADBRIDGE_DELIVERY_RETRY_FOR has not passed since the run's first failure
    (`retry(countdown, exc)`: the deliver task raises Celery's Retry, the extraction task
    sends a deliver task with that countdown), else `dead`; a refusal (a 4xx other than 408/429, a NAK AR, an identity
    refused) is `refused` at once. Returns the state. Only this destination's record changes;
    every error is recorded, a bug too (retried)."""
    retryable = isinstance(exc, DeliveryRetryable) or not isinstance(exc, DeliveryError)
    name = type(exc).__name__
    status = getattr(exc, "status", None)
    status = status if isinstance(status, int) else None
    detail = f"{name} ({status})" if status is not None else name
    if retryable:
        record = store.delivery(bundle_id, target) or {}
        attempts = int(record.get("attempts") or 0) + 1
        countdown = _retry_countdown(record, attempts, settings, exc)
        if countdown is not None:
            store.record_delivery_attempt(
                bundle_id,
                target,
                state=RETRY,
                status=status,
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=countdown),
                reason=detail,
            )
            log.info(
                "bundle %s delivery to %s retry in %.1fs: %s", bundle_id, target, countdown, name
            )
            retry(countdown, exc)
            return RETRY
        state = DEAD
        reason = f"{detail}: still failing after {attempts} attempts"
    else:
        state = REFUSED
        reason = f"refused: {exc}" if isinstance(exc, DeliveryRejected) else f"{detail}: {exc}"
    store.record_delivery_attempt(
        bundle_id,
        target,
        state=state,
        status=status,
        outcome=getattr(exc, "outcome", None),
        reason=reason,
    )
    log.warning("bundle %s delivery to %s %s: %s", bundle_id, target, state, name)
    return state


def _retry_countdown(
    record: dict[str, Any], attempts: int, settings: Settings, exc: Exception
) -> float | None:
    """Seconds until the next try of a failing delivery (`attempts`: this one included), or
    None when RADBRIDGE_DELIVERY_RETRY_FOR has passed since the run's first failure."""
    now = datetime.now(UTC)
    since = record.get("failing_since") or now
    if since.tzinfo is None:  # SQLite keeps naive UTC
        since = since.replace(tzinfo=UTC)
    left = settings.delivery_retry_for - (now - since).total_seconds()
    if left <= 0:
        return None
    wait = backoff_seconds(
        attempts - 1,
        cap=settings.delivery_retry_max_interval_s,
        retry_after=getattr(exc, "retry_after", None),
    )
    return min(left, wait)


def reconcile(task: Task, claimed_before: str | None = None) -> int:
    """Celery task: re-enqueue what the store says is not done and Redis may have lost:
    accepted messages, failed ones whose retry is due (never during their backoff), processing
    ones past the visibility timeout (their worker is gone; the claim counts the attempt and
    gives up at the cap) - never one whose task waits in the queue (`queued_extractions`: a
    backlog is not queued again each interval; a task a worker reserved counts as lost), deliveries never made or due again (a copy of a deliver task still
    queued finds its Bundle delivered and pushes nothing), and messages whose delivery was
    recorded but whose worker was lost before marking them delivered. `claimed_before` (ISO
    time; sent by serve's only worker at its start): processing claims older than it are
    stale at once (the worker that held them is dead)."""
    settings = _settings(task)
    store = store_for(settings)
    stale = timedelta(seconds=settings.task_visibility_timeout_s)
    if claimed_before is not None:
        since = datetime.now(UTC) - datetime.fromisoformat(claimed_before)
        stale = min(stale, max(since, timedelta(0)))
    requeued = 0
    in_broker = queued_extractions(redis_url(settings)) or set()
    for message_id in store.pending():
        row = store.get_message(message_id)
        if row is None:
            continue
        if row.state == PROCESSING and not store.reclaim_stale(message_id, stale):
            continue  # a worker is on it
        if row.state != PROCESSING and message_id in in_broker:
            continue  # its task waits in the queue: not lost
        enqueue_extract(task.app, message_id)
        requeued += 1
    # a delivery enqueued right after extraction has had a reconcile interval to start
    settle = timedelta(seconds=settings.reconcile_interval_s)
    repaired = store.repair_delivered(destinations.required(settings))
    if repaired:
        log.info("reconcile: %d delivered messages were left extracted", len(repaired))
    for destination in destinations.bundle_destinations(settings):
        assert destination.task is not None
        # a claim older than `stale` is a lost worker's: free it for the task sent below
        store.release_stale_claims(destination.name, stale)
        for bundle_id in store.undelivered(destination.name, older_than=settle, lease=stale):
            task.app.send_task(destination.task, args=[bundle_id])
            requeued += 1
    _stamp_reconcile(settings)
    return requeued


def register_tasks(app: Celery) -> None:
    """Bind the radbridge tasks to a Celery app made by `adapter.queue.make_celery` (the one
    place they are bound): extraction, one delivery task per Bundle destination of the table
    (one body, `deliver`), and reconcile. The attempt caps are the store's, not Celery's."""
    options: dict[str, Any] = dict(bind=True, shared=False)  # bound to this app only
    app.task(name=EXTRACT_TASK, max_retries=None, **options)(extract_report)
    app.task(name=EXTRACT_BATCH_TASK, max_retries=None, **options)(extract_batch)
    for destination in destinations.DESTINATIONS:
        if destination.task is not None:
            app.task(name=destination.task, max_retries=None, **options)(deliver)
    app.task(name=RECONCILE_TASK, **options)(reconcile)


def _stamp_reconcile(settings: Settings) -> None:
    """Record when this reconcile finished (serve's /readyz: a beat that stopped shows)."""
    import redis

    try:
        redis_client(redis_url(settings)).set(RECONCILE_DONE_KEY, f"{time.time():.3f}")
    except redis.RedisError as exc:  # the next one tries again; readiness shows it meanwhile
        log.warning("could not record the reconcile time: %s", type(exc).__name__)


def delivery_lease(settings: Settings) -> timedelta:
    """How long a deliver task's claim holds off another copy (then its worker counts as lost):
    the task visibility timeout, after which Redis would redeliver the task itself."""
    return timedelta(seconds=settings.task_visibility_timeout_s)


WARM_UP_ORU = "\r".join(
    [
        "MSH|^~\\&|RADBRIDGE|WARMUP|RADBRIDGE|WARMUP|20260101080000||ORU^R01|WARMUP1|P|2.5.1",
        "PID|1||WARMUP1^^^WARMUP^MR||WARMUP^WARMUP||19600101|U",
        "OBR|1|WARMUP1|WARMUP1|36643-5^Chest X-ray 2 views^LN|||20260101080000"
        + "|" * 18
        + "20260101080000||CR|F",
        "OBX|1|TX|59776-5^Findings^LN|1|No pleural effusion. The heart size is normal.||||||F",
    ]
).encode()
"""A chest X-ray report of no patient (the LOINC codes of the throughput benchmark's ORUs)."""


def warm_up(settings: Settings) -> None:
    """In the worker before it forks its pool: bring the store's schema to head
    (`migrate_before_fork`); for the rules stage, run `WARM_UP_ORU` through the pipeline once
    and compile ConText's rules of every language, so that every pool process starts with the
    templates loaded and the patterns and output check compiled (a cold process took seconds
    over its first message, and each compiled its first report's language itself); then
    `gc.freeze()`: what is loaded so far stays out of the collector's walks (a full
    collection walked those ~100k long-lived objects, about 0.3 ms a report in the throughput
    benchmark's split) and the pool processes share its pages. No report is stored; a failure
    is logged and the worker starts all the same."""
    from mappings.media_types import HL7_ER7
    from workers.context import compile_all

    migrate_before_fork(settings)
    if settings.stage != "rules":
        return
    started = time.perf_counter()
    try:
        templates = list(load_templates(settings.templates_dir).values())
        run_message(WARM_UP_ORU, HL7_ER7, templates, settings, _no_engine)
        compile_all()
        warm_pushes(settings)
    except Exception as exc:  # a template error shows on the first message as before
        log.warning("worker warm-up failed: %s", type(exc).__name__)
        return
    gc.freeze()
    log.info("worker warmed up in %.1fs", time.perf_counter() - started)


def warm_pushes(settings: Settings) -> None:
    """Before the fork, what each pool process loaded on its first task (about 0.1 s of CPU
    each): the engine registry, Celery's task trace and, with a FHIR destination, the HTTP
    stack and the process's client (its TLS context; no connection is open yet, so the pool
    processes share none)."""
    import celery.backends.base  # noqa: F401  (the first task's trace loads it)

    import workers.engine_registry  # noqa: F401
    from workers.delivery import http_client

    if settings.fhir_base_url:
        http_client(settings)


def _no_engine() -> Any:
    raise EngineUnavailable("the rules stage uses no model")


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app with the radbridge tasks registered."""
    from adapter.queue import make_celery

    app = make_celery(settings)
    register_tasks(app)
    return app


def describe(app: Celery) -> dict[str, Any]:
    """The registered radbridge task names (for `radbridge worker --help` and tests)."""
    return {name: task for name, task in app.tasks.items() if name.startswith("radbridge.")}
