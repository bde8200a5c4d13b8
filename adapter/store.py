"""The durable store: messages, extractions, Bundles, Observations for pull, deliveries, audit.

SQLAlchemy 2 Core (no ORM in the hot path); the schema is created and upgraded by Alembic
migrations in `adapter/migrations/`, run by `Store.open`. SQLite in WAL mode with
`synchronous=FULL` is the embedded default (`<data_dir>/radbridge.db`: an ACK means the
message survives a power cut); PostgreSQL via `RADBRIDGE_DATABASE_URL`.

Message states: accepted -> processing -> extracted -> delivered, or failed (retried) / dead.
Duplicate key: sending application + facility + MSH-10 + SHA-256; a resend returns the stored
row and the ACK sent the first time. The same MSH-10 with different content is stored as a new
row and flagged `conflict` — never dropped. Nothing here logs message content.

Result order (`save_result`): per DiagnosticReport, a preliminary never replaces a final, a
corrected/amended result supersedes both, and otherwise the later observation time wins; a
superseding Bundle retires the Observations and insight resources (ServiceRequest, Flag,
Communication, DetectedIssue) it no longer has (`entered-in-error`, carried in the Bundle for the EHR, no longer
served by searches).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adapter.errors import StoreError, StoreRefused
from adapter.reextraction import keep_reviewed
from adapter.search_index import keys_condition, write_tokens
from adapter.settings import Settings
from adapter.tables import (
    audit_events,
    bundles,
    deliveries,
    extractions,
    messages,
    resource_versions,
    resources,
)
from mappings.fhir_out import diagnostic_report_of
from mappings.search_params import IndexTerms, index_terms
from mappings.timeline import prior_from_resource

log = logging.getLogger("radbridge.store")

# The ingest statements are built once: constructing a statement with literal values on every
# message (and computing its cache key) cost SQLAlchemy more CPU than SQLite's own work, and the
# group commit runs on the thread that shares the GIL with the MLLP listener.
_FIND_BY_CONTROL_ID = sa.select(
    messages.c.id, messages.c.sha256, messages.c.ack, messages.c.conflict
).where(
    messages.c.sending_application == sa.bindparam("app"),
    messages.c.sending_facility == sa.bindparam("facility"),
    messages.c.control_id == sa.bindparam("control_id"),
)
_COUNT_RESEND = (
    messages.update()
    .where(messages.c.id == sa.bindparam("message_id"))
    .values(resends=messages.c.resends + 1)
)
_INSERT_MESSAGE = messages.insert()

CLAIMED, TAKEN = "claimed", "taken"  # claim_attempt outcomes (besides DEAD)
ACCEPTED, PROCESSING, EXTRACTED, DELIVERED, FAILED, DEAD = (
    "accepted",
    "processing",
    "extracted",
    "delivered",
    "failed",
    "dead",
)
# an operator closes a dead letter: it can never succeed (discarded) or was handled outside
# radbridge (resolved); the stored message stays, and a requeue can still take it back
DISCARDED, RESOLVED = "discarded", "resolved"
CLOSED = (DISCARDED, RESOLVED)
STATES = (ACCEPTED, PROCESSING, EXTRACTED, DELIVERED, FAILED, DEAD, DISCARDED, RESOLVED)
# delivery record states besides DELIVERED and DEAD (`adapter.destinations`): waiting for its
# task, a push in progress (its claim), a retry due, refused for good by the destination
QUEUED, SENDING, RETRY, REFUSED = "queued", "sending", "retry", "refused"
DELIVERY_STATES = (QUEUED, SENDING, RETRY, DELIVERED, REFUSED, DEAD)
FAILING_DELIVERY = (RETRY, REFUSED, DEAD)


def shown_delivery_state(state: str) -> str:
    """A delivery state as the console, the CLI and /metrics name it (`retry` -> retrying)."""
    return "retrying" if state == RETRY else state


_TRANSITIONS: dict[str, frozenset[str]] = {
    ACCEPTED: frozenset({PROCESSING, DEAD}),
    PROCESSING: frozenset({EXTRACTED, FAILED, DEAD, ACCEPTED}),
    EXTRACTED: frozenset({DELIVERED, FAILED, DEAD}),
    FAILED: frozenset({PROCESSING, DEAD, ACCEPTED}),
    DEAD: frozenset({ACCEPTED, DISCARDED, RESOLVED}),
    DELIVERED: frozenset({ACCEPTED}),
    DISCARDED: frozenset({ACCEPTED}),
    RESOLVED: frozenset({ACCEPTED}),
}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Incoming:
    """One message to accept (what the listener peeked before the ACK)."""

    raw: bytes
    channel: str
    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    content_type: str = "application/hl7-v2"


@dataclass(frozen=True)
class AcceptResult:
    """The outcome of storing one message."""

    message_id: int
    duplicate: bool
    conflict: bool
    ack: bytes | None


@dataclass(frozen=True)
class SavedResult:
    """What `Store.save_result` did: stored the Bundle (retiring Observations it no longer
    has), or kept the stored result because the incoming one is older (`reason`)."""

    bundle_id: str
    saved: bool
    retired: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True)
class Claim:
    """What `Store.claim_message` got: CLAIMED with the message's raw bytes and content type,
    or TAKEN / DEAD (nothing to process)."""

    outcome: str
    raw: bytes = b""
    content_type: str = ""


@dataclass(frozen=True)
class Output:
    """One result of a processed message to keep (`Store.finish_extraction`): its extraction
    record and, unless evaluating, its Bundle."""

    report_id: str
    template_id: str
    template_version: str
    stage: str
    record: dict[str, Any]
    bundle: dict[str, Any] | None


@dataclass(frozen=True)
class DeliveryJob:
    """A stored Bundle to deliver (`Store.delivery_job`)."""

    bundle: dict[str, Any]
    message_id: int | None
    delivered_already: bool
    report_id: str = ""
    # the source message as stored (its Report gives the identity at the EHR and the ORU's
    # PID/PV1/OBR); None for a Bundle stored without a message
    raw: bytes | None = None
    content_type: str | None = None
    # what `target` holds of the Bundle (`mappings.ehr` hashes of its last delivery; {} when none)
    delivered: dict[str, str] = field(default_factory=dict)
    # another copy of the task holds the delivery's claim (`Store.delivery_job` with a lease):
    # this copy pushes nothing
    busy: bool = False
    # the Bundle's `updated_at` as read: record it with the delivery (`delivered_stamp`), so a
    # change saved meanwhile is not taken as delivered
    stamp: datetime | None = None


@dataclass(frozen=True)
class MessageRow:
    """A stored message without its raw bytes (use `Store.raw` for those)."""

    id: int
    received_at: datetime
    channel: str
    sending_application: str
    sending_facility: str
    control_id: str
    sha256: str
    size: int
    state: str
    reason: str | None
    attempts: int
    conflict: bool
    resends: int
    next_attempt_at: datetime | None = None
    rejection_code: str | None = None  # HL7 table 0357, kept by `mark_rejected`
    rejection_detail: str | None = None


@dataclass(frozen=True)
class FieldProblem:
    """A key field of an `Incoming` the store would refuse: longer than its column (`limit`),
    or holding a NUL character (`limit` None; PostgreSQL text cannot hold one)."""

    field: str
    limit: int | None

    @property
    def problem(self) -> str:
        """What is wrong with the value, for the NAK or OperationOutcome (never the value)."""
        if self.limit is None:
            return "contains a NUL character"
        return f"is longer than {self.limit} characters"


_KEY_FIELDS = ("sending_application", "sending_facility", "control_id")


def field_problem(item: Incoming) -> FieldProblem | None:
    """The first key field the database would refuse, checked before the commit: such a value
    is a permanent rejection, never a retry (SQLite would even store it unchecked)."""
    for name in _KEY_FIELDS:
        value: str = getattr(item, name)
        limit = messages.c[name].type.length  # type: ignore[attr-defined]
        if limit is not None and len(value) > limit:
            return FieldProblem(name, int(limit))
        if "\x00" in value:
            return FieldProblem(name, None)
    return None


def default_database_url(settings: Settings) -> str:
    """SQLite in the data dir unless RADBRIDGE_DATABASE_URL is set."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{(Path(settings.data_dir) / 'radbridge.db').resolve()}"


