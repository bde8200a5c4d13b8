"""Store operations of clinician review and the operator console (issues 13 and 23).

Reads for the worklist (critical-result Flags and mismatch DetectedIssues first), the review
page (earlier versions, for an undo) and the console (filters by state, sender as shown, MSH-10,
accession and MSH-10 conflicts), and `save_review` (a decision or an undo): one transaction
that checks the version the reviewer saw (optimistic concurrency: a stale version raises
`ReviewConflict` and changes nothing), keeps the old version in `resource_versions`, writes the
next version and its Provenance, stores the delivery Bundle and the audit event. Nothing here
logs report text, names or identifiers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from adapter.search_index import write_tokens
from adapter.store import Store
from adapter.store.deliveries import shown_delivery_state
from adapter.store.results import archive_version
from adapter.tables import (
    audit_events,
    bundles,
    deliveries,
    extractions,
    messages,
    resource_versions,
    resources,
    search_tokens,
)
from mappings.review import (
    INSIGHT_REVIEWS,
    ReviewConflict,
    ReviewRefused,
    ReviewResult,
    bundle_with_review,
    evidence,
    review_provenance_id,
    template_of,
)
from mappings.search_params import index_terms

log = logging.getLogger("radbridge.reviews")
LOW_CONFIDENCE = 0.7  # a value below this sorts its report first in the worklist


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredObservation:
    """An Observation of a report with its current version."""

    body: dict[str, Any]
    version: int
    bundle_id: str


def report_observations(store: Store, report_id: str) -> list[StoredObservation]:
    """Every Observation of a DiagnosticReport (retired ones included), in result order."""
    with store.transaction() as connection:
        rows = connection.execute(
            sa.select(resources.c.body, resources.c.version_id, resources.c.bundle_id)
            .where(
                resources.c.resource_type == "Observation",
                resources.c.report_ref == f"DiagnosticReport/{report_id}",
            )
            .order_by(resources.c.id)
        ).all()
    found = [StoredObservation(json.loads(b), int(v), str(bid)) for b, v, bid in rows]
    report = store.get_resource("DiagnosticReport", report_id)
    order = {
        str(ref.get("reference", "")).removeprefix("Observation/"): i
        for i, ref in enumerate((report or {}).get("result", []))
    }
    return sorted(found, key=lambda o: order.get(str(o.body["id"]), len(order)))


def message_of_report(store: Store, report_id: str) -> int | None:
    """The message whose Bundle carries the DiagnosticReport (None for offline Bundles)."""
    with store.transaction() as connection:
        value = connection.execute(
            sa.select(bundles.c.message_id)
            .join(resources, resources.c.bundle_id == bundles.c.id)
            .where(resources.c.resource_type == "DiagnosticReport", resources.c.id == report_id)
        ).scalar()
    return int(value) if value is not None else None


def earlier_versions(
    store: Store, wanted: list[tuple[str, int]], resource_type: str = "Observation"
) -> dict[str, dict[str, Any]]:
    """Bodies of earlier versions (`(id, version)` pairs) of one resource type, by id."""
    if not wanted:
        return {}
    with store.transaction() as connection:
        return _earlier_versions(connection, wanted, resource_type)


def _earlier_versions(
    connection: Any, wanted: list[tuple[str, int]], resource_type: str
) -> dict[str, dict[str, Any]]:
    if not wanted:
        return {}
    pairs = [
        sa.and_(resource_versions.c.id == rid, resource_versions.c.version_id == version)
        for rid, version in wanted
    ]
    rows = connection.execute(
        sa.select(resource_versions.c.id, resource_versions.c.body).where(
            resource_versions.c.resource_type == resource_type, sa.or_(*pairs)
        )
    ).all()
    return {str(rid): json.loads(body) for rid, body in rows}


def undoable(store: Store, observations: list[StoredObservation]) -> set[str]:
    """The ids of decided Observations (final / entered-in-error) whose version before is the
    preliminary value the decision was made on: an undo brings that value back."""
    decided = [
        (str(o.body["id"]), o.version - 1)
        for o in observations
        if o.body.get("status") in ("final", "entered-in-error") and o.version > 1
    ]
    before = earlier_versions(store, decided)
    return {oid for oid, body in before.items() if body.get("status") == "preliminary"}


@dataclass(frozen=True)
class StoredInsight:
    """A report-level insight (a resource type of `INSIGHT_REVIEWS`) of a report, its current
    version, and whether that version is a reviewer's decision."""

    body: dict[str, Any]
    version: int
    bundle_id: str
    decided: bool
    previous: dict[str, Any] | None = None
    """The version before a decision when it awaited review (an undo brings it back)."""

    @property
    def undoable(self) -> bool:
        """Whether the current version is a decision that an undo can take back."""
        if not self.decided or self.previous is None:
            return False
        rule = INSIGHT_REVIEWS[str(self.body["resourceType"])]
        return self.previous.get("status") in rule.awaiting

    @property
    def awaiting(self) -> bool:
        """Whether a reviewer may still accept or reject it."""
        rule = INSIGHT_REVIEWS[str(self.body["resourceType"])]
        return not self.decided and self.body.get("status") in rule.awaiting


