"""The store's messages: ingest (duplicates, conflicts, the ACK sent), the state machine
with its audit events, dead letters and the reads of a message.

Message states: accepted -> processing -> extracted -> delivered, or failed (retried) / dead.
Duplicate key: sending application + facility + MSH-10 + SHA-256; a resend returns the stored
row and the ACK sent the first time. The same MSH-10 with different content is stored as a new
row and flagged `conflict` — never dropped. Nothing here logs message content.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.errors import StoreError
from adapter.store.connection import StoreBase
from adapter.store.connection import utc_now as _now
from adapter.tables import audit_events, messages
from mappings.media_types import HL7_V2

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
# SQLite: the body as a trailing zeroblob(n), then written through incremental blob I/O, so
# SQLite never builds a record holding a copy of it (issue 25 item 4; `raw` is the last column)
_INSERT_MESSAGE_ZEROBLOB = messages.insert().values(
    raw=sa.func.zeroblob(sa.bindparam("raw_size", type_=sa.Integer))
)

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


@dataclass(frozen=True)
class Incoming:
    """One message to accept (what the listener peeked before the ACK)."""

    raw: bytes
    channel: str
    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    content_type: str = HL7_V2


@dataclass(frozen=True)
class AcceptResult:
    """The outcome of storing one message."""

    message_id: int
    duplicate: bool
    conflict: bool
    ack: bytes | None


@dataclass(frozen=True)
class Claim:
    """What `Store.claim_message` got: CLAIMED with the message's raw bytes and content type,
    or TAKEN / DEAD (nothing to process); `again`: the message was `processing` under this same
    task (Celery delivered the task again after its worker was lost)."""

    outcome: str
    raw: bytes = b""
    content_type: str = ""
    again: bool = False


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


def transition_in(
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
    allowed_from = _moved_from(target)
    values: dict[str, Any] = {"state": target, "updated_at": _now()}
    if _sets_reason(target, reason):
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
    plain = {k: v for k, v in values.items() if not isinstance(v, sa.ColumnElement)}
    if len(plain) == len(values):  # the hot path: one statement built once, values bound
        result = connection.execute(
            _TRANSITION, {**plain, "message": message_id, "allowed": allowed_from}
        )
    else:
        result = connection.execute(
            messages.update()
            .where(messages.c.id == message_id, messages.c.state.in_(allowed_from))
            .values(**values)
        )
    if result.rowcount == 1:
        connection.execute(
            AUDIT_INSERT,
            {"at": _now(), "message_id": message_id, "event": target, "detail": reason},
        )
    return result.rowcount == 1


def _sets_reason(target: str, reason: str | None) -> bool:
    """Whether a move to `target` writes the message's reason (a move to a fresh state clears
    it; another keeps the last one unless it has its own)."""
    return reason is not None or target in (ACCEPTED, PROCESSING, DELIVERED)


def transition_all_in(
    connection: Connection, target: str, moves: Sequence[tuple[int, str | None]]
) -> None:
    """`transition_in` of several messages (id, reason) to `target` (EXTRACTED or DELIVERED:
    no retry time, no attempt counted) with one UPDATE per shape and one audit INSERT;
    StoreError, the caller's transaction then writing nothing, unless every one moved."""
    if target not in (EXTRACTED, DELIVERED):
        raise ValueError(f"transition_all_in does not move messages to {target}")
    now = _now()
    shapes: dict[bool, list[dict[str, Any]]] = {}
    for message_id, reason in moves:
        sets = _sets_reason(target, reason)
        row = {"message": message_id, "now": now, **({"why": reason} if sets else {})}
        shapes.setdefault(sets, []).append(row)
    for sets, rows in shapes.items():
        statement = _moves(target, sets)
        if connection.dialect.supports_sane_multi_rowcount:
            moved = int(connection.execute(statement, rows).rowcount or 0)
        else:
            moved = sum(int(connection.execute(statement, row).rowcount or 0) for row in rows)
        if moved != len(rows):
            was = " or ".join(_moved_from(target))
            raise StoreError(f"a message is no longer {was}: nothing was saved")
    if moves:
        audits = [{"at": now, "message_id": m, "event": target, "detail": r} for m, r in moves]
        connection.execute(AUDIT_INSERT, audits)


def _moved_from(target: str) -> list[str]:
    """The states a message may move to `target` from."""
    return [state for state, targets in _TRANSITIONS.items() if target in targets]


