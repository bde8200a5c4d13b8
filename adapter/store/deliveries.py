"""The store's deliveries: one record per Bundle and destination (queued, a push in flight,
retries, the outcome and what the destination holds), and the message's `delivered` state
once every Bundle of it is delivered to every required destination.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.errors import StoreError
from adapter.store.connection import StoreBase
from adapter.store.connection import utc_now as _now
from adapter.store.messages import DEAD, DELIVERED, EXTRACTED, transition_all_in, transition_in
from adapter.tables import bundles, deliveries, messages

# delivery record states besides DELIVERED and DEAD (`adapter.destinations`): waiting for its
# task, a push in progress (its claim), a retry due, refused for good by the destination
QUEUED, SENDING, RETRY, REFUSED = "queued", "sending", "retry", "refused"
DELIVERY_STATES = (QUEUED, SENDING, RETRY, DELIVERED, REFUSED, DEAD)
FAILING_DELIVERY = (RETRY, REFUSED, DEAD)


def shown_delivery_state(state: str) -> str:
    """A delivery state as the console, the CLI and /metrics name it (`retry` -> retrying)."""
    return "retrying" if state == RETRY else state


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
        delivered_as_stored(deliveries, stored_at),
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


def _utc(moment: datetime) -> datetime:
    """An aware UTC time (SQLite returns the store's times naive, in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def delivered_as_stored(record: Any, stored_at: Any) -> Any:
    """SQL: the delivery record holds the Bundle as stored now: `delivered`, and the Bundle's
    `updated_at` it delivered (`delivered_stamp`; a record from before migration 0008: its own
    time) is no older than `stored_at`. A change saved while a push was in flight is newer
    than what that push delivered, so it is sent again, never taken as delivered."""
    return sa.and_(
        record.c.state == DELIVERED,
        sa.func.coalesce(record.c.delivered_stamp, record.c.updated_at) >= stored_at,
    )


def all_delivered(connection: Connection, message_id: int, targets: Sequence[str]) -> bool:
    """Whether every Bundle of the message is delivered, as stored now, to each of `targets`."""
    for target in targets:
        missing = connection.execute(
            _UNDELIVERED_OF_MESSAGE, {"message": message_id, "target": target}
        ).first()
        if missing is not None:
            return False
    return True


def _delivered_here() -> Any:
    """SQL: the current Bundle row is delivered, as stored, to `:target`."""
    record = deliveries.alias("record")
    return (
        sa.select(record.c.id)
        .where(
            record.c.bundle_id == bundles.c.id,
            record.c.target == sa.bindparam("target"),
            delivered_as_stored(record, bundles.c.updated_at),
        )
        .exists()
    )


def _undelivered_of_message() -> Any:
    return (
        sa.select(bundles.c.id)
        .where(bundles.c.message_id == sa.bindparam("message"), ~_delivered_here())
        .limit(1)
    )


_UNDELIVERED_OF_MESSAGE = _undelivered_of_message()
"""`all_delivered`'s query (a Bundle of the message not delivered as stored), built once."""


def _undelivered_messages() -> Any:
    return (
        sa.select(bundles.c.message_id)
        .where(bundles.c.message_id.in_(sa.bindparam("ids", expanding=True)), ~_delivered_here())
        .distinct()
    )


_UNDELIVERED_MESSAGES = _undelivered_messages()
"""Of the messages `ids`, those with a Bundle not delivered as stored to `target`."""
_EXTRACTED_OF = sa.select(messages.c.id).where(
    messages.c.id.in_(sa.bindparam("ids", expanding=True)), messages.c.state == EXTRACTED
)
_BUNDLE_STAMPS = sa.select(bundles.c.id, bundles.c.updated_at).where(
    bundles.c.id.in_(sa.bindparam("ids", expanding=True))
)


def queue_delivery(
    connection: Connection,
    bundle_id: str,
    target: str,
    now: datetime,
    *,
    fresh: bool = False,
    claim: timedelta | None = None,
) -> dict[str, str] | None:
    """`Store.queue_deliveries` of one Bundle and target in the caller's transaction. `claim`
    (a lease): claim the delivery at once (state `sending`, as `Store.delivery_job` does) for
    the caller's own push; returns what `target` holds of the Bundle (`DeliveryJob.delivered`)
    when claimed, None when not (a copy in flight holds it: its task sends the Bundle as
    stored now)."""
    key = {"bundle": bundle_id, "target_": target}
    state = SENDING if claim is not None else QUEUED
    updated = connection.execute(
        _queue_update(fresh, claim is not None),
        {**key, "new_state": state, "now": now, **({"stale": now - claim} if claim else {})},
    ).first()
    if updated is not None:
        held = json.loads(updated.delivered) if updated.delivered else {}
        return {str(k): str(v) for k, v in held.items()} if claim is not None else None
    if connection.execute(_DELIVERY_ID, key).first():
        return None  # in flight: its task sends the Bundle as stored now
    connection.execute(_DELIVERY_INSERT, delivery_row(bundle_id, target, state, now))
    return {} if claim is not None else None


def delivery_row(bundle_id: str, target: str, state: str, now: datetime) -> dict[str, Any]:
    """A delivery no attempt has made yet (`queue_delivery`'s insert)."""
    return {
        "bundle_id": bundle_id,
        "target": target,
        "state": state,
        "attempts": 0,
        "updated_at": now,
    }


_KEY = (
    deliveries.c.bundle_id == sa.bindparam("bundle"),
    deliveries.c.target == sa.bindparam("target_"),
)
_DELIVERY_ID = sa.select(deliveries.c.id).where(*_KEY)
_DELIVERY_INSERT = deliveries.insert()
_COUNTED_UPDATE = deliveries.update().where(*_KEY).values(attempts=deliveries.c.attempts + 1)
"""A delivery attempt counted; the columns it sets are those of its parameters."""
_BUNDLE_STAMP = sa.select(bundles.c.updated_at).where(bundles.c.id == sa.bindparam("bundle"))


@cache
def _queue_update(fresh: bool, claim: bool) -> Any:
    """`queue_delivery`'s UPDATE ... RETURNING, built once per kind (its values bound)."""
    ended = deliveries.c.state.in_((DELIVERED, REFUSED, DEAD))
    since = None if fresh else sa.case((ended, sa.null()), else_=deliveries.c.failing_since)
    free = deliveries.c.state != SENDING
    if claim:
        free = sa.or_(free, deliveries.c.updated_at <= sa.bindparam("stale"))
    return (
        deliveries.update()
        .where(*_KEY, free)
        .values(
            state=sa.bindparam("new_state"),
            next_attempt_at=None,
            updated_at=sa.bindparam("now"),
            failing_since=since,
        )
        .returning(deliveries.c.delivered)
    )


class DeliveryStore(StoreBase):
    """Deliveries of stored Bundles to destinations."""

    def message_of_bundle(self, bundle_id: str) -> int | None:
        """The message a Bundle was made from (None for offline Bundles)."""
        with self.transaction() as connection:
            value = connection.execute(
                sa.select(bundles.c.message_id).where(bundles.c.id == bundle_id)
            ).scalar()
        return int(value) if value is not None else None

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
                    delivered_as_stored(record, bundles.c.updated_at),
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
        with self.transaction() as connection:
            return [str(b) for b in connection.execute(query).scalars()]

    def delivered_already(self, bundle_id: str, target: str) -> bool:
        """Whether the Bundle as stored now was already delivered to `target` (a delivery record
        `delivered` no older than the Bundle): a second copy of its deliver task (reconcile
        re-enqueues what may have been lost with Redis) then pushes nothing."""
        with self.transaction() as connection:
            return (
                connection.execute(
                    sa.select(deliveries.c.id)
                    .join(bundles, bundles.c.id == deliveries.c.bundle_id)
                    .where(
                        deliveries.c.bundle_id == bundle_id,
                        deliveries.c.target == target,
                        delivered_as_stored(deliveries, bundles.c.updated_at),
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
                delivered_as_stored(record, bundles.c.updated_at),
            )
            .distinct()
        )
        repaired = []
        with self.transaction() as connection:
            for message_id in [int(m) for m in connection.execute(query).scalars()]:
                if all_delivered(connection, message_id, targets) and transition_in(
                    connection, message_id, DELIVERED
                ):
                    repaired.append(message_id)
        return repaired

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
                delivered_as_stored(record, bundles.c.updated_at).label("done"),
                bundles.c.updated_at.label("stamp"),
                record.c.delivered,
            )
            .select_from(bundles)
            .outerjoin(messages, messages.c.id == bundles.c.message_id)
            .outerjoin(record, sa.true())
            .where(bundles.c.id == bundle_id)
        )
        with self.transaction() as connection:
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
        with self.transaction() as connection:
            return _record_in(
                connection,
                bundle_id,
                target,
                state=state,
                status=status,
                outcome=outcome,
                next_attempt_at=next_attempt_at,
                delivered=delivered,
                delivered_message=delivered_message,
                required=required,
                reason=reason,
                stamp=stamp,
            )

    def record_deliveries(self, pushes: Sequence[DeliveryRecord]) -> list[bool]:
        """`record_delivery_attempt` of several pushes that went through, in ONE transaction
        (an extraction task of a batch): for each, whether its Bundle was saved again after
        its stamp (send it again)."""
        if all(push.stamp is not None for push in pushes):
            try:  # one statement per kind of write for all of them
                with self.transaction() as connection:
                    return _record_all(connection, pushes)
            except StoreError:  # a delivery row missing (or the database): each on its own
                pass
        with self.transaction() as connection:
            return [
                _record_in(
                    connection,
                    push.bundle_id,
                    push.target,
                    state=DELIVERED,
                    status=push.status,
                    delivered=push.delivered,
                    delivered_message=push.message_id,
                    required=push.required,
                    stamp=push.stamp,
                )
                for push in pushes
            ]

    def queue_deliveries(
        self, bundle_ids: Sequence[str], targets: Sequence[str], *, fresh: bool = False
    ) -> None:
        """Record the deliveries of `bundle_ids` to `targets` as `queued` (their task was just
        sent), except one in flight (`sending`). A delivery that had ended (delivered,
        refused, dead) starts a new retry horizon; one retrying keeps its run's start unless
        `fresh` (an operator's resend)."""
        now = _now()
        with self.transaction() as connection:
            for bundle_id in bundle_ids:
                for target in targets:
                    queue_delivery(connection, bundle_id, target, now, fresh=fresh)

    def release_stale_claims(self, target: str, older_than: timedelta) -> int:
        """Deliveries to `target` claimed (`sending`) longer than `older_than` ago (their worker
        was lost mid-push) go back to `queued`, so the next deliver task takes them (a task's own
        claim check uses the full lease); how many."""
        cutoff = _now() - older_than
        with self.transaction() as connection:
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
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
        with self.transaction() as connection:
            return [dict(r._mapping) for r in connection.execute(query).all()]

    def destination_health(self) -> dict[str, dict[str, int]]:
        """Deliveries per destination and state (every state present, 0 when none), and
        `failing`: those in a run of failures (retrying, or queued or sending again after a
        failure) or dead."""
        failing = sa.and_(deliveries.c.failing_since.is_not(None), deliveries.c.state != REFUSED)
        with self.transaction() as connection:
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
        with self.transaction() as connection:
            row = connection.execute(
                sa.select(deliveries).where(
                    deliveries.c.bundle_id == bundle_id, deliveries.c.target == target
                )
            ).first()
        return dict(row._mapping) if row else None