def _decided(connection: Any, versions: list[tuple[str, int]]) -> set[str]:
    """The ids whose version is a reviewer's decision (its Provenance is stored)."""
    wanted = {review_provenance_id(rid, version): rid for rid, version in versions}
    if not wanted:
        return set()
    found = connection.execute(
        sa.select(resources.c.id).where(
            resources.c.resource_type == "Provenance", resources.c.id.in_(list(wanted))
        )
    ).scalars()
    return {wanted[str(pid)] for pid in found}


def report_insights(store: Store, report_id: str) -> list[StoredInsight]:
    """The insights the report's Bundle holds (retired ones included), by type in the order of
    `INSIGHT_REVIEWS`, then as stored."""
    report = resources.alias("report")
    with store.transaction() as connection:
        rows = connection.execute(
            sa.select(resources.c.body, resources.c.version_id, resources.c.bundle_id)
            .select_from(resources)
            .join(report, report.c.bundle_id == resources.c.bundle_id)
            .where(
                report.c.resource_type == "DiagnosticReport",
                report.c.id == report_id,
                resources.c.resource_type.in_(list(INSIGHT_REVIEWS)),
            )
            .order_by(resources.c.id)
        ).all()
        bodies = [(json.loads(b), int(v), str(bid)) for b, v, bid in rows]
        decided = _decided(connection, [(str(b["id"]), v) for b, v, _ in bodies])
        before: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in INSIGHT_REVIEWS:  # the versions decisions were made on (an undo)
            wanted = [
                (str(b["id"]), v - 1)
                for b, v, _ in bodies
                if b["resourceType"] == kind and str(b["id"]) in decided and v > 1
            ]
            found_before = _earlier_versions(connection, wanted, kind)
            before.update({(kind, rid): body for rid, body in found_before.items()})
    order = list(INSIGHT_REVIEWS)
    found = [
        StoredInsight(
            b, v, bid, str(b["id"]) in decided, before.get((str(b["resourceType"]), str(b["id"])))
        )
        for b, v, bid in bodies
    ]
    return sorted(found, key=lambda i: order.index(str(i.body["resourceType"])))


# report-level insights (issue 20) that put a report first: a critical result's Flag, a mismatch's
# DetectedIssue (retired ones do not count)
ATTENTION_TYPES = {"Flag": "critical", "DetectedIssue": "mismatch"}


@dataclass(frozen=True)
class WorkItem:
    """One report awaiting review in the worklist (no report text)."""

    report_id: str
    templates: tuple[str, ...]
    waiting: int
    flagged: int
    lowest_confidence: float | None
    since: datetime
    critical: int = 0
    mismatches: int = 0
    insights_waiting: int = 0  # insights (follow-ups, critical results, ...) awaiting a decision

    @property
    def needs_attention(self) -> bool:
        """Flagged or low-confidence values, critical results or mismatches: sorted first."""
        low = self.lowest_confidence is not None and self.lowest_confidence < LOW_CONFIDENCE
        return self.flagged > 0 or low or self.critical > 0 or self.mismatches > 0