@cache
def _moves(target: str, sets_reason: bool) -> Any:
    """`transition_all_in`'s UPDATE to `target`, built once per shape (its values bound)."""
    allowed = _moved_from(target)
    values: dict[str, Any] = {
        "state": target,
        "updated_at": sa.bindparam("now"),
        "claimed_by": None,
        "next_attempt_at": None,
    }
    if sets_reason:
        values["reason"] = sa.bindparam("why")
    return (
        messages.update()
        .where(  # an OR, not an IN list: an executemany takes no expanding parameter
            messages.c.id == sa.bindparam("message"),
            sa.or_(*(messages.c.state == state for state in allowed)),
        )
        .values(**values)
    )


_TRANSITION = messages.update().where(
    messages.c.id == sa.bindparam("message"),
    messages.c.state.in_(sa.bindparam("allowed", expanding=True)),
)
"""`transition_in`'s UPDATE, built once: the columns it sets are those of its parameters."""
AUDIT_INSERT = audit_events.insert()
"""An audit row, built once (executed with the row's values)."""
_CLAIM_COLUMNS = (
    messages.c.state,
    messages.c.attempts,
    messages.c.claimed_by,
    messages.c.reason,
    messages.c.raw,
    messages.c.content_type,
)
"""What a claim reads of a message row."""
_CLAIM_READ = sa.select(*_CLAIM_COLUMNS).where(messages.c.id == sa.bindparam("message"))
_CLAIMS_READ = sa.select(messages.c.id, *_CLAIM_COLUMNS).where(
    messages.c.id.in_(sa.bindparam("ids", expanding=True))
)
_TOUCH_MESSAGE = messages.update().where(messages.c.id == -1).values(id=messages.c.id)
_GUARDED_UPDATE = messages.update().where(
    messages.c.id == sa.bindparam("message"),
    messages.c.state == sa.bindparam("seen_state"),
    messages.c.attempts == sa.bindparam("seen_attempts"),
)
"""`claim_message`'s write, only when the message is as read; sets its parameters' columns."""
_CLAIM = _GUARDED_UPDATE.values(attempts=messages.c.attempts + 1)


def _write_blob(connection: Connection, message_id: int, raw: bytes) -> None:
    """Fill the SQLite row's zeroblob `raw` with the body, in this transaction, without a copy."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise StoreError("the SQLite store has no sqlite3 connection for the body")
    with driver.blobopen("messages", "raw", message_id) as blob:
        blob.write(raw)


class MessageStore(StoreBase):
    """Messages: ingest, the state machine, dead letters, reads."""

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
        values: dict[str, Any] = {
            "received_at": now,
            "channel": item.channel,
            "sending_application": item.sending_application,
            "sending_facility": item.sending_facility,
            "control_id": item.control_id,
            "sha256": digest,
            "size": len(item.raw),
            "content_type": item.content_type,
            "state": ACCEPTED,
            "attempts": 0,
            "conflict": conflict,
            "resends": 0,
            "ack": ack,
            "updated_at": now,
        }
        if self.is_sqlite:
            statement, values["raw_size"] = _INSERT_MESSAGE_ZEROBLOB, len(item.raw)
        else:
            statement, values["raw"] = _INSERT_MESSAGE, item.raw
        inserted = connection.execute(statement, values).inserted_primary_key
        if inserted is None:
            raise StoreError("the database returned no id for the stored message")
        message_id = inserted[0]
        if self.is_sqlite and item.raw:
            _write_blob(connection, int(message_id), item.raw)
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
                with self.transaction() as connection:
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
            return transition_in(
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
        return self.claim_messages([message_id], token=token, max_attempts=max_attempts)[message_id]

    def claim_messages(
        self,
        message_ids: Sequence[int],
        *,
        token: str | None = None,
        max_attempts: int | None = None,
    ) -> dict[int, Claim]:
        """`claim_message` for several messages in ONE transaction (an extraction task of a
        batch): each message's own outcome, by id."""
        claims: dict[int, Claim] = {}
        try:  # one read and one write for all of them
            with self.transaction() as connection:
                claims = _claim_all(connection, message_ids, token, max_attempts, self.is_sqlite)
        except StoreError:  # one of them changed under us: each on its own
            with self.transaction() as connection:
                for message_id in message_ids:
                    claims[message_id] = _claim_in(connection, message_id, token, max_attempts)
        for message_id, claim in claims.items():
            if claim.outcome == DEAD:
                log.warning("message %d dead after the attempt cap", message_id)
        return claims

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
        with self.transaction() as connection:
            ok = transition_in(connection, message_id, DEAD, reason=reason)
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
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

    def _message_value(self, message_id: int, column: sa.Column[Any]) -> Any:
        """One column of a stored message (StoreError if unknown)."""
        with self.transaction() as connection:
            value = connection.execute(
                sa.select(column).where(messages.c.id == message_id)
            ).scalar()
        if value is None:
            raise StoreError(f"message {message_id} not found")
        return value

    def content_type(self, message_id: int) -> str:
        """The stored message's content type."""
        return str(self._message_value(message_id, messages.c.content_type))

    def mark_delivered_if_extracted(self, message_id: int) -> bool:
        """extracted -> delivered; False when already delivered (several Bundles per message)."""
        return self._transition(message_id, DELIVERED)

    def raw(self, message_id: int) -> bytes:
        """The message's raw bytes (StoreError if unknown)."""
        return bytes(self._message_value(message_id, messages.c.raw))

    def pending(self, older_than: timedelta = timedelta(0)) -> list[int]:
        """Messages the store says are not done: accepted, failed with its retry due (never
        during its backoff), or processing (these `older_than` ago)."""
        now = _now()
        cutoff = now - older_than
        due = sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now)
        with self.transaction() as connection:
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

    def dead_letters(self) -> list[MessageRow]:
        """Messages given up on."""
        with self.transaction() as connection:
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
            rows = connection.execute(
                sa.select(messages.c.state, sa.func.count()).group_by(messages.c.state)
            ).all()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: int(n) for state, n in rows})
        return counts