@dataclass(frozen=True)
class DeliveryRecord:
    """A push that went through, to record (`DeliveryStore.record_deliveries`): the Bundle,
    its destination, the HTTP status, what the destination now holds, the message that goes
    `delivered` with its last Bundle (with the destinations `required`), and the Bundle's
    stamp that was pushed."""

    bundle_id: str
    target: str
    status: int | None
    delivered: dict[str, str]
    message_id: int | None
    required: Sequence[str]
    stamp: datetime | None


def _record_all(connection: Connection, pushes: Sequence[DeliveryRecord]) -> list[bool]:
    """`record_deliveries` of pushes that each have their stamp, with one statement per kind
    of write: each delivery `delivered` (its attempt counted), the messages whose every Bundle
    is now delivered to each of their `required` destinations `delivered` (audited); for each
    push, whether its Bundle was saved again after its stamp. StoreError when a delivery
    row is missing (the caller rolls back)."""
    now = _now()
    updates = [
        {
            **_attempt_values(DELIVERED, now, status=push.status, delivered=push.delivered),
            "delivered_stamp": push.stamp,
            "bundle": push.bundle_id,
            "target_": push.target,
        }
        for push in pushes
    ]
    if connection.execute(_COUNTED_UPDATE, updates).rowcount != len(updates):
        raise StoreError("a delivery of the task is not as it was queued")
    done: set[int] = set()
    by_required: dict[tuple[str, ...], set[int]] = {}
    for push in pushes:
        if push.message_id is not None:
            by_required.setdefault(tuple(push.required), set()).add(push.message_id)
    for required, message_ids in by_required.items():
        waiting: set[int] = set()
        for target in required:
            waiting.update(
                int(m)
                for m in connection.execute(
                    _UNDELIVERED_MESSAGES, {"ids": sorted(message_ids), "target": target}
                ).scalars()
            )
        done.update(message_ids - waiting)
    if done:  # those still `extracted` (a Bundle pushed again after a decision: already moved)
        done = {int(m) for m in connection.execute(_EXTRACTED_OF, {"ids": sorted(done)}).scalars()}
    transition_all_in(connection, DELIVERED, [(m, None) for m in sorted(done)])
    stamps = {
        str(bundle_id): stored
        for bundle_id, stored in connection.execute(
            _BUNDLE_STAMPS, {"ids": sorted({push.bundle_id for push in pushes})}
        )
    }
    return [
        push.bundle_id in stamps
        and push.stamp is not None
        and _utc(stamps[push.bundle_id]) != _utc(push.stamp)
        for push in pushes
    ]