def _insights(store: Store, report_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per report: how many active critical-result Flags and mismatch DetectedIssues its
    Bundle holds."""
    if not report_ids:
        return {}
    report = resources.alias("report")
    with store.transaction() as connection:
        rows = connection.execute(
            sa.select(report.c.id, resources.c.resource_type, sa.func.count())
            .select_from(resources)
            .join(report, report.c.bundle_id == resources.c.bundle_id)
            .where(
                report.c.resource_type == "DiagnosticReport",
                report.c.id.in_(report_ids),
                resources.c.resource_type.in_(list(ATTENTION_TYPES)),
                sa.or_(
                    resources.c.status.is_(None),
                    resources.c.status.not_in(("entered-in-error", "inactive")),
                ),
            )
            .group_by(report.c.id, resources.c.resource_type)
        ).all()
    found: dict[str, dict[str, int]] = {}
    for report_id, kind, count in rows:
        found.setdefault(str(report_id), {})[ATTENTION_TYPES[str(kind)]] = int(count)
    return found


def _awaiting_insights(
    store: Store, since: datetime | None, until: datetime | None
) -> dict[str, tuple[int, datetime]]:
    """Per report: how many insights await a decision, and since when (stored in the window)."""
    report = resources.alias("report")
    awaiting = sorted({status for rule in INSIGHT_REVIEWS.values() for status in rule.awaiting})
    query = (
        sa.select(
            report.c.id,
            resources.c.resource_type,
            resources.c.id.label("insight"),
            resources.c.status,
            resources.c.version_id,
            resources.c.last_updated,
        )
        .select_from(resources)
        .join(report, report.c.bundle_id == resources.c.bundle_id)
        .where(
            report.c.resource_type == "DiagnosticReport",
            resources.c.resource_type.in_(list(INSIGHT_REVIEWS)),
            resources.c.status.in_(awaiting),
        )
    )
    if since is not None:
        query = query.where(resources.c.last_updated >= since)
    if until is not None:
        query = query.where(resources.c.last_updated < until)
    with store.transaction() as connection:
        rows = [
            r
            for r in connection.execute(query).all()
            if r.status in INSIGHT_REVIEWS[str(r.resource_type)].awaiting
        ]
        decided = _decided(connection, [(str(r.insight), int(r.version_id)) for r in rows])
    found: dict[str, tuple[int, datetime]] = {}
    for row in rows:
        if str(row.insight) in decided:
            continue
        updated = (
            row.last_updated if row.last_updated.tzinfo else row.last_updated.replace(tzinfo=UTC)
        )
        count, oldest = found.get(str(row.id), (0, updated))
        found[str(row.id)] = (count + 1, min(oldest, updated))
    return found


def worklist(
    store: Store,
    *,
    template: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
) -> list[WorkItem]:
    """Reports with preliminary Observations or insights awaiting a decision: critical results,
    mismatches, flagged or low-confidence values first, then oldest first; filtered by template
    id (a report with insights only has none) and by when the values were stored."""
    query = sa.select(resources.c.report_ref, resources.c.body, resources.c.last_updated).where(
        resources.c.resource_type == "Observation",
        resources.c.status == "preliminary",
        resources.c.report_ref.is_not(None),
    )
    if since is not None:
        query = query.where(resources.c.last_updated >= since)
    if until is not None:
        query = query.where(resources.c.last_updated < until)
    with store.transaction() as connection:
        rows = connection.execute(query.order_by(resources.c.last_updated)).all()
    grouped: dict[str, list[tuple[dict[str, Any], datetime]]] = {}
    for ref, body, updated in rows:
        grouped.setdefault(str(ref).removeprefix("DiagnosticReport/"), []).append(
            (json.loads(body), updated)
        )
    items = []
    waiting_insights = _awaiting_insights(store, since, until)
    reports = list(grouped) + [r for r in waiting_insights if r not in grouped]
    insights = _insights(store, reports)
    for report_id in reports:
        entries = grouped.get(report_id, [])
        pending, pending_since = waiting_insights.get(report_id, (0, None))
        templates = sorted(
            {ids[0] for body, _ in entries if (ids := template_of(body)) is not None}
        )
        if template and template not in templates:
            continue
        confidences = [
            float(c)
            for body, _ in entries
            for c in evidence(body).get("confidence", [])
            if isinstance(c, (int, float))
        ]
        flagged = sum(1 for body, _ in entries if evidence(body).get("flag"))
        stamps = [u if u.tzinfo else u.replace(tzinfo=UTC) for _, u in entries]
        oldest = min([*stamps, *([pending_since] if pending_since else [])])
        items.append(
            WorkItem(
                report_id,
                tuple(templates),
                len(entries),
                flagged,
                min(confidences) if confidences else None,
                oldest,
                insights.get(report_id, {}).get("critical", 0),
                insights.get(report_id, {}).get("mismatch", 0),
                pending,
            )
        )
    items.sort(key=lambda item: (not item.needs_attention, item.since, item.report_id))
    return items[:limit]


def _lock_owner(store: Store, connection: Any, guard: tuple[Any, ...]) -> None:
    """PostgreSQL: the report's lock first, as `Store.save_result` takes it (a re-extraction and
    a decision on the same report are written one after the other); an insight, which has no
    `report_ref`, is locked by the DiagnosticReport of its Bundle."""
    owner = connection.execute(
        sa.select(resources.c.report_ref, resources.c.bundle_id).where(*guard)
    ).first()
    if owner is None:
        return
    report = str(owner.report_ref or "").removeprefix("DiagnosticReport/")
    if not report:
        report = connection.execute(
            sa.select(resources.c.id).where(
                resources.c.resource_type == "DiagnosticReport",
                resources.c.bundle_id == owner.bundle_id,
            )
        ).scalar() or str(owner.bundle_id)
    store.lock_report(connection, str(report), owner.bundle_id)


def save_review(
    store: Store,
    result: ReviewResult,
    *,
    expected_version: int,
    reviewer: str,
    decision: str,
) -> str:
    """Store a decision made on version `expected_version` of an Observation or an insight:
    ReviewConflict (nothing changed) when it moved on since. The report's Bundle carries the new
    version and the Provenance; returns its id (to deliver: it always holds the report's
    current state)."""
    decided = result.observation
    resource_type = str(decided["resourceType"])
    decided_id = str(decided["id"])
    new_version = int(decided["meta"]["versionId"])
    if new_version != expected_version + 1:
        raise ReviewRefused("the decision does not follow the version it was made on")
    stored_body = {**decided, "meta": dict(decided["meta"])}
    stored_body["meta"].pop("versionId", None)
    now = _now()
    with store.transaction() as connection:
        # take the write lock first (SQLite) / lock the row (PostgreSQL), then compare
        guard = (resources.c.resource_type == resource_type, resources.c.id == decided_id)
        if store.is_sqlite:
            connection.execute(resources.update().where(*guard).values(id=resources.c.id))
            select = sa.select(resources).where(*guard)
        else:
            _lock_owner(store, connection, guard)
            select = sa.select(resources).where(*guard).with_for_update()
        current = connection.execute(select).first()
        if current is None:
            raise ReviewRefused(f"{resource_type}/{decided_id} not found")
        if int(current.version_id) != expected_version:
            raise ReviewConflict(
                f"{resource_type}/{decided_id} changed since the page was loaded (version "
                f"{current.version_id}, the decision was made on version {expected_version}): "
                "nothing was changed, reload the page"
            )
        message_id = connection.execute(
            sa.select(bundles.c.message_id).where(bundles.c.id == current.bundle_id)
        ).scalar()
        archive_version(connection, current)
        connection.execute(
            resources.update()
            .where(*guard)
            .values(
                body=json.dumps(stored_body, ensure_ascii=False),
                status=decided["status"],
                version_id=new_version,
                last_updated=now,
            )
        )
        # the report's own Bundle carries the decision (locked: decisions on other values of
        # the same report are written one after the other)
        bundle_id = str(current.bundle_id)
        lock = sa.select(bundles.c.body).where(bundles.c.id == bundle_id)
        original = connection.execute(
            lock if store.is_sqlite else lock.with_for_update()
        ).scalar_one()
        carried = bundle_with_review(json.loads(original), result)
        connection.execute(
            bundles.update()
            .where(bundles.c.id == bundle_id)
            .values(body=json.dumps(carried, ensure_ascii=False), updated_at=now)
        )
        provenance = result.provenance
        provenance_terms = index_terms(provenance)
        connection.execute(
            resources.insert().values(
                resource_type="Provenance",
                id=provenance["id"],
                bundle_id=bundle_id,
                subject=None,
                code=None,
                report_ref=None,
                status=None,
                last_updated=now,
                body=json.dumps(provenance, ensure_ascii=False),
                date_start=provenance_terms.date_start,
                date_end=provenance_terms.date_end,
            )
        )
        write_tokens(
            connection,
            [(stored_body, index_terms(stored_body)), (provenance, provenance_terms)],
        )
        connection.execute(
            audit_events.insert().values(
                at=now,
                message_id=message_id,
                event=f"review_{decision}",
                detail=f"{resource_type}/{decided_id}/_history/{new_version} by {reviewer}",
            )
        )
    log.info("review %s stored version=%d", decision, new_version)
    return bundle_id


# -- operator console ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsoleRow:
    """One message in the console (metadata only: never report text)."""

    id: int
    received_at: datetime
    channel: str
    sender: str
    control_id: str
    state: str
    attempts: int
    reason: str | None
    templates: tuple[str, ...]
    seconds: float
    conflict: bool = False  # its MSH-10 was sent before with other content


def sender_condition(sender: str) -> Any:
    """The sender filter as the console's column shows it: `APP/FACILITY` matches both parts
    (each a substring), a text without `/` matches either."""
    if "/" in sender:
        application, facility = (part.strip() for part in sender.split("/", 1))
        return sa.and_(
            messages.c.sending_application.contains(application, autoescape=True),
            messages.c.sending_facility.contains(facility, autoescape=True),
        )
    return sa.or_(
        messages.c.sending_application.contains(sender, autoescape=True),
        messages.c.sending_facility.contains(sender, autoescape=True),
    )


def _obr_accession(raw: bytes, accession: str) -> bool:
    """Whether an HL7v2 message has an OBR whose OBR-3.1 (the accession) is `accession`."""
    text = raw.decode("latin-1")
    if not text.startswith("MSH") or len(text) < 8:
        return False
    field, component = text[3], text[4]
    for segment in text.replace("\n", "\r").split("\r"):
        fields = segment.split(field)
        if fields[0] == "OBR" and len(fields) > 3 and fields[3].split(component)[0] == accession:
            return True
    return False


def messages_with_accession(store: Store, accession: str) -> list[int]:
    """Messages of a report with this accession: through the stored DiagnosticReport's
    identifier, or (a message that made no Bundle: a dead letter, one not yet extracted) its
    OBR-3.1."""
    report = (resources.c.resource_type == "DiagnosticReport",)
    has_bundle = sa.select(bundles.c.id).where(bundles.c.message_id == messages.c.id).exists()
    with store.transaction() as connection:
        found = {
            int(m)
            for m in connection.execute(
                sa.select(bundles.c.message_id)
                .join(resources, resources.c.bundle_id == bundles.c.id)
                .join(
                    search_tokens,
                    sa.and_(
                        search_tokens.c.resource_type == resources.c.resource_type,
                        search_tokens.c.resource_id == resources.c.id,
                    ),
                )
                .where(
                    *report,
                    search_tokens.c.name == "identifier",
                    search_tokens.c.code == accession,
                    bundles.c.message_id.is_not(None),
                )
            ).scalars()
        }
        needle = accession.encode()
        contains = (  # SQLite's LIKE does not read BLOBs; PostgreSQL's reads bytea
            sa.func.instr(messages.c.raw, needle) > 0
            if store.is_sqlite
            else messages.c.raw.contains(needle)
        )
        candidates = connection.execute(
            sa.select(messages.c.id, messages.c.raw).where(~has_bundle, contains)
        ).all()
    found.update(int(i) for i, raw in candidates if _obr_accession(bytes(raw), accession))
    return sorted(found)


def console_messages(
    store: Store,
    *,
    state: str | None = None,
    sender: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    message_id: int | None = None,
    control_id: str | None = None,
    accession: str | None = None,
    conflicts_only: bool = False,
) -> tuple[list[ConsoleRow], int]:
    """One page of messages, newest first, and how many match (`control_id`: MSH-10 exactly;
    `accession`: see `messages_with_accession`; `conflicts_only`: MSH-10 conflicts)."""
    conditions: list[Any] = []
    if message_id is not None:
        conditions.append(messages.c.id == message_id)
    if state:
        conditions.append(messages.c.state == state)
    if sender:
        conditions.append(sender_condition(sender))
    if control_id:
        conditions.append(messages.c.control_id == control_id)
    if accession:
        conditions.append(messages.c.id.in_(messages_with_accession(store, accession)))
    if conflicts_only:
        conditions.append(messages.c.conflict.is_(True))
    if since is not None:
        conditions.append(messages.c.received_at >= since)
    if until is not None:
        conditions.append(messages.c.received_at < until)
    columns = (
        messages.c.id,
        messages.c.received_at,
        messages.c.channel,
        messages.c.sending_application,
        messages.c.sending_facility,
        messages.c.control_id,
        messages.c.state,
        messages.c.attempts,
        messages.c.reason,
        messages.c.conflict,
    )
    with store.transaction() as connection:
        total = int(
            connection.execute(
                sa.select(sa.func.count()).select_from(messages).where(*conditions)
            ).scalar_one()
        )
        rows = connection.execute(
            sa.select(*columns)
            .where(*conditions)
            .order_by(messages.c.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        ids = [int(r.id) for r in rows]
        found = connection.execute(
            sa.select(
                extractions.c.message_id, extractions.c.template_id, extractions.c.seconds
            ).where(extractions.c.message_id.in_(ids))
        ).all()
    templates: dict[int, set[str]] = {}
    seconds: dict[int, float] = {}
    for message_id, template_id, spent in found:
        templates.setdefault(int(message_id), set()).add(str(template_id))
        seconds[int(message_id)] = seconds.get(int(message_id), 0.0) + float(spent or 0.0)
    return [
        ConsoleRow(
            int(r.id),
            r.received_at,
            r.channel,
            "/".join(p for p in (r.sending_application, r.sending_facility) if p),
            r.control_id,
            r.state,
            int(r.attempts),
            r.reason,
            tuple(sorted(templates.get(int(r.id), ()))),
            seconds.get(int(r.id), 0.0),
            bool(r.conflict),
        )
        for r in rows
    ], total


@dataclass(frozen=True)
class MessageDetail:
    """What the console shows of one message: no report text."""

    row: ConsoleRow
    ack: str | None
    history: list[tuple[datetime, str, str | None]]
    flags: list[tuple[str, str, str]]
    deliveries: list[dict[str, Any]]
    reports: list[str]


def message_detail(store: Store, message_id: int) -> MessageDetail | None:
    """The ACK sent, the state history (audit), extraction flags and delivery attempts."""
    rows, _ = console_messages(store, message_id=message_id, limit=1)
    if not rows:
        return None
    with store.transaction() as connection:
        base = connection.execute(
            sa.select(messages.c.id, messages.c.ack).where(messages.c.id == message_id)
        ).first()
        if base is None:
            return None
        history = [
            (at, str(event), detail)
            for at, event, detail in connection.execute(
                sa.select(audit_events.c.at, audit_events.c.event, audit_events.c.detail)
                .where(audit_events.c.message_id == message_id)
                .order_by(audit_events.c.id)
            ).all()
        ]
        payloads = connection.execute(
            sa.select(extractions.c.template_id, extractions.c.payload).where(
                extractions.c.message_id == message_id
            )
        ).all()
        delivered = connection.execute(
            sa.select(
                deliveries.c.bundle_id,
                deliveries.c.target,
                deliveries.c.state,
                deliveries.c.attempts,
                deliveries.c.last_status,
                deliveries.c.outcome,
                deliveries.c.next_attempt_at,
                deliveries.c.failing_since,
                deliveries.c.reason,
                deliveries.c.updated_at,
            )
            .join(bundles, bundles.c.id == deliveries.c.bundle_id)
            .where(bundles.c.message_id == message_id)
            .order_by(deliveries.c.id)
        ).all()
        reports = connection.execute(
            sa.select(resources.c.id)
            .join(bundles, bundles.c.id == resources.c.bundle_id)
            .where(
                bundles.c.message_id == message_id,
                resources.c.resource_type == "DiagnosticReport",
            )
        ).scalars()
        report_ids = sorted({str(r) for r in reports})
    flags = []
    for template_id, payload in payloads:
        for value in json.loads(payload).get("values", []):
            for flag in value.get("flags") or []:
                flags.append((str(template_id), str(value.get("variable_id")), str(flag)))
    ack = bytes(base.ack).decode("utf-8", "replace").replace("\r", "\n") if base.ack else None
    return MessageDetail(
        rows[0],
        ack,
        history,
        flags,
        [{**d._mapping, "shown": shown_delivery_state(str(d.state))} for d in delivered],
        report_ids,
    )