@dataclass(frozen=True)
class _ClaimStep:
    """What claiming a message read as it is: the claim it gets, its guarded write (None: no
    write, the claim is TAKEN) and the write's audit row."""

    claim: Claim
    write: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None


def _claim_step(
    row: Any, message_id: int, token: str | None, max_attempts: int | None
) -> _ClaimStep:
    """`_claim_in`'s decision on a message row as read (None: no such message)."""
    if row is None:
        return _ClaimStep(Claim(TAKEN))
    own = token is not None and row.state == PROCESSING and row.claimed_by == token
    if row.state not in (ACCEPTED, FAILED) and not own:
        return _ClaimStep(Claim(TAKEN))
    guard = {"message": message_id, "seen_state": row.state, "seen_attempts": row.attempts}
    now = _now()
    if max_attempts is not None and row.attempts >= max_attempts:
        last = row.reason if row.state == FAILED and row.reason else "worker lost"
        reason: str | None = f"{last} after {row.attempts} attempts"
        values: dict[str, Any] = {"state": DEAD, "reason": reason, "claimed_by": None}
        claim, event = Claim(DEAD), DEAD
    else:
        values = {
            "state": PROCESSING,
            "reason": None,
            "claimed_by": token,
            "next_attempt_at": None,
        }
        reason, event = None, PROCESSING
        claim = Claim(CLAIMED, bytes(row.raw), str(row.content_type), again=own)
    audit = {"at": now, "message_id": message_id, "event": event, "detail": reason}
    return _ClaimStep(claim, {**guard, "updated_at": now, **values}, audit)


def _claim_in(
    connection: Connection, message_id: int, token: str | None, max_attempts: int | None
) -> Claim:
    """Claim one message inside the caller's transaction (`MessageStore.claim_message`)."""
    row = connection.execute(_CLAIM_READ, {"message": message_id}).first()
    step = _claim_step(row, message_id, token, max_attempts)
    if step.write is None:
        return step.claim
    statement = _CLAIM if step.claim.outcome == CLAIMED else _GUARDED_UPDATE
    if connection.execute(statement, step.write).rowcount != 1:
        return Claim(TAKEN)  # another worker changed it between the read and the write
    connection.execute(AUDIT_INSERT, step.audit)
    return step.claim


def _claim_all(
    connection: Connection,
    message_ids: Sequence[int],
    token: str | None,
    max_attempts: int | None,
    is_sqlite: bool,
) -> dict[int, Claim]:
    """`_claim_in` of several messages with one read and one write per kind of claim (the
    messages locked first: SQLite's write lock, PostgreSQL's rows); StoreError (the caller's
    transaction writes nothing) when a message changed between the read and the write."""
    if is_sqlite:  # a write first: SQLite takes its (database-wide) write lock now
        connection.execute(_TOUCH_MESSAGE)
    read = _CLAIMS_READ if is_sqlite else _CLAIMS_READ.with_for_update()
    rows = {int(r.id): r for r in connection.execute(read, {"ids": list(message_ids)})}
    steps = {m: _claim_step(rows.get(m), m, token, max_attempts) for m in message_ids}
    for outcome, statement in ((CLAIMED, _CLAIM), (DEAD, _GUARDED_UPDATE)):
        writes = [s.write for s in steps.values() if s.write and s.claim.outcome == outcome]
        if writes and connection.execute(statement, writes).rowcount != len(writes):
            raise StoreError("a message changed while the batch claimed it")
    audits = [s.audit for s in steps.values() if s.audit is not None]
    if audits:
        connection.execute(AUDIT_INSERT, audits)
    return {m: step.claim for m, step in steps.items()}
