"""The store's results: extraction records, Bundles and the index rows of their resources,
with each resource's versions, in result order.

Result order (`save_result`, rules in `mappings.result_order`): per DiagnosticReport, a
preliminary never replaces a final, a corrected/amended result supersedes both, and otherwise
the later observation time wins; a superseding Bundle retires the Observations and insight
resources (ServiceRequest, Flag, Communication, DetectedIssue) it no longer has
(`entered-in-error`, carried in the Bundle for the EHR, no longer served by searches), the
report's insights also when another template's Bundle (`report_only`) holds them, and every
template's Observations of the report when the superseding result has no template any more
(`report_only`: the corrected report routes to no template). A reviewer's
decisions on values and insights survive a re-extraction of the same report
(`adapter.store.reextraction`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.search_index import key_params, write_tokens
from adapter.store.batch_writes import (
    ADVISORY_LOCK,
    SHARED_TYPES,
    TOUCH_BUNDLE,
    BatchResults,
    PendingWrites,
    next_versions,
    prefetch,
    stored_of,
    stored_rows,
)
from adapter.store.connection import StoreBase
from adapter.store.connection import utc_now as _now
from adapter.store.deliveries import QUEUED, SENDING, delivery_row, queue_delivery
from adapter.store.messages import EXTRACTED
from adapter.store.reextraction import REVIEWABLE, keep_reviewed
from adapter.tables import (
    audit_events,
    bundles,
    extractions,
    messages,
    resource_versions,
    resources,
)
from mappings.fhir_out import diagnostic_report_of
from mappings.insights.report_only import REPORT_ONLY
from mappings.result_order import RETIRABLE, as_retired, stale_reason
from mappings.review import template_of
from mappings.search_params import IndexTerms, index_terms
from mappings.timeline import prior_from_resource

log = logging.getLogger("radbridge.store")

PendingTokens = dict[tuple[str, str], tuple[dict[str, Any], IndexTerms]]
"""Resources whose search index a batch's transaction writes at its end (`write_tokens`), by
(type, id): each as its last write left it."""


@dataclass(frozen=True)
class SavedResult:
    """What `Store.save_result` did: stored the Bundle (retiring Observations it no longer
    has), or kept the stored result because the incoming one is older (`reason`)."""

    bundle_id: str
    saved: bool
    retired: tuple[str, ...]
    reason: str | None
    # the Bundle as stored (with its retired Observations and a reviewer's kept decisions)
    bundle: dict[str, Any] | None = None
    # its `updated_at` as stored (`DeliveryJob.stamp` of a push of it)
    stamp: datetime | None = None
    # the destinations whose delivery `finish_extraction` claimed for the caller's own push:
    # what each holds of the Bundle (`DeliveryJob.delivered`)
    claimed: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """A result's rows as a new result writes them (`_written`), made before the transaction:
    its extraction record and, with a Bundle, the Bundle's row, its resources with their
    search terms, and their index rows (`version_id` set under the lock)."""

    extraction: dict[str, Any]
    bundle: dict[str, Any] | None = None
    bundle_row: dict[str, Any] = field(default_factory=dict)
    written: list[tuple[dict[str, Any], IndexTerms]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


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


@cache
def _upserts(is_sqlite: bool) -> tuple[Any, Any]:
    """The store's two upserts (INSERT ... ON CONFLICT DO UPDATE: one statement, no
    delete-and-insert race), built once per dialect: the Bundle (its message: the one that wrote it
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


class ResultStore(StoreBase):
    """Extraction records and results (Bundles, their resources and versions)."""

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
        with self.transaction() as connection:
            _insert_extraction(connection, message_id, output)

    def finish_extraction(
        self,
        message_id: int,
        outputs: Sequence[Output],
        *,
        queue: Sequence[str] = (),
        claim: Sequence[str] = (),
        lease: timedelta = timedelta(hours=1),
    ) -> list[SavedResult]:
        """A processed message's results in ONE transaction: each extraction record and Bundle
        (`save_result`'s rules: a Bundle older than the stored result is kept, not saved, and
        audited `superseded`) and the message `processing -> extracted`, its reason "no
        template" when it had no result or only results no template applied to (their record
        says `no_template`: the report's own Bundle, issue 20), else the first superseding
        reason when no Bundle was saved. All or nothing: StoreError (nothing written) when the
        message is no longer `processing`.

        Each saved Bundle's deliveries, in the same transaction: to the destinations in `queue`
        recorded `queued` (`Store.queue_deliveries`: the caller sends their tasks), to those in
        `claim` claimed for `lease` for the caller's own push (`SavedResult.claimed`; one
        that a copy in flight holds is left to it)."""
        return self.finish_extractions(
            [(message_id, outputs)], queue=queue, claim=claim, lease=lease
        )[message_id]

    def finish_extractions(
        self,
        finished: Sequence[tuple[int, Sequence[Output]]],
        *,
        queue: Sequence[str] = (),
        claim: Sequence[str] = (),
        lease: timedelta = timedelta(hours=1),
    ) -> dict[int, list[SavedResult]]:
        """`finish_extraction` for several messages (message id, its outputs) in ONE
        transaction (an extraction task of a batch); all or nothing: StoreError when any of
        them is no longer `processing` (the caller may then finish each on its own)."""
        done: dict[int, list[SavedResult]] = {}
        tokens: PendingTokens = {}
        # each message its own stamp: a later message of the batch that saves the same Bundle
        # again (a correction) shows as a change to the earlier one's push
        stamps: list[datetime] = []
        for _ in finished:
            stamps.append(max(_now(), stamps[-1] + timedelta(microseconds=1)) if stamps else _now())
        # a new result's rows, made before the transaction takes the write lock
        prepared = [
            [_written(message_id, output, stamp) for output in outputs]
            for (message_id, outputs), stamp in zip(finished, stamps, strict=True)
        ]
        batch = [o.bundle for _, outputs in finished for o in outputs if o.bundle is not None]
        pending = PendingWrites()
        with self.transaction() as connection:
            known = prefetch(connection, batch, self.is_sqlite)
            for (message_id, outputs), stamp, made in zip(finished, stamps, prepared, strict=True):
                done[message_id] = self._finish_in(
                    connection,
                    message_id,
                    list(zip(outputs, made, strict=True)),
                    stamp,
                    queue=queue,
                    claim=claim,
                    lease=lease,
                    tokens=tokens,
                    known=known,
                    pending=pending,
                )
            pending.flush(connection, _upserts(self.is_sqlite))
            # the search index of every resource written, as its last write left it: one DELETE
            # and one INSERT for the whole batch (nothing in it reads the index before)
            write_tokens(connection, list(tokens.values()))
        for saved in done.values():
            for result in saved:
                if result.retired:
                    log.info(
                        "bundle %s retired %d observations", result.bundle_id, len(result.retired)
                    )
        return done

    def _finish_in(
        self,
        connection: Connection,
        message_id: int,
        outputs: Sequence[tuple[Output, Written]],
        now: datetime,
        *,
        queue: Sequence[str],
        claim: Sequence[str],
        lease: timedelta,
        tokens: PendingTokens,
        known: BatchResults,
        pending: PendingWrites,
    ) -> list[SavedResult]:
        """One message of `finish_extractions`, inside the caller's transaction (`tokens`: the
        resources whose search index the caller writes at the end; `known`, `pending`: a new
        result's rows wait in `pending` for the caller's flush, any other is saved by
        `_save_result_in` after a flush)."""
        saved: list[SavedResult] = []
        for output, made in outputs:
            pending.extractions.append(made.extraction)
            if output.bundle is None:
                continue
            if known.fresh(output.bundle, REVIEWABLE):
                result = self._save_fresh(made, tokens, known, pending)
                for target in queue:
                    pending.deliveries.append(delivery_row(result.bundle_id, target, QUEUED, now))
                for target in claim:
                    pending.deliveries.append(delivery_row(result.bundle_id, target, SENDING, now))
                saved.append(replace(result, stamp=now, claimed={t: {} for t in claim}))
                continue
            pending.flush(connection, _upserts(self.is_sqlite))
            result = self._save_result_in(
                connection,
                message_id,
                output.report_id,
                output.bundle,
                now,
                no_template=output.template_id == REPORT_ONLY,
                tokens=tokens,
                known=known,
            )
            if result.saved:
                for target in queue:
                    queue_delivery(connection, result.bundle_id, target, now)
                claimed = {
                    target: held
                    for target in claim
                    if (
                        held := queue_delivery(
                            connection, result.bundle_id, target, now, claim=lease
                        )
                    )
                    is not None
                }
                result = replace(result, stamp=now, claimed=claimed)
            saved.append(result)
            if not result.saved:
                pending.audits.append(
                    {
                        "at": now,
                        "message_id": message_id,
                        "event": "superseded",
                        "detail": result.reason,
                    }
                )
        kept = [r for r in saved if not r.saved]
        reason = None
        if not any(r.saved for r in saved):
            reason = (kept[0].reason or "superseded") if kept else "no template"
        elif outputs and all(output.record.get("no_template") for output, _ in outputs):
            reason = "no template"  # its Bundle (report and insights) was kept all the same
        pending.extracted.append((message_id, reason))
        return saved

    def _save_fresh(
        self, made: Written, tokens: PendingTokens, known: BatchResults, pending: PendingWrites
    ) -> SavedResult:
        """`_save_result_in` of a new result (`BatchResults.fresh`): nothing stored to compare
        it with, keep of it or retire, so its rows (`_written`) go to `pending` (a shared
        resource rewritten with another body gets its next version)."""
        assert made.bundle is not None
        bundle_id = str(made.bundle["id"])
        pending.bundles.append(made.bundle_row)
        rows = [dict(row) for row in made.rows]
        pending.archived.extend(known.set_versions(rows))
        pending.resources.extend(rows)
        known.wrote(bundle_id, rows)
        tokens.update(((str(r["resourceType"]), str(r["id"])), (r, t)) for r, t in made.written)
        return SavedResult(bundle_id, saved=True, retired=(), reason=None, bundle=made.bundle)

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
        `adapter.store.reextraction.keep_reviewed`); a superseding report reopens them.
        """
        with self.transaction() as connection:
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
        *,
        no_template: bool = False,
        tokens: PendingTokens | None = None,
        known: BatchResults | None = None,
    ) -> SavedResult:
        """`save_result` inside the caller's transaction (`no_template`: the Bundle is the
        report's `report_only` result, so no template's values of the report stay in force;
        `tokens`: where the written resources' search terms go, by resource, for the caller to
        write (`write_tokens`) before its commit; without it they are written here)."""
        bundle_id = str(bundle["id"])
        incoming = diagnostic_report_of(bundle)
        self.lock_report(connection, incoming["id"] if incoming else bundle_id, bundle_id)
        writer = None  # the Bundle that wrote the stored version of the report
        if incoming is not None:
            row = connection.execute(_STORED_REPORT, {"report": incoming["id"]}).first()
            stored, writer = (row.body, row.bundle_id) if row is not None else (None, None)
            reason = stale_reason(incoming, json.loads(stored)) if stored else None
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
            (str(kind), str(oid), str(body))
            for kind, oid, body in connection.execute(_RETIRABLE_OF, {"bundle": bundle_id})
        )
        # the report stored under another template's Bundle (its first version had none,
        # `report_only`, and its correction routes to a template, or the other way round): its
        # insights are the report's own, so the ones the incoming Bundle no longer has retire
        previous = None if writer is None or str(writer) == bundle_id else str(writer)
        if previous is not None:  # the report's insights, stored under another template's Bundle
            dropped += sorted(
                (str(kind), str(oid), str(body))
                for kind, oid, body in connection.execute(_RETIRABLE_OF, {"bundle": previous})
                if _is_insight(json.loads(body))
            )
        if no_template and incoming is not None:  # the values of the templates it had before
            dropped += sorted(
                (str(kind), str(oid), str(body))
                for kind, oid, body in connection.execute(_values_elsewhere(incoming, bundle_id))
            )
        retired = [
            as_retired(json.loads(body))
            for (kind, oid), body in {(kind, oid): body for kind, oid, body in dropped}.items()
            if (kind, oid) not in current
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
        bundle_row = _bundle_row(bundle, message_id, report_id, now)
        if message_id is not None:  # delivery marks the message that wrote it last
            self._note_replaced(connection, bundle_id, message_id, now)
        upsert_bundle, upsert_resource = _upserts(self.is_sqlite)
        connection.execute(upsert_bundle, bundle_row)
        report_of = _report_of(bundle)
        written = [  # a reviewer's decision is kept as it is stored
            (entry["resource"], index_terms(entry["resource"]))
            for entry in bundle.get("entry", [])
            if (entry["resource"]["resourceType"], entry["resource"]["id"]) not in kept.skip
        ]
        rows = [_index_row(r, bundle_id, now, report_of, terms) for r, terms in written]
        self._keep_versions(connection, rows)  # each resource's history
        if rows:  # one statement for all of them (executemany)
            connection.execute(upsert_resource, rows)
        if known is not None:
            known.wrote(bundle_id, rows)
        if tokens is None:
            write_tokens(connection, written)
        else:
            tokens.update(((str(r["resourceType"]), str(r["id"])), (r, t)) for r, t in written)
        return SavedResult(
            bundle_id,
            saved=True,
            retired=tuple(str(r["id"]) for r in retired),
            reason=None,
            bundle=bundle,
        )

    def _note_replaced(
        self, connection: Connection, bundle_id: str, message_id: int, now: datetime
    ) -> None:
        """The message whose result this Bundle held until now, if another and still waiting
        for its delivery, says why nothing of it will be delivered (it stays `extracted`)."""
        previous = connection.execute(_BUNDLE_MESSAGE, {"bundle": bundle_id}).scalar()
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

    def lock_report(self, connection: Connection, report_id: str, bundle_id: str) -> None:
        """Serialise writers of one DiagnosticReport for the rest of the transaction, so two
        results of the same accession are compared and written one after the other."""
        if self.is_sqlite:  # a write first: SQLite takes its (database-wide) write lock now
            connection.execute(TOUCH_BUNDLE, {"bundle": bundle_id})
        else:
            connection.execute(ADVISORY_LOCK, {"key": report_id})

    def _keep_versions(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Set each index row's `version_id` before it is written, with one read of the stored
        rows: a resource rewritten with a different body has its current version kept in
        `resource_versions` and becomes the next version (same body: same version; a new one: 1).
        On PostgreSQL the stored rows are locked, and a Patient, Device or Practitioner that
        reports share is written by one transaction at a time (one report's own resources
        already are, by `lock_report`)."""
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
                if resource_type in SHARED_TYPES:
                    connection.execute(ADVISORY_LOCK, {"key": f"{resource_type}/{resource_id}"})
        types, params = key_params(keys)
        stored = stored_of(connection.execute(stored_rows(types, self.is_sqlite), params))
        archived = next_versions(stored, rows)
        if archived:
            connection.execute(resource_versions.insert(), archived)

    def get_bundle(self, bundle_id: str) -> dict[str, Any] | None:
        """A stored Bundle, or None."""
        with self.transaction() as connection:
            body = connection.execute(
                sa.select(bundles.c.body).where(bundles.c.id == bundle_id)
            ).scalar()
        return json.loads(body) if body else None

    def extraction_seconds(self) -> tuple[int, float]:
        """(number of extractions, total model seconds) for metrics."""
        with self.transaction() as connection:
            row = connection.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(extractions.c.seconds), 0.0)
                )
            ).one()
        return int(row[0]), float(row[1])


