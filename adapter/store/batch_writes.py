"""A batch's new results written with one statement per table (`Store.finish_extractions`).

Most results of a batch are new: their Bundle, their DiagnosticReport and their values are not
stored yet, so the result order, a reviewer's decisions, the Observations to retire, the
message that held the Bundle before and the delivery already queued have nothing to find.
`prefetch` reads, once for the batch, which of its Bundles and resources are stored (on
PostgreSQL after locking every report and shared resource of the batch, in one order);
`BatchResults.fresh` tells a new result from one that needs `save_result`'s reads, and
`PendingWrites` keeps a new result's rows until `flush` writes each table's rows with one
statement (executemany). The caller flushes before anything that reads the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.search_index import key_params, keys_condition
from adapter.store.messages import AUDIT_INSERT, EXTRACTED, transition_all_in
from adapter.tables import (
    bundles,
    deliveries,
    extractions,
    resource_versions,
    resources,
)
from mappings.fhir_out import diagnostic_report_of

SHARED_TYPES = frozenset({"Patient", "Device", "Practitioner"})
"""Resources that several reports' Bundles write (one writer at a time on PostgreSQL)."""


@dataclass(frozen=True)
class StoredRow:
    """A resource's index row as stored (or as this batch wrote it last)."""

    resource_type: str
    id: str
    version_id: int
    body: str
    last_updated: datetime


def report_key(bundle: dict[str, Any]) -> str:
    """What `Store.lock_report` serialises a Bundle's writers on: its DiagnosticReport's id
    (its own id when it has none)."""
    report = diagnostic_report_of(bundle)
    return str(report["id"]) if report is not None else str(bundle["id"])