def _sqlite_pragmas(synchronous: str) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return apply


def run_migrations(engine: Engine) -> None:
    """Upgrade the schema to the newest Alembic revision (idempotent)."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("adapter") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _claim_delivery(connection: Connection, bundle_id: str, target: str, lease: timedelta) -> bool:
    """Claim the delivery of a Bundle to a target (state `sending`, the attempts untouched):
    False when another copy's claim is younger than `lease` or the Bundle as stored now is
    delivered already (a copy that finished between this transaction's read and this write).
    On PostgreSQL a concurrent claim's UPDATE waits for this one and then sees it."""
    now = _now()
    key = (deliveries.c.bundle_id == bundle_id, deliveries.c.target == target)
    stored_at = sa.select(bundles.c.updated_at).where(bundles.c.id == bundle_id).scalar_subquery()
    taken = sa.or_(
        sa.and_(deliveries.c.state == SENDING, deliveries.c.updated_at > now - lease),
        _delivered_as_stored(deliveries, stored_at),
    )
    claimed = connection.execute(
        deliveries.update().where(*key, ~taken).values(state=SENDING, updated_at=now)
    )
    if claimed.rowcount:
        return True
    if connection.execute(sa.select(deliveries.c.id).where(*key)).first() is not None:
        return False
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    row = {"bundle_id": bundle_id, "target": target, "state": SENDING, "attempts": 0}
    inserted = connection.execute(
        insert(deliveries).values(**row, updated_at=now).on_conflict_do_nothing()
    )
    return bool(inserted.rowcount)


def _delivered_as_stored(record: Any, stored_at: Any) -> Any:
    """SQL: the delivery record holds the Bundle as stored now: `delivered`, and the Bundle's
    `updated_at` it delivered (`delivered_stamp`; a record from before migration 0008: its own
    time) is no older than `stored_at`. A change saved while a push was in flight is newer
    than what that push delivered, so it is sent again, never taken as delivered."""
    return sa.and_(
        record.c.state == DELIVERED,
        sa.func.coalesce(record.c.delivered_stamp, record.c.updated_at) >= stored_at,
    )


def _all_delivered(connection: Connection, message_id: int, targets: Sequence[str]) -> bool:
    """Whether every Bundle of the message is delivered, as stored now, to each of `targets`."""
    for target in targets:
        record = deliveries.alias("record")
        done = (
            sa.select(record.c.id)
            .where(
                record.c.bundle_id == bundles.c.id,
                record.c.target == target,
                _delivered_as_stored(record, bundles.c.updated_at),
            )
            .exists()
        )
        missing = connection.execute(
            sa.select(bundles.c.id).where(bundles.c.message_id == message_id, ~done).limit(1)
        ).first()
        if missing is not None:
            return False
    return True


def _upserts(is_sqlite: bool) -> tuple[Any, Any]:
    """The store's two upserts (INSERT ... ON CONFLICT DO UPDATE: one statement, no
    delete-and-insert race), built once per store: the Bundle (its message: the one that wrote it
    last, kept for an offline Bundle) and the index rows of its resources (every column but the
    key; run with one parameter set per resource)."""
    if is_sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    bundle = insert(bundles)
    bundle = bundle.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "body": bundle.excluded.body,
            "updated_at": bundle.excluded.updated_at,
            "report_id": bundle.excluded.report_id,
            "message_id": sa.func.coalesce(bundle.excluded.message_id, bundles.c.message_id),
        },
    )
    resource = insert(resources)
    resource = resource.on_conflict_do_update(
        index_elements=["resource_type", "id"],
        set_={
            column.name: resource.excluded[column.name]
            for column in resources.c
            if column.name not in ("resource_type", "id")
        },
    )
    return bundle, resource


def _transition_in(
    connection: Connection,
    message_id: int,
    target: str,
    *,
    reason: str | None = None,
    retry_at: datetime | None = None,
    refund_attempt: bool = False,
) -> bool:
    """Move a message to `target` (from a state allowed to reach it) and audit it, inside the
    caller's transaction; False when the message is in no such state."""
    allowed_from = [state for state, targets in _TRANSITIONS.items() if target in targets]
    values: dict[str, Any] = {"state": target, "updated_at": _now()}
    if reason is not None or target in (ACCEPTED, PROCESSING, DELIVERED):
        values["reason"] = reason
    if refund_attempt:
        values["attempts"] = sa.case((messages.c.attempts > 0, messages.c.attempts - 1), else_=0)
    if target == ACCEPTED:  # an operator's requeue of a finished message starts afresh
        values["attempts"] = sa.case(
            (messages.c.state.in_((DEAD, DELIVERED, *CLOSED)), 0), else_=messages.c.attempts
        )
    if target != PROCESSING:
        values["claimed_by"] = None
    values["next_attempt_at"] = retry_at if target == FAILED else None
    result = connection.execute(
        messages.update()
        .where(messages.c.id == message_id, messages.c.state.in_(allowed_from))
        .values(**values)
    )
    if result.rowcount == 1:
        connection.execute(
            audit_events.insert().values(
                at=_now(), message_id=message_id, event=target, detail=reason
            )
        )
    return result.rowcount == 1