def _attempt_values(
    state: str,
    now: datetime,
    *,
    status: int | None = None,
    outcome: dict[str, Any] | None = None,
    next_attempt_at: datetime | None = None,
    reason: str | None = None,
    delivered: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A delivery row's columns after an attempt that ended in `state` (its `attempts` count
    and `delivered_stamp` are the caller's): one rule for `_record_in` and `_record_all`. A
    failing state keeps the time the failures began (`failing_since`) and its reason."""
    failed = state in FAILING_DELIVERY
    values: dict[str, Any] = {
        "state": state,
        "last_status": status,
        "outcome": json.dumps(outcome) if outcome is not None else None,
        "next_attempt_at": next_attempt_at,
        "updated_at": now,
        "reason": reason if failed else None,
        "failing_since": (sa.func.coalesce(deliveries.c.failing_since, now) if failed else None),
    }
    if delivered is not None:
        values["delivered"] = json.dumps(delivered, sort_keys=True)
    return values


def _record_in(
    connection: Connection,
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
    """`DeliveryStore.record_delivery_attempt` inside the caller's transaction."""
    now = _now()
    failed = state in FAILING_DELIVERY
    values = _attempt_values(
        state,
        now,
        status=status,
        outcome=outcome,
        next_attempt_at=next_attempt_at,
        reason=reason,
        delivered=delivered,
    )
    if state == DELIVERED:
        values["delivered_stamp"] = (
            stamp
            if stamp is not None
            else sa.select(bundles.c.updated_at).where(bundles.c.id == bundle_id).scalar_subquery()
        )
    if any(isinstance(v, sa.ColumnElement) for v in values.values()):
        key = (deliveries.c.bundle_id == bundle_id, deliveries.c.target == target)
        updated = connection.execute(
            deliveries.update().where(*key).values(attempts=deliveries.c.attempts + 1, **values)
        )
    else:  # the hot path (a delivery with its stamp): one statement built once
        updated = connection.execute(
            _COUNTED_UPDATE, {**values, "bundle": bundle_id, "target_": target}
        )
    if updated.rowcount == 0:
        values["failing_since"] = now if failed else None
        connection.execute(
            deliveries.insert().values(bundle_id=bundle_id, target=target, attempts=1, **values)
        )
    if delivered_message is not None and all_delivered(connection, delivered_message, required):
        transition_in(connection, delivered_message, DELIVERED)
    if stamp is None:
        return False
    current = connection.execute(_BUNDLE_STAMP, {"bundle": bundle_id}).scalar()
    return current is not None and _utc(current) != _utc(stamp)