def resource_keys(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, id) of each resource a Bundle carries."""
    return [
        (str(e["resource"]["resourceType"]), str(e["resource"]["id"]))
        for e in bundle.get("entry", [])
    ]


@dataclass
class BatchResults:
    """What the store held of a batch's Bundles when the batch began, kept up to date as the
    batch writes: the Bundle ids stored and the stored rows of the resources they carry."""

    bundles: set[str]
    rows: dict[tuple[str, str], StoredRow]

    def fresh(self, bundle: dict[str, Any], reviewable: Iterable[str]) -> bool:
        """Whether a Bundle is new: neither it, nor its DiagnosticReport, nor any resource of a
        `reviewable` type (a value or insight a reviewer may have decided) it carries is
        stored. Its only stored resources are then shared ones (Patient, Device...) and
        resources another report wrote: nothing the result order, the review rule or the
        retirement reads (`Store.save_result`)."""
        if str(bundle["id"]) in self.bundles:
            return False
        report = diagnostic_report_of(bundle)
        if report is not None and ("DiagnosticReport", str(report["id"])) in self.rows:
            return False
        kinds = frozenset(reviewable)
        return not any(key in self.rows for key in resource_keys(bundle) if key[0] in kinds)

    def wrote(self, bundle_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Note a Bundle and its index rows as written (`version_id` set)."""
        self.bundles.add(bundle_id)
        for row in rows:
            key = (str(row["resource_type"]), str(row["id"]))
            self.rows[key] = StoredRow(
                key[0], key[1], int(row["version_id"]), str(row["body"]), row["last_updated"]
            )

    def set_versions(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """`next_versions` from what is known."""
        return next_versions(self.rows, rows)


def next_versions(
    stored: dict[tuple[str, str], StoredRow], rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Set each index row's `version_id` from the stored rows: a resource rewritten with
    another body becomes its next version, the same body keeps its version, a new one is 1;
    the versions to archive (`resource_versions` rows)."""
    archived: list[dict[str, Any]] = []
    for row in rows:
        current = stored.get((str(row["resource_type"]), str(row["id"])))
        if current is None:
            row["version_id"] = 1
        elif current.body == row["body"]:
            row["version_id"] = current.version_id
        else:
            archived.append(
                {
                    "resource_type": current.resource_type,
                    "id": current.id,
                    "version_id": current.version_id,
                    "last_updated": current.last_updated,
                    "body": current.body,
                }
            )
            row["version_id"] = current.version_id + 1
    return archived


def stored_of(rows: Iterable[Any]) -> dict[tuple[str, str], StoredRow]:
    """Rows read by `stored_rows`, by (type, id)."""
    return {
        (str(r.resource_type), str(r.id)): StoredRow(
            str(r.resource_type), str(r.id), int(r.version_id), str(r.body), r.last_updated
        )
        for r in rows
    }


def prefetch(
    connection: Connection, batch: Sequence[dict[str, Any]], is_sqlite: bool
) -> BatchResults:
    """What the store holds of a batch's Bundles: two reads. On PostgreSQL every report of the
    batch, then every shared resource, is locked first (in that order, each sorted, as
    `Store.lock_report` and `Store._keep_versions` lock one report's), so what is read stays so
    until the commit; SQLite's write lock is the caller's already."""
    keys = sorted({key for bundle in batch for key in resource_keys(bundle)})
    if is_sqlite:  # a write first: SQLite takes its (database-wide) write lock now
        connection.execute(TOUCH_BUNDLE, {"bundle": ""})
    else:
        locks = sorted({report_key(b) for b in batch})
        locks += sorted(f"{kind}/{ident}" for kind, ident in keys if kind in SHARED_TYPES)
        for lock in locks:
            connection.execute(ADVISORY_LOCK, {"key": lock})
    ids = sorted({str(b["id"]) for b in batch})
    stored_bundles = (
        {str(b) for b in connection.execute(_STORED_BUNDLES, {"ids": ids}).scalars()}
        if ids
        else set()
    )
    rows: dict[tuple[str, str], StoredRow] = {}
    if keys:
        types, params = key_params(keys)
        rows = stored_of(connection.execute(stored_rows(types, is_sqlite), params))
    return BatchResults(stored_bundles, rows)


@dataclass
class PendingWrites:
    """New results' rows, written by `flush` with one statement per table and shape."""

    extractions: list[dict[str, Any]] = field(default_factory=list)
    bundles: list[dict[str, Any]] = field(default_factory=list)
    archived: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    # messages `processing -> extracted` (id, reason)
    extracted: list[tuple[int, str | None]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)

    def flush(self, connection: Connection, upserts: tuple[Any, Any]) -> None:
        """Write every pending row (Bundles before what refers to them) and forget them.
        StoreError when a message is no longer `processing` (the caller's transaction then
        writes nothing)."""
        upsert_bundle, upsert_resource = upserts
        writes: list[tuple[Any, list[dict[str, Any]]]] = [
            (upsert_bundle, self.bundles),
            (_ARCHIVE, self.archived),
            (upsert_resource, self.resources),
            (_EXTRACTION_INSERT, self.extractions),
            (_DELIVERY_INSERT, self.deliveries),
        ]
        for statement, rows in writes:
            if rows:
                connection.execute(statement, rows)
        if self.audits:
            connection.execute(AUDIT_INSERT, self.audits)
        transition_all_in(connection, EXTRACTED, self.extracted)
        for rows in vars(self).values():
            rows.clear()


@cache
def stored_rows(types: int, is_sqlite: bool) -> Any:
    """The stored index rows of resources of `types` types (locked on PostgreSQL), built once
    per shape (`adapter.search_index.keys_condition`)."""
    query = sa.select(
        resources.c.resource_type,
        resources.c.id,
        resources.c.version_id,
        resources.c.body,
        resources.c.last_updated,
    ).where(keys_condition(resources.c.resource_type, resources.c.id, types))
    return query if is_sqlite else query.with_for_update()


ADVISORY_LOCK = sa.select(
    sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(sa.bindparam("key"), 0))
)
"""PostgreSQL's lock of `key` (a report id, `Type/id` of a shared resource) until the commit."""
_STORED_BUNDLES = sa.select(bundles.c.id).where(
    bundles.c.id.in_(sa.bindparam("ids", expanding=True))
)
_ARCHIVE = resource_versions.insert()
_EXTRACTION_INSERT = extractions.insert()
_DELIVERY_INSERT = deliveries.insert()
TOUCH_BUNDLE = (
    bundles.update().where(bundles.c.id == sa.bindparam("bundle")).values(id=bundles.c.id)
)
"""A write that changes nothing: SQLite's write lock taken for the rest of the transaction."""