# The hot path's statements, built once (their values bound at each execution): building a
# statement per call cost more CPU than running it.
_RETIRABLE_OF = sa.select(resources.c.resource_type, resources.c.id, resources.c.body).where(
    resources.c.resource_type.in_(RETIRABLE), resources.c.bundle_id == sa.bindparam("bundle")
)
"""The retirable resources (type, id, body) a Bundle wrote last."""
_STORED_REPORT = sa.select(resources.c.body, resources.c.bundle_id).where(
    resources.c.resource_type == "DiagnosticReport", resources.c.id == sa.bindparam("report")
)
"""A stored DiagnosticReport's body and the Bundle that wrote it."""
_BUNDLE_MESSAGE = sa.select(bundles.c.message_id).where(bundles.c.id == sa.bindparam("bundle"))
_EXTRACTION_INSERT = extractions.insert()


def _report_of(bundle: dict[str, Any]) -> dict[str, str]:
    """Each result reference of a Bundle's DiagnosticReport: the report's reference."""
    return {
        ref["reference"]: f"DiagnosticReport/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "DiagnosticReport"
        for ref in e["resource"].get("result", [])
    }


def _values_elsewhere(report: dict[str, Any], bundle_id: str) -> Any:
    """The retirable resources (type, id, body) of `report` (the DiagnosticReport's results)
    that other Bundles wrote last: the values of the templates the report had before."""
    return sa.select(resources.c.resource_type, resources.c.id, resources.c.body).where(
        resources.c.resource_type.in_(RETIRABLE),
        resources.c.report_ref == f"DiagnosticReport/{report['id']}",
        resources.c.bundle_id != bundle_id,
    )