class Store:
    """The store. Thread-safe: every call takes its own connection from the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._upsert_bundle, self._upsert_resource = _upserts(self.is_sqlite)

    @classmethod
    def open(cls, settings: Settings, *, url: str | None = None) -> Store:
        """Connect (creating the data dir for SQLite) and run migrations."""
        url = url or default_database_url(settings)
        try:
            if url.startswith("sqlite"):
                Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}
                )
                sa.event.listen(engine, "connect", _sqlite_pragmas(settings.sqlite_synchronous))
            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            run_migrations(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the store ({type(exc).__name__}; check RADBRIDGE_DATABASE_URL)"
            ) from None
        store = cls(engine)
        log.info("store opened dialect=%s", engine.dialect.name)
        return store

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DataError:  # the values, not the database: the same row fails again
            raise StoreRefused("the database refused the values (DataError)") from None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store operation failed ({type(exc).__name__})") from None

    # -- ingest ---------------------------------------------------------------------------
    def _accept_one(
        self, connection: Connection, item: Incoming, ack: bytes | None
    ) -> AcceptResult:
        digest = hashlib.sha256(item.raw).hexdigest()
        existing = connection.execute(
            _FIND_BY_CONTROL_ID,
            {
                "app": item.sending_application,
                "facility": item.sending_facility,
                "control_id": item.control_id,
            },
        ).all()
        for row in existing:
            if row.sha256 == digest:
                connection.execute(_COUNT_RESEND, {"message_id": row.id})
                return AcceptResult(
                    row.id, duplicate=True, conflict=bool(row.conflict), ack=row.ack
                )
        conflict = bool(existing) and bool(item.control_id)
        now = _now()
        inserted = connection.execute(
            _INSERT_MESSAGE,
            {
                "received_at": now,
                "channel": item.channel,
                "sending_application": item.sending_application,
                "sending_facility": item.sending_facility,
                "control_id": item.control_id,
                "sha256": digest,
                "size": len(item.raw),
                "content_type": item.content_type,
                "raw": item.raw,
                "state": ACCEPTED,
                "attempts": 0,
                "conflict": conflict,
                "resends": 0,
                "ack": ack,
                "updated_at": now,
            },
        ).inserted_primary_key
        if inserted is None:
            raise StoreError("the database returned no id for the stored message")
        message_id = inserted[0]
        if conflict:
            connection.execute(
                audit_events.insert().values(
                    at=now, message_id=message_id, event="control_id_conflict", detail=None
                )
            )
        return AcceptResult(int(message_id), duplicate=False, conflict=conflict, ack=ack)

    def accept(self, item: Incoming, *, ack: bytes | None = None) -> AcceptResult:
        """Commit one message (durably) and return its id; a resend returns the first row."""
        return self.accept_many([item], acks=[ack])[0]

    def accept_many(
        self, items: Sequence[Incoming], *, acks: Sequence[bytes | None] | None = None
    ) -> list[AcceptResult]:
        """Commit several messages in ONE transaction (group commit); all or nothing: a row the
        database refuses fails them all with `StoreRefused` (the group committer then retries
        the rows one by one)."""
        acks = list(acks) if acks is not None else [None] * len(items)
        for attempt in range(3):
            try:
                with self._tx() as connection:
                    return [
                        self._accept_one(connection, item, ack)
                        for item, ack in zip(items, acks, strict=True)
                    ]
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise StoreError("could not store the message (concurrent duplicate)") from None
        raise StoreError("unreachable")  # pragma: no cover

    def set_ack(self, message_id: int, ack: bytes) -> None:
        """Remember the ACK sent for a message, so a resend gets the identical ACK."""
        with self._tx() as connection:
            connection.execute(messages.update().where(messages.c.id == message_id).values(ack=ack))

    # -- state machine ----------------------------------------------------------------------
    def _transition(
        self,
        message_id: int,
        target: str,
        *,
        reason: str | None = None,
        retry_at: datetime | None = None,
        refund_attempt: bool = False,
    ) -> bool:
        with self._tx() as connection:
            return _transition_in(
                connection,
                message_id,
                target,
                reason=reason,
                retry_at=retry_at,
                refund_attempt=refund_attempt,
            )

    def claim(
        self, message_id: int, *, token: str | None = None, max_attempts: int | None = None
    ) -> bool:
        """accepted/failed -> processing, counting an attempt; False if another worker has it
        (or, see `claim_attempt`, it went dead)."""
        return self.claim_attempt(message_id, token=token, max_attempts=max_attempts) == CLAIMED

    def claim_attempt(
        self, message_id: int, *, token: str | None = None, max_attempts: int | None = None
    ) -> str:
        """Claim a message for one processing attempt: CLAIMED, TAKEN (done, or another worker
        has it) or DEAD (it already had `max_attempts` attempts: given up, whatever ended them).

        Every claim is an attempt, counted in the store: an attempt that killed its process
        counts like one that raised. `token` names the task attempt; the same task redelivered
        after its worker process died may take over its own `processing` message.
        """
        return self.claim_message(message_id, token=token, max_attempts=max_attempts).outcome

    def claim_message(
        self, message_id: int, *, token: str | None = None, max_attempts: int | None = None
    ) -> Claim:
        """`claim_attempt`, and with a claim the message's raw bytes and content type, read in
        the same transaction (the worker's first and only read of the message)."""
        with self._tx() as connection:
            row = connection.execute(
                sa.select(
                    messages.c.state,
                    messages.c.attempts,
                    messages.c.claimed_by,
                    messages.c.reason,
                    messages.c.raw,
                    messages.c.content_type,
                ).where(messages.c.id == message_id)
            ).first()
            if row is None:
                return Claim(TAKEN)
            own = token is not None and row.state == PROCESSING and row.claimed_by == token
            if row.state not in (ACCEPTED, FAILED) and not own:
                return Claim(TAKEN)
            guard = (
                messages.c.id == message_id,
                messages.c.state == row.state,
                messages.c.attempts == row.attempts,
            )
            now = _now()
            if max_attempts is not None and row.attempts >= max_attempts:
                last = row.reason if row.state == FAILED and row.reason else "worker lost"
                reason = f"{last} after {row.attempts} attempts"
                values: dict[str, Any] = {"state": DEAD, "reason": reason, "claimed_by": None}
                outcome, event = DEAD, DEAD
            else:
                values = {
                    "state": PROCESSING,
                    "reason": None,
                    "attempts": messages.c.attempts + 1,
                    "claimed_by": token,
                    "next_attempt_at": None,
                }
                outcome, event, reason = CLAIMED, PROCESSING, None
            updated = connection.execute(
                messages.update().where(*guard).values(updated_at=now, **values)
            )
            if updated.rowcount != 1:
                return Claim(TAKEN)  # another worker changed it between the read and the write
            connection.execute(
                audit_events.insert().values(
                    at=now, message_id=message_id, event=event, detail=reason
                )
            )
        if outcome == DEAD:
            log.warning("message %d dead after %d attempts", message_id, row.attempts)
            return Claim(DEAD)
        return Claim(CLAIMED, bytes(row.raw), str(row.content_type))

    def mark_extracted(self, message_id: int, reason: str | None = None) -> None:
        """processing -> extracted (reason e.g. "no template" when nothing applied)."""
        self._require(self._transition(message_id, EXTRACTED, reason=reason), message_id, EXTRACTED)

    def mark_delivered(self, message_id: int) -> None:
        """extracted -> delivered."""
        self._require(self._transition(message_id, DELIVERED), message_id, DELIVERED)

    def mark_failed(
        self,
        message_id: int,
        reason: str,
        *,
        dead: bool = False,
        retry_at: datetime | None = None,
        refund_attempt: bool = False,
    ) -> None:
        """-> failed (to be retried, not before `retry_at`) or dead (given up), with a reason
        free of PHI. `refund_attempt`: the attempt does not count (the model server was
        unavailable: no fault of the message)."""
        target = DEAD if dead else FAILED
        ok = self._transition(
            message_id, target, reason=reason, retry_at=retry_at, refund_attempt=refund_attempt
        )
        self._require(ok, message_id, target)

    def mark_rejected(self, message_id: int, reason: str, code: str, detail: str) -> None:
        """-> dead like `mark_failed`, keeping the rejection's 0357 `code` and `detail` (no PHI)."""
        with self._tx() as connection:
            ok = _transition_in(connection, message_id, DEAD, reason=reason)
            if ok:
                connection.execute(
                    messages.update()
                    .where(messages.c.id == message_id)
                    .values(rejection_code=code, rejection_detail=detail)
                )
        self._require(ok, message_id, DEAD)

    def requeue(self, message_id: int) -> None:
        """dead/failed/delivered -> accepted again. An operator's requeue of a dead or delivered
        message starts its attempts again from 0 (the audit trail keeps the history)."""
        self._require(self._transition(message_id, ACCEPTED), message_id, ACCEPTED)

    def reclaim_stale(self, message_id: int, older_than: timedelta) -> bool:
        """processing for longer than `older_than` (its worker is gone) -> accepted, attempts
        kept (the next claim counts, and gives up at the cap); False if it moved on."""
        cutoff = _now() - older_than
        with self._tx() as connection:
            updated = connection.execute(
                messages.update()
                .where(
                    messages.c.id == message_id,
                    messages.c.state == PROCESSING,
                    messages.c.updated_at <= cutoff,
                )
                .values(state=ACCEPTED, claimed_by=None, updated_at=_now())
            )
            if updated.rowcount == 1:
                connection.execute(
                    audit_events.insert().values(
                        at=_now(), message_id=message_id, event="reclaimed", detail=None
                    )
                )
            return updated.rowcount == 1

    def _require(self, ok: bool, message_id: int, target: str) -> None:
        if not ok:
            row = self.get_message(message_id)
            current = row.state if row else "missing"
            raise StoreError(f"message {message_id}: cannot go from {current} to {target}")

    # -- reads ------------------------------------------------------------------------------
    def get_message(self, message_id: int) -> MessageRow | None:
        """One message's metadata, or None."""
        with self._tx() as connection:
            row = connection.execute(
                sa.select(
                    *[
                        c
                        for c in messages.c
                        if c.name not in ("raw", "ack", "content_type", "updated_at", "claimed_by")
                    ]
                ).where(messages.c.id == message_id)
            ).first()
        return MessageRow(**row._mapping) if row else None

    def content_type(self, message_id: int) -> str:
        """The stored message's content type."""
        with self._tx() as connection:
            value = connection.execute(
                sa.select(messages.c.content_type).where(messages.c.id == message_id)
            ).scalar()
        if value is None:
            raise StoreError(f"message {message_id} not found")
        return str(value)

    def message_of_bundle(self, bundle_id: str) -> int | None:
        """The message a Bundle was made from (None for offline Bundles)."""
        with self._tx() as connection:
            value = connection.execute(
                sa.select(bundles.c.message_id).where(bundles.c.id == bundle_id)
            ).scalar()
        return int(value) if value is not None else None

    def mark_delivered_if_extracted(self, message_id: int) -> bool:
        """extracted -> delivered; False when already delivered (several Bundles per message)."""
        return self._transition(message_id, DELIVERED)

    def raw(self, message_id: int) -> bytes:
        """The message's raw bytes (StoreError if unknown)."""
        with self._tx() as connection:
            raw = connection.execute(
                sa.select(messages.c.raw).where(messages.c.id == message_id)
            ).scalar()
        if raw is None:
            raise StoreError(f"message {message_id} not found")
        return bytes(raw)

    def pending(self, older_than: timedelta = timedelta(0)) -> list[int]:
        """Messages the store says are not done: accepted, failed with its retry due (never
        during its backoff), or processing (these `older_than` ago)."""
        now = _now()
        cutoff = now - older_than
        due = sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now)
        with self._tx() as connection:
            rows = connection.execute(
                sa.select(messages.c.id)
                .where(
                    sa.or_(
                        messages.c.state.in_((ACCEPTED, PROCESSING)),
                        sa.and_(messages.c.state == FAILED, due),
                    ),
                    messages.c.updated_at <= cutoff,
                )
                .order_by(messages.c.id)
            ).scalars()
            return [int(r) for r in rows]

    def undelivered(
        self,
        target: str,
        older_than: timedelta = timedelta(0),
        lease: timedelta = timedelta(hours=1),
    ) -> list[str]:
        """Bundles of `extracted` messages (or of delivered ones with a delivery queued since)
        whose delivery to `target` is not done and not waiting for a retry: never attempted (the
        task was lost), a retry now due, a claim (`sending`) older than `lease` (its worker was
        lost mid-push), or an outcome older than the Bundle (a superseding result rewrote it).
        For `reconcile`."""
        now = _now()
        cutoff = now - older_than
        record = deliveries.alias("record")
        done = (
            sa.select(record.c.id)
            .where(
                record.c.bundle_id == bundles.c.id,
                record.c.target == target,
                sa.or_(
                    sa.and_(
                        record.c.state.in_((REFUSED, DEAD)),
                        record.c.updated_at >= bundles.c.updated_at,
                    ),
                    _delivered_as_stored(record, bundles.c.updated_at),
                    sa.and_(record.c.state == RETRY, record.c.next_attempt_at > now),
                    sa.and_(record.c.state == SENDING, record.c.updated_at > now - lease),
                ),
            )
            .exists()
        )
        waiting = (  # a change queued after its message was delivered (a decision, a resend)
            sa.select(record.c.id)
            .where(
                record.c.bundle_id == bundles.c.id,
                record.c.target == target,
                record.c.state.in_((QUEUED, RETRY, SENDING)),
            )
            .exists()
        )
        query = (
            sa.select(bundles.c.id)
            .join(messages, messages.c.id == bundles.c.message_id)
            .where(
                sa.or_(
                    messages.c.state == EXTRACTED,
                    sa.and_(messages.c.state == DELIVERED, waiting),
                ),
                bundles.c.updated_at <= cutoff,
                ~done,
            )
            .order_by(bundles.c.updated_at)
        )
        with self._tx() as connection:
            return [str(b) for b in connection.execute(query).scalars()]

    def delivered_already(self, bundle_id: str, target: str) -> bool:
        """Whether the Bundle as stored now was already delivered to `target` (a delivery record
        `delivered` no older than the Bundle): a second copy of its deliver task (reconcile
        re-enqueues what may have been lost with Redis) then pushes nothing."""
        with self._tx() as connection:
            return (
                connection.execute(
                    sa.select(deliveries.c.id)
                    .join(bundles, bundles.c.id == deliveries.c.bundle_id)
                    .where(
                        deliveries.c.bundle_id == bundle_id,
                        deliveries.c.target == target,
                        _delivered_as_stored(deliveries, bundles.c.updated_at),
                    )
                ).first()
                is not None
            )

    def repair_delivered(self, targets: Sequence[str]) -> list[int]:
        """`extracted` messages whose Bundles are all delivered to every one of `targets` (a
        worker lost between the delivery record and the message's state) become `delivered`;
        their ids."""
        if not targets:
            return []
        record = deliveries.alias("record")
        query = (
            sa.select(messages.c.id)
            .join(bundles, bundles.c.message_id == messages.c.id)
            .join(record, record.c.bundle_id == bundles.c.id)
            .where(
                messages.c.state == EXTRACTED,
                record.c.target == targets[0],
                _delivered_as_stored(record, bundles.c.updated_at),
            )
            .distinct()
        )
        repaired = []
        with self._tx() as connection:
            for message_id in [int(m) for m in connection.execute(query).scalars()]:
                if _all_delivered(connection, message_id, targets) and _transition_in(
                    connection, message_id, DELIVERED
                ):
                    repaired.append(message_id)
        return repaired

    def dead_letters(self) -> list[MessageRow]:
        """Messages given up on."""
        with self._tx() as connection:
            ids = (
                connection.execute(
                    sa.select(messages.c.id).where(messages.c.state == DEAD).order_by(messages.c.id)
                )
                .scalars()
                .all()
            )
        return [row for i in ids if (row := self.get_message(int(i))) is not None]

    def close_dead_letter(self, message_id: int, outcome: str, reason: str, by: str) -> None:
        """dead -> discarded or resolved (`outcome`), with the operator's reason in the audit
        trail (`<outcome>` event: "by <user>: <reason>"); the message, its failure reason and
        its history stay. StoreError when it is not a dead letter."""
        if outcome not in CLOSED:
            raise StoreError(f"a dead letter is closed as {' or '.join(CLOSED)}, not {outcome}")
        now = _now()
        with self._tx() as connection:
            updated = connection.execute(
                messages.update()
                .where(messages.c.id == message_id, messages.c.state == DEAD)
                .values(state=outcome, updated_at=now, next_attempt_at=None, claimed_by=None)
            )
            if updated.rowcount == 1:
                connection.execute(
                    audit_events.insert().values(
                        at=now, message_id=message_id, event=outcome, detail=f"by {by}: {reason}"
                    )
                )
        self._require(updated.rowcount == 1, message_id, outcome)

    def closed_dead_letters(self, limit: int = 100) -> list[tuple[MessageRow, str | None]]:
        """Dead letters an operator discarded or resolved (latest first), each with the audit
        detail of its closing ("by <user>: <reason>")."""
        with self._tx() as connection:
            ids = (
                connection.execute(
                    sa.select(messages.c.id)
                    .where(messages.c.state.in_(CLOSED))
                    .order_by(messages.c.updated_at.desc(), messages.c.id.desc())
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            details: dict[int, str | None] = {}
            for message_id, detail in connection.execute(
                sa.select(audit_events.c.message_id, audit_events.c.detail)
                .where(audit_events.c.message_id.in_(ids), audit_events.c.event.in_(CLOSED))
                .order_by(audit_events.c.id)
            ).all():
                details[int(message_id)] = detail
        rows = [row for i in ids if (row := self.get_message(int(i))) is not None]
        return [(row, details.get(row.id)) for row in rows]

    def counts_by_state(self) -> dict[str, int]:
        """How many messages are in each state (for metrics)."""
        with self._tx() as connection:
            rows = connection.execute(
                sa.select(messages.c.state, sa.func.count()).group_by(messages.c.state)
            ).all()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: int(n) for state, n in rows})
        return counts

    def insight_counts(self) -> dict[str, int]:
        """For metrics (issue 20): the insight resources in force by type (ServiceRequest,
        Flag, Communication; retired ones left out) and the messages no template applied to."""
        kinds = ("ServiceRequest", "Flag", "Communication")
        with self._tx() as connection:
            rows = connection.execute(
                sa.select(resources.c.resource_type, sa.func.count())
                .where(resources.c.resource_type.in_(kinds), _served_status())
                .group_by(resources.c.resource_type)
            ).all()
            unrouted = connection.execute(
                sa.select(sa.func.count()).where(messages.c.reason == "no template")
            ).scalar()
        counts = dict.fromkeys(kinds, 0)
        counts.update({str(kind): int(n) for kind, n in rows})
        counts["no_template"] = int(unrouted or 0)
        return counts

    def extraction_seconds(self) -> tuple[int, float]:
        """(number of extractions, total model seconds) for metrics."""
        with self._tx() as connection:
            row = connection.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(extractions.c.seconds), 0.0)
                )
            ).one()
        return int(row[0]), float(row[1])

    # -- results ----------------------------------------------------------------------------
    def save_extraction(
        self,
        message_id: int,
        report_id: str,
        template_id: str,
        template_version: str,
        stage: str,
        payload: dict[str, Any],
    ) -> None:
        """Keep the extraction record (including not-mentioned values, which FHIR omits)."""
        output = Output(report_id, template_id, template_version, stage, payload, None)
        with self._tx() as connection:
            _insert_extraction(connection, message_id, output)

    def finish_extraction(self, message_id: int, outputs: Sequence[Output]) -> list[SavedResult]:
        """A processed message's results in ONE transaction: each extraction record and Bundle
        (`save_result`'s rules: a Bundle older than the stored result is kept, not saved, and
        audited `superseded`) and the message `processing -> extracted`, its reason "no
        template" when it had no result or only results no template applied to (their record
        says `no_template`: the report's own Bundle, issue 20), else the first superseding
        reason when no Bundle was saved. All or nothing: StoreError (nothing written) when the message is no longer
        `processing`."""
        saved: list[SavedResult] = []
        now = _now()
        with self._tx() as connection:
            for output in outputs:
                _insert_extraction(connection, message_id, output)
                if output.bundle is None:
                    continue
                result = self._save_result_in(
                    connection, message_id, output.report_id, output.bundle, now
                )
                saved.append(result)
                if not result.saved:
                    connection.execute(
                        audit_events.insert().values(
                            at=now, message_id=message_id, event="superseded", detail=result.reason
                        )
                    )
            kept = [r for r in saved if not r.saved]
            reason = None
            if not any(r.saved for r in saved):
                reason = (kept[0].reason or "superseded") if kept else "no template"
            elif outputs and all(output.record.get("no_template") for output in outputs):
                reason = "no template"  # its Bundle (report and insights) was kept all the same
            if not _transition_in(connection, message_id, EXTRACTED, reason=reason):
                raise StoreError(f"message {message_id}: no longer processing, nothing was saved")
        for result in saved:
            if result.retired:
                log.info("bundle %s retired %d observations", result.bundle_id, len(result.retired))
        return saved

    def save_bundle(self, message_id: int | None, report_id: str, bundle: dict[str, Any]) -> str:
        """Store a transaction Bundle (see `save_result`); returns its id."""
        return self.save_result(message_id, report_id, bundle).bundle_id

    def save_result(
        self, message_id: int | None, report_id: str, bundle: dict[str, Any]
    ) -> SavedResult:
        """Store a transaction Bundle and index its resources for pull, unless the report it
        carries is older than the one stored for the same DiagnosticReport (result order);
        idempotent per id.

        A superseding Bundle retires the stored Observations it no longer has: each is added to
        the Bundle as `entered-in-error` (so the EHR gets it too) and no longer served.
        Shared resources (Patient, Device) are upserted: concurrent workers never collide.
        A reviewer's decisions survive a re-extraction of the same report (see
        `adapter.reextraction.keep_reviewed`); a superseding report reopens them.
        """
        with self._tx() as connection:
            result = self._save_result_in(connection, message_id, report_id, bundle, _now())
        if result.retired:
            log.info("bundle %s retired %d observations", result.bundle_id, len(result.retired))
        return result

    def _save_result_in(
        self,
        connection: Connection,
        message_id: int | None,
        report_id: str,
        bundle: dict[str, Any],
        now: datetime,
    ) -> SavedResult:
        """`save_result` inside the caller's transaction."""
        bundle_id = str(bundle["id"])
        incoming = diagnostic_report_of(bundle)
        self._lock_report(connection, incoming["id"] if incoming else bundle_id, bundle_id)
        if incoming is not None:
            stored = connection.execute(
                sa.select(resources.c.body).where(
                    resources.c.resource_type == "DiagnosticReport",
                    resources.c.id == incoming["id"],
                )
            ).scalar()
            reason = _stale_reason(incoming, json.loads(stored)) if stored else None
            if reason is not None:
                return SavedResult(bundle_id, saved=False, retired=(), reason=reason)

        kept = keep_reviewed(connection, message_id, report_id, bundle)
        if kept.unchanged:  # the same report, every value decided: the stored one stays
            return SavedResult(bundle_id, saved=False, retired=(), reason=kept.reason)
        bundle = kept.bundle
        current = {
            (e["resource"]["resourceType"], e["resource"]["id"])
            for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] in RETIRABLE
        }
        dropped = sorted(  # sorted here: ORDER BY id made SQLite read every Observation
            connection.execute(
                sa.select(resources.c.resource_type, resources.c.id, resources.c.body).where(
                    resources.c.resource_type.in_(RETIRABLE),
                    resources.c.bundle_id == bundle_id,
                )
            ).all()
        )
        retired = [
            _retired(json.loads(body))
            for kind, oid, body in dropped
            if (str(kind), str(oid)) not in current
        ]
        if retired:
            bundle = {
                **bundle,
                "entry": [
                    *bundle.get("entry", []),
                    *(
                        {
                            "fullUrl": f"urn:uuid:{r['id']}",
                            "resource": r,
                            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                        }
                        for r in retired
                    ),
                ],
            }
        body = json.dumps(bundle, ensure_ascii=False)
        bundle_row = {
            "id": bundle_id,
            "message_id": message_id,
            "report_id": report_id,
            "body": body,
            "created_at": now,
            "updated_at": now,
        }
        if message_id is not None:  # delivery marks the message that wrote it last
            self._note_replaced(connection, bundle_id, message_id, now)
        connection.execute(self._upsert_bundle, bundle_row)
        report_of = {
            ref["reference"]: f"DiagnosticReport/{e['resource']['id']}"
            for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "DiagnosticReport"
            for ref in e["resource"].get("result", [])
        }
        written = [  # a reviewer's decision is kept as it is stored
            (entry["resource"], index_terms(entry["resource"]))
            for entry in bundle.get("entry", [])
            if (entry["resource"]["resourceType"], entry["resource"]["id"]) not in kept.skip
        ]
        rows = [_index_row(r, bundle_id, now, report_of, terms) for r, terms in written]
        self._keep_versions(connection, rows)  # each resource's history
        if rows:  # one statement for all of them (executemany)
            connection.execute(self._upsert_resource, rows)
        write_tokens(connection, written)
        return SavedResult(
            bundle_id, saved=True, retired=tuple(str(r["id"]) for r in retired), reason=None
        )

    def _note_replaced(
        self, connection: Connection, bundle_id: str, message_id: int, now: datetime
    ) -> None:
        """The message whose result this Bundle held until now, if another and still waiting
        for its delivery, says why nothing of it will be delivered (it stays `extracted`)."""
        previous = connection.execute(
            sa.select(bundles.c.message_id).where(bundles.c.id == bundle_id)
        ).scalar()
        if previous is None or int(previous) == message_id:
            return
        reason = f"superseded: its result was replaced by message {message_id}"
        replaced = connection.execute(
            messages.update()
            .where(messages.c.id == previous, messages.c.state == EXTRACTED)
            .values(reason=reason, updated_at=now)
        )
        if replaced.rowcount:
            connection.execute(
                audit_events.insert().values(
                    at=now, message_id=previous, event="superseded", detail=reason
                )
            )

    def _lock_report(self, connection: Connection, report_id: str, bundle_id: str) -> None:
        """Serialise writers of one DiagnosticReport for the rest of the transaction, so two
        results of the same accession are compared and written one after the other."""
        if self.is_sqlite:  # a write first: SQLite takes its (database-wide) write lock now
            connection.execute(
                bundles.update().where(bundles.c.id == bundle_id).values(id=bundles.c.id)
            )
        else:
            connection.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(report_id, 0)))
            )

    def _keep_versions(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Set each index row's `version_id` before it is written, with one read of the stored
        rows: a resource rewritten with a different body has its current version kept in
        `resource_versions` and becomes the next version (same body: same version; a new one: 1).
        On PostgreSQL the stored rows are locked, and a Patient, Device or Practitioner that
        reports share is written by one transaction at a time (one report's own resources
        already are, by `_lock_report`)."""
        keys = sorted({(str(row["resource_type"]), str(row["id"])) for row in rows})
        for row in rows:
            row["version_id"] = 1
        if not keys:
            return
        if not self.is_sqlite:
            # A row lock cannot cover a Patient or Device that does not exist yet, and reports
            # sharing two of them could each insert one and wait for the other (a deadlock
            # PostgreSQL breaks by failing one): one advisory lock per key, always in this order.
            for resource_type, resource_id in keys:
                if resource_type in _SHARED_TYPES:
                    connection.execute(
                        sa.select(
                            sa.func.pg_advisory_xact_lock(
                                sa.func.hashtextextended(f"{resource_type}/{resource_id}", 0)
                            )
                        )
                    )
        query = sa.select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.body,
            resources.c.last_updated,
        ).where(keys_condition(resources.c.resource_type, resources.c.id, keys))
        stored = {
            (str(current.resource_type), str(current.id)): current
            for current in connection.execute(
                query if self.is_sqlite else query.with_for_update()
            ).all()
        }
        for row in rows:
            current = stored.get((str(row["resource_type"]), str(row["id"])))
            if current is None:
                continue
            if current.body == row["body"]:
                row["version_id"] = current.version_id
            else:
                archive_version(connection, current)
                row["version_id"] = current.version_id + 1

    def get_bundle(self, bundle_id: str) -> dict[str, Any] | None:
        """A stored Bundle, or None."""
        with self._tx() as connection:
            body = connection.execute(
                sa.select(bundles.c.body).where(bundles.c.id == bundle_id)
            ).scalar()
        return json.loads(body) if body else None

    def get_resource(
        self, resource_type: str, resource_id: str, *, served: bool = False
    ) -> dict[str, Any] | None:
        """One stored resource by type and id, or None; `served`: with `meta.lastUpdated` and
        `meta.versionId`."""
        with self._tx() as connection:
            row = connection.execute(
                sa.select(resources.c.body, resources.c.last_updated, resources.c.version_id).where(
                    resources.c.resource_type == resource_type, resources.c.id == resource_id
                )
            ).first()
        if row is None:
            return None
        resource: dict[str, Any] = json.loads(row[0])
        if not served:
            return resource
        return _with_last_updated(resource, row[1], row[2])

    def _observation_query(
        self,
        columns: Any,
        *,
        subject: str | None,
        code: str | None,
        derived_from: str | None,
        last_updated_since: datetime | None,
    ) -> Any:
        query = sa.select(*columns).where(
            resources.c.resource_type == "Observation", _served_status()
        )
        if subject:
            query = query.where(resources.c.subject == subject)
        if code:  # `system|code`, or a bare code of any system (LIKE wildcards are literal)
            query = query.where(
                resources.c.code == code
                if "|" in code
                else resources.c.code.endswith(f"|{code}", autoescape=True)
            )
        if derived_from:
            query = query.where(resources.c.report_ref == derived_from)
        if last_updated_since:
            query = query.where(resources.c.last_updated >= last_updated_since)
        return query

    def search_observations(
        self,
        *,
        subject: str | None = None,
        code: str | None = None,
        derived_from: str | None = None,
        last_updated_since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Observations by subject reference, `system|code` (or bare code), report reference, update
        time; one page (`limit` from `offset`), each with `meta.lastUpdated` from the store."""
        query = self._observation_query(
            (resources.c.body, resources.c.last_updated, resources.c.version_id),
            subject=subject,
            code=code,
            derived_from=derived_from,
            last_updated_since=last_updated_since,
        )
        with self._tx() as connection:
            rows = connection.execute(
                query.order_by(resources.c.last_updated, resources.c.id).limit(limit).offset(offset)
            ).all()
        return [
            _with_last_updated(json.loads(body), updated, version)
            for body, updated, version in rows
        ]

    def count_observations(
        self,
        *,
        subject: str | None = None,
        code: str | None = None,
        derived_from: str | None = None,
        last_updated_since: datetime | None = None,
    ) -> int:
        """How many Observations `search_observations` finds over all pages (searchset total)."""
        query = self._observation_query(
            (sa.func.count(),),
            subject=subject,
            code=code,
            derived_from=derived_from,
            last_updated_since=last_updated_since,
        )
        with self._tx() as connection:
            return int(connection.execute(query).scalar_one())

    def latest_observations(
        self, subject: str, template_id: str, variable_ids: Sequence[str], before: datetime
    ) -> list[dict[str, Any]]:
        """The timeline's lookup: per variable, the subject's served radbridge Observation of
        that template and variable with the latest effective time strictly before `before`
        (a tie: the greatest id). One transaction, one index seek per variable
        (`ix_resources_timeline`): its cost does not grow with the patient's history."""
        moment = before.astimezone(UTC) if before.tzinfo else before.replace(tzinfo=UTC)
        found: list[dict[str, Any]] = []
        with self._tx() as connection:
            for variable_id in dict.fromkeys(variable_ids):
                body = connection.execute(
                    _LATEST_OBSERVATION,
                    {
                        "subject": subject,
                        "template_id": template_id,
                        "variable_id": variable_id,
                        "before": moment,
                    },
                ).scalar()
                if body is not None:
                    found.append(json.loads(body))
        return found

    def observations_of_subject(self, subject: str) -> list[dict[str, Any]]:
        """Every stored Observation of one subject (`Patient/<id>`), served ones only."""
        query = sa.select(resources.c.body).where(
            resources.c.resource_type == "Observation",
            resources.c.subject == subject,
            _served_status(),
        )
        with self._tx() as connection:
            bodies = connection.execute(query.order_by(resources.c.id)).scalars()
            return [json.loads(b) for b in bodies]

    # -- deliveries and audit -----------------------------------------------------------------
    def delivery_job(
        self, bundle_id: str, target: str, lease: timedelta | None = None
    ) -> DeliveryJob | None:
        """What a delivery task needs, in one transaction: the stored Bundle, its source message,
        what `target` holds of it, and whether the Bundle as stored now was already delivered to
        `target` (`delivered_already`); None when the Bundle is not stored.

        `lease`: when not delivered already, claim the delivery (state `sending`) for that long.
        Two copies of a deliver task (reconcile re-enqueues what Redis may have lost while the
        first copy still waits in the queue) may run at once on a pool: the one that gets the
        claim pushes, the other is `busy` and pushes nothing. A claim older than the lease is
        free again (its worker was lost mid-push; `undelivered` offers it to reconcile)."""
        record = (
            sa.select(
                deliveries.c.state,
                deliveries.c.updated_at,
                deliveries.c.delivered,
                deliveries.c.delivered_stamp,
            )
            .where(deliveries.c.bundle_id == bundle_id, deliveries.c.target == target)
            .subquery()
        )
        query = (
            sa.select(
                bundles.c.body,
                bundles.c.message_id,
                bundles.c.report_id,
                messages.c.raw,
                messages.c.content_type,
                _delivered_as_stored(record, bundles.c.updated_at).label("done"),
                bundles.c.updated_at.label("stamp"),
                record.c.delivered,
            )
            .select_from(bundles)
            .outerjoin(messages, messages.c.id == bundles.c.message_id)
            .outerjoin(record, sa.true())
            .where(bundles.c.id == bundle_id)
        )
        with self._tx() as connection:
            row = connection.execute(query).first()
            busy = False
            if row is not None and not row.done and lease is not None:
                busy = not _claim_delivery(connection, bundle_id, target, lease)
        if row is None:
            return None
        held = json.loads(row.delivered) if row.delivered else {}
        return DeliveryJob(
            json.loads(row.body),
            int(row.message_id) if row.message_id is not None else None,
            bool(row.done),
            str(row.report_id),
            bytes(row.raw) if row.raw is not None else None,
            str(row.content_type) if row.content_type is not None else None,
            {str(k): str(v) for k, v in held.items()},
            busy,
            row.stamp,
        )

    def record_delivery_attempt(
        self,
        bundle_id: str,
        target: str,
        *,
        state: str,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        next_attempt_at: datetime | None = None,
        delivered: dict[str, str] | None = None,
        delivered_message: int | None = None,
        required: Sequence[str] = (),
        reason: str | None = None,
        stamp: datetime | None = None,
    ) -> bool:
        """Upsert the delivery of a Bundle to a target, counting the attempt; returns whether
        the Bundle was saved again after `stamp` (a decision saved during the push: send it
        again), read in the same transaction (False without a stamp). `delivered`: what the
        target now holds (`mappings.ehr` hashes, or the ORU statuses sent), kept until a later
        delivery replaces it. A failure (retry, refused, dead) keeps `failing_since` (the first failure
        of the run: the retry horizon counts from it) and its `reason`; a delivery clears both.
        `delivered_message`: in the same transaction that message goes `extracted ->
        delivered` (when it is still extracted) once every Bundle of it is delivered to every
        target in `required` (none given: at once). `stamp`: the Bundle's `updated_at` that was
        delivered (`DeliveryJob.stamp`; none given: the Bundle as stored now)."""
        now = _now()
        failed = state in FAILING_DELIVERY
        values: dict[str, Any] = {
            "state": state,
            "last_status": status,
            "outcome": json.dumps(outcome) if outcome is not None else None,
            "next_attempt_at": next_attempt_at,
            "updated_at": now,
            "reason": reason if failed else None,
            "failing_since": (
                sa.func.coalesce(deliveries.c.failing_since, now) if failed else None
            ),
        }
        if delivered is not None:
            values["delivered"] = json.dumps(delivered, sort_keys=True)
        if state == DELIVERED:
            values["delivered_stamp"] = (
                stamp
                if stamp is not None
                else sa.select(bundles.c.updated_at)
                .where(bundles.c.id == bundle_id)
                .scalar_subquery()
            )
        with self._tx() as connection:
            key = (deliveries.c.bundle_id == bundle_id, deliveries.c.target == target)
            updated = connection.execute(
                deliveries.update().where(*key).values(attempts=deliveries.c.attempts + 1, **values)
            )
            if updated.rowcount == 0:
                values["failing_since"] = now if failed else None
                connection.execute(
                    deliveries.insert().values(
                        bundle_id=bundle_id, target=target, attempts=1, **values
                    )
                )
            if delivered_message is not None and _all_delivered(
                connection, delivered_message, required
            ):
                _transition_in(connection, delivered_message, DELIVERED)
            if stamp is None:
                return False
            current = connection.execute(
                sa.select(bundles.c.updated_at).where(bundles.c.id == bundle_id)
            ).scalar()
            return current is not None and current != stamp

    def queue_deliveries(
        self, bundle_ids: Sequence[str], targets: Sequence[str], *, fresh: bool = False
    ) -> None:
        """Record the deliveries of `bundle_ids` to `targets` as `queued` (their task was just
        sent), except one in flight (`sending`). A delivery that had ended (delivered,
        refused, dead) starts a new retry horizon; one retrying keeps its run's start unless
        `fresh` (an operator's resend)."""
        now = _now()
        ended = deliveries.c.state.in_((DELIVERED, REFUSED, DEAD))
        with self._tx() as connection:
            for bundle_id in bundle_ids:
                for target in targets:
                    key = (deliveries.c.bundle_id == bundle_id, deliveries.c.target == target)
                    since = (
                        None
                        if fresh
                        else sa.case((ended, sa.null()), else_=deliveries.c.failing_since)
                    )
                    updated = connection.execute(
                        deliveries.update()
                        .where(*key, deliveries.c.state != SENDING)
                        .values(
                            state=QUEUED, next_attempt_at=None, updated_at=now, failing_since=since
                        )
                    )
                    if updated.rowcount:
                        continue
                    if connection.execute(sa.select(deliveries.c.id).where(*key)).first():
                        continue  # in flight: its task sends the Bundle as stored now
                    connection.execute(
                        deliveries.insert().values(
                            bundle_id=bundle_id,
                            target=target,
                            state=QUEUED,
                            attempts=0,
                            updated_at=now,
                        )
                    )

    def release_stale_claims(self, target: str, older_than: timedelta) -> int:
        """Deliveries to `target` claimed (`sending`) longer than `older_than` ago (their worker
        was lost mid-push) go back to `queued`, so the next deliver task takes them (a task's own
        claim check uses the full lease); how many."""
        cutoff = _now() - older_than
        with self._tx() as connection:
            released = connection.execute(
                deliveries.update()
                .where(
                    deliveries.c.target == target,
                    deliveries.c.state == SENDING,
                    deliveries.c.updated_at <= cutoff,
                )
                .values(state=QUEUED)
            )
            return int(released.rowcount or 0)

    def bundles_of_message(self, message_id: int) -> list[str]:
        """The Bundles a message wrote last (what its deliveries send), oldest first."""
        with self._tx() as connection:
            return [
                str(b)
                for b in connection.execute(
                    sa.select(bundles.c.id)
                    .where(bundles.c.message_id == message_id)
                    .order_by(bundles.c.created_at, bundles.c.id)
                ).scalars()
            ]

    def delivery_states(self, message_id: int) -> list[dict[str, Any]]:
        """Each delivery of a message's Bundles (one per destination): bundle, target,
        state, attempts, last status, next attempt, failing since, reason, updated."""
        with self._tx() as connection:
            rows = connection.execute(
                sa.select(
                    deliveries.c.bundle_id,
                    deliveries.c.target,
                    deliveries.c.state,
                    deliveries.c.attempts,
                    deliveries.c.last_status,
                    deliveries.c.next_attempt_at,
                    deliveries.c.failing_since,
                    deliveries.c.reason,
                    deliveries.c.updated_at,
                )
                .join(bundles, bundles.c.id == deliveries.c.bundle_id)
                .where(bundles.c.message_id == message_id)
                .order_by(deliveries.c.bundle_id, deliveries.c.target)
            ).all()
        return [dict(r._mapping) for r in rows]

    def given_up_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries refused or dead (the Bundle as stored now), oldest first: message id,
        bundle, target, state, attempts, reason."""
        query = (
            sa.select(
                bundles.c.message_id,
                deliveries.c.bundle_id,
                deliveries.c.target,
                deliveries.c.state,
                deliveries.c.attempts,
                deliveries.c.reason,
            )
            .join(bundles, bundles.c.id == deliveries.c.bundle_id)
            .where(
                deliveries.c.state.in_((REFUSED, DEAD)),
                deliveries.c.updated_at >= bundles.c.updated_at,
            )
            .order_by(deliveries.c.updated_at, deliveries.c.id)
        )
        with self._tx() as connection:
            return [dict(r._mapping) for r in connection.execute(query).all()]

    def destination_health(self) -> dict[str, dict[str, int]]:
        """Deliveries per destination and state (every state present, 0 when none), and
        `failing`: those in a run of failures (retrying, or queued or sending again after a
        failure) or dead."""
        failing = sa.and_(deliveries.c.failing_since.is_not(None), deliveries.c.state != REFUSED)
        with self._tx() as connection:
            rows = connection.execute(
                sa.select(
                    deliveries.c.target,
                    deliveries.c.state,
                    sa.func.count(),
                    sa.func.sum(sa.case((failing, 1), else_=0)),
                ).group_by(deliveries.c.target, deliveries.c.state)
            ).all()
        health: dict[str, dict[str, int]] = {}
        for target, state, count, failed in rows:
            counts = health.setdefault(
                str(target), {**dict.fromkeys(DELIVERY_STATES, 0), "failing": 0}
            )
            counts[str(state)] = int(count)
            counts["failing"] += int(failed or 0)
        return health

    def delivery(self, bundle_id: str, target: str) -> dict[str, Any] | None:
        """The delivery record of a Bundle to a target."""
        with self._tx() as connection:
            row = connection.execute(
                sa.select(deliveries).where(
                    deliveries.c.bundle_id == bundle_id, deliveries.c.target == target
                )
            ).first()
        return dict(row._mapping) if row else None

    def audit(self, message_id: int | None, event: str, detail: str | None = None) -> None:
        """Append an audit event (detail must be free of PHI)."""
        with self._tx() as connection:
            connection.execute(
                audit_events.insert().values(
                    at=_now(), message_id=message_id, event=event, detail=detail
                )
            )

    def audit_trail(self, message_id: int) -> list[str]:
        """The events of one message, in order."""
        with self._tx() as connection:
            return list(
                connection.execute(
                    sa.select(audit_events.c.event)
                    .where(audit_events.c.message_id == message_id)
                    .order_by(audit_events.c.id)
                ).scalars()
            )


# resource types that several reports write (a report's own resources are serialised by its lock)
_SHARED_TYPES = frozenset({"Patient", "Device", "Practitioner"})


def _insert_extraction(connection: Connection, message_id: int, output: Output) -> None:
    """One extraction record (including not-mentioned values, which FHIR omits)."""
    connection.execute(
        extractions.insert().values(
            message_id=message_id,
            report_id=output.report_id,
            template_id=output.template_id,
            template_version=output.template_version,
            stage=output.stage,
            payload=json.dumps(output.record, sort_keys=True),
            seconds=float((output.record.get("timings") or {}).get("seconds") or 0.0),
            created_at=_now(),
        )
    )


def _served_status() -> Any:
    """Observations a search serves: not retired by a superseding result."""
    return sa.or_(resources.c.status.is_(None), resources.c.status.not_in(RETIRED_STATUSES))


def _with_last_updated(
    resource: dict[str, Any], updated: datetime, version: int | None = None
) -> dict[str, Any]:
    """`meta.lastUpdated` = when the store last wrote the resource (FHIR instant, UTC), and
    `meta.versionId` when the store keeps the resource's versions."""
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    stamp = updated.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resource["meta"] = {**(resource.get("meta") or {}), "lastUpdated": stamp}
    if version is not None:
        resource["meta"]["versionId"] = str(version)
    return resource


RETIRED_STATUSES = ("entered-in-error", "cancelled")
RETIRABLE = ("Observation", "ServiceRequest", "Flag", "Communication", "DetectedIssue")
"""What a superseding result retires when it no longer has it: the Observations and the
insights (issue 20: follow-ups, critical flags, communications, mismatches)."""

# the timeline's statement, built once (see `Store.latest_observations`)
_LATEST_OBSERVATION = (
    sa.select(resources.c.body)
    .where(
        resources.c.subject == sa.bindparam("subject"),
        resources.c.template_id == sa.bindparam("template_id"),
        resources.c.variable_id == sa.bindparam("variable_id"),
        resources.c.effective < sa.bindparam("before"),
        resources.c.resource_type == "Observation",
        _served_status(),
    )
    .order_by(resources.c.effective.desc(), resources.c.id.desc())
    .limit(1)
)

_STATUS_RANK = {"registered": 0, "partial": 0, "preliminary": 0, "final": 1}
_SUPERSEDING = ("corrected", "amended", "appended")


def _effective(report: dict[str, Any]) -> datetime | None:
    value = report.get("effectiveDateTime")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _rank(status: str) -> int:
    return 2 if status in _SUPERSEDING else _STATUS_RANK.get(status, 0)


def _stale_reason(incoming: dict[str, Any], stored: dict[str, Any]) -> str | None:
    """Why `incoming` must not replace the `stored` DiagnosticReport (None: it may).

    A preliminary never replaces a final or corrected report; a final supersedes a
    preliminary, and a corrected/amended one supersedes both. Between reports of the same rank
    the later observation time wins (a tie: the later arrival); a final after a correction
    wins only with a later observation time.
    """
    new_rank, old_rank = _rank(str(incoming.get("status"))), _rank(str(stored.get("status")))
    new_time, old_time = _effective(incoming), _effective(stored)
    later = new_time is not None and old_time is not None and new_time > old_time
    older = new_time is not None and old_time is not None and new_time < old_time
    if new_rank == 0 and old_rank > 0:
        return f"superseded: a {stored.get('status')} result is stored"
    if new_rank == old_rank and older:
        return "superseded: a later result is stored"
    if 0 < new_rank < old_rank and not later:
        return f"superseded: a {stored.get('status')} result is stored"
    return None


def _retired(resource: dict[str, Any]) -> dict[str, Any]:
    """A stored Observation or insight a superseding result no longer has: entered in error
    (a status of each of these resources in R4)."""
    if resource.get("status") in RETIRED_STATUSES:
        return resource
    return {**resource, "status": "entered-in-error"}


def _index_row(
    resource: dict[str, Any],
    bundle_id: str,
    now: datetime,
    report_of: dict[str, str],
    terms: IndexTerms,
) -> dict[str, Any]:
    """The search columns of one resource (code = first coding as `system|code`)."""
    codings = (resource.get("code") or {}).get("coding") or []
    code = f"{codings[0].get('system', '')}|{codings[0].get('code', '')}" if codings else None
    report_ref = report_of.get(f"{resource['resourceType']}/{resource['id']}")
    point = prior_from_resource(resource)  # None unless a radbridge Observation
    return {
        "resource_type": resource["resourceType"],
        "id": resource["id"],
        "bundle_id": bundle_id,
        "subject": (resource.get("subject") or {}).get("reference"),
        "code": code,
        "report_ref": report_ref,
        "status": resource.get("status"),
        "last_updated": now,
        "body": json.dumps(resource, ensure_ascii=False),
        "date_start": terms.date_start,
        "date_end": terms.date_end,
        "template_id": point.template_id if point else None,
        "variable_id": point.variable_id if point else None,
        "effective": point.effective.astimezone(UTC) if point else None,
    }


# -- resource versions (issue 13; the review itself is in adapter/reviews.py) ------------------
def archive_version(connection: Connection, current: Any) -> None:
    """Keep a resource's current version (a row with resource_type, id, version_id, last_updated,
    body) in `resource_versions` before it is rewritten (a re-extraction, a superseding report or
    a clinician's decision)."""
    connection.execute(
        resource_versions.insert().values(
            resource_type=current.resource_type,
            id=current.id,
            version_id=current.version_id,
            last_updated=current.last_updated,
            body=current.body,
        )
    )