def _is_insight(resource: dict[str, Any]) -> bool:
    """Whether a resource is one of the report's insights (its evidence names the `insights`
    pseudo-template: a follow-up, critical result, mismatch, RADS category...)."""
    found = template_of(resource)
    return found is not None and found[0] == "insights"


def _insert_extraction(connection: Connection, message_id: int, output: Output) -> None:
    """One extraction record (including not-mentioned values, which FHIR omits)."""
    connection.execute(_EXTRACTION_INSERT, _extraction_row(message_id, output))


def _written(message_id: int, output: Output, now: datetime) -> Written:
    """The rows a result writes when it is new (`Store._save_fresh`)."""
    extraction = _extraction_row(message_id, output)
    bundle = output.bundle
    if bundle is None:
        return Written(extraction)
    bundle_id = str(bundle["id"])
    written = [(e["resource"], index_terms(e["resource"])) for e in bundle.get("entry", [])]
    report_of = _report_of(bundle)
    return Written(
        extraction,
        bundle,
        _bundle_row(bundle, message_id, output.report_id, now),
        written,
        [_index_row(r, bundle_id, now, report_of, terms) for r, terms in written],
    )


def _bundle_row(
    bundle: dict[str, Any], message_id: int | None, report_id: str, now: datetime
) -> dict[str, Any]:
    """A Bundle's row (its message: the one that wrote it last)."""
    return {
        "id": str(bundle["id"]),
        "message_id": message_id,
        "report_id": report_id,
        "body": json.dumps(bundle, ensure_ascii=False),
        "created_at": now,
        "updated_at": now,
    }


def _extraction_row(message_id: int, output: Output) -> dict[str, Any]:
    """An extraction record's row."""
    return {
        "message_id": message_id,
        "report_id": output.report_id,
        "template_id": output.template_id,
        "template_version": output.template_version,
        "stage": output.stage,
        "payload": json.dumps(output.record, sort_keys=True),
        "seconds": float((output.record.get("timings") or {}).get("seconds") or 0.0),
        "created_at": _now(),
    }


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
