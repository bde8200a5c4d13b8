"""A re-extraction and the clinician decisions already stored (called by `Store.save_result`,
in its transaction, after the result-order check let the Bundle through).

A value or an insight (a resource type of `INSIGHT_REVIEWS`: follow-up, critical result,
mismatch, communication) is decided when its current version is a reviewer's decision (that
version has the decision's Provenance). The same report again keeps the decided versions; a
superseding report (corrected/amended, a final after a preliminary, a later one) reopens them
for review. Nothing here logs report text, names or identifiers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.store.connection import utc_now
from adapter.tables import audit_events, bundles, extractions, messages, resources
from mappings.fhir_out import diagnostic_report_of
from mappings.review import INSIGHT_REVIEWS, review_provenance_id

log = logging.getLogger("radbridge.reextraction")


# what a reviewer decides: values (RADS categories included) and the report's insights
REVIEWABLE = ("Observation", *INSIGHT_REVIEWS)

SAME_REPORT_RULE = "same report: the reviewed versions are kept"
SUPERSEDING_RULE = "superseding report: the reviewed values need review again"


@dataclass(frozen=True)
class ReviewedKept:
    """What `Store.save_result` does with a Bundle given the decisions already stored.

    `bundle`: the Bundle to store (decided values in their reviewed version, the decisions'
    Provenance kept); `skip`: (type, id) of entries already stored as they are (not rewritten:
    no new version); `unchanged`: every value was decided and the report is the same, so the
    stored result stays as it is and nothing is delivered again (`reason` says why)."""

    bundle: dict[str, Any]
    skip: frozenset[tuple[str, str]] = frozenset()
    unchanged: bool = False
    reason: str | None = None


def _content(raw: bytes) -> bytes:
    """A message's report content: an HL7 v2 message without its MSH segment (a resend gets a
    new MSH-7 and MSH-10), segment separators normalised; other content as it is."""
    if not raw.startswith(b"MSH"):
        return raw.strip()
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
    return text.split(b"\r", 1)[1] if b"\r" in text else b""


def _same_content(connection: Connection, message_id: int | None, stored_id: int | None) -> bool:
    """Whether message `message_id` carries the same report as `stored_id` (the message that
    wrote the stored result): the same message (requeue, reconcile, a dead letter requeued) or
    the same content apart from the MSH segment (a resend). Unknown (None): not the same."""
    if message_id is None or stored_id is None:
        return False
    if message_id == stored_id:
        return True
    rows = connection.execute(
        sa.select(messages.c.sha256, messages.c.raw).where(
            messages.c.id.in_((message_id, stored_id))
        )
    ).all()
    if len(rows) != 2:
        return False
    return rows[0].sha256 == rows[1].sha256 or _content(bytes(rows[0].raw)) == _content(
        bytes(rows[1].raw)
    )


def _note(
    connection: Connection,
    message_id: int | None,
    report_id: str,
    key: str,
    observation_ids: list[str],
    rule: str,
) -> None:
    """The extraction record of this message and report notes what happened to the decided
    values, and the audit trail says how many (no identifiers of people, no report text)."""
    if message_id is None:
        return
    latest = connection.execute(
        sa.select(extractions.c.id, extractions.c.payload)
        .where(extractions.c.message_id == message_id, extractions.c.report_id == report_id)
        .order_by(extractions.c.id.desc())
        .limit(1)
    ).first()
    if latest is not None:
        payload = json.loads(latest.payload)
        payload["review"] = {key: observation_ids, "rule": rule}
        connection.execute(
            extractions.update()
            .where(extractions.c.id == latest.id)
            .values(payload=json.dumps(payload, sort_keys=True))
        )
    connection.execute(
        audit_events.insert().values(
            at=utc_now(),
            message_id=message_id,
            event=f"review_{key}",
            detail=f"{len(observation_ids)} reviewed values: {rule}",
        )
    )


def _stored_reviewable() -> Any:
    columns = (resources.c.resource_type, resources.c.id, resources.c.version_id, resources.c.body)
    reviewable = resources.c.resource_type.in_(REVIEWABLE)
    return sa.union(  # two index lookups: an OR of both read every Observation
        sa.select(*columns).where(reviewable, resources.c.bundle_id == sa.bindparam("bundle")),
        sa.select(*columns).where(
            reviewable, resources.c.id.in_(sa.bindparam("ids", expanding=True))
        ),
    )


_STORED_REVIEWABLE = _stored_reviewable()
"""`keep_reviewed`'s read of the stored reviewable resources (of the Bundle, or with the
incoming ids), built once."""


def keep_reviewed(
    connection: Connection,
    message_id: int | None,
    report_id: str,
    bundle: dict[str, Any],
) -> ReviewedKept:
    """The review rule of a re-extraction, in `Store.save_result`'s transaction (after the
    result-order check let `bundle` through, with the report locked).

    A value or an insight is decided when its current version is a reviewer's decision (that
    version has the decision's Provenance). When the stored result holds decided ones:
    - the SAME report again (same result status, same message or the same content apart from
      the MSH segment): the decided versions stay (no new version; the Bundle carries them and
      the decisions' Provenance, and keeps a decided value this extraction missed); when every
      value was decided the stored result stays as it is and is not delivered again;
    - any other report the result order lets through (a corrected/amended one, a final after a
      preliminary, a later one): the Bundle is stored as it comes, so each decided value gets a
      new preliminary version (or is retired when the report no longer has it) and the report
      is back on the worklist.
    Either way the extraction record and the audit trail note it."""
    bundle_id = str(bundle["id"])
    incoming_keys = [
        (str(e["resource"]["resourceType"]), str(e["resource"]["id"]))
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] in REVIEWABLE
    ]
    stored = connection.execute(
        _STORED_REVIEWABLE, {"bundle": bundle_id, "ids": [rid for _, rid in incoming_keys]}
    ).all()
    if not stored:
        return ReviewedKept(bundle)
    decision_of = {
        review_provenance_id(str(r.id), int(r.version_id)): (str(r.resource_type), str(r.id))
        for r in stored
    }
    decided_ids = {
        decision_of[str(pid)]
        for pid in connection.execute(
            sa.select(resources.c.id).where(
                resources.c.resource_type == "Provenance", resources.c.id.in_(list(decision_of))
            )
        ).scalars()
    }
    if not decided_ids:
        return ReviewedKept(bundle)
    decided = {
        (str(r.resource_type), str(r.id)): json.loads(r.body)
        for r in stored
        if (str(r.resource_type), str(r.id)) in decided_ids
    }
    incoming = diagnostic_report_of(bundle)
    stored_bundle = connection.execute(
        sa.select(bundles.c.message_id, bundles.c.body).where(bundles.c.id == bundle_id)
    ).first()
    stored_report = (
        diagnostic_report_of(json.loads(stored_bundle.body)) if stored_bundle is not None else None
    )
    same = (
        incoming is not None
        and stored_report is not None
        and incoming.get("status") == stored_report.get("status")
        and stored_bundle is not None
        and _same_content(connection, message_id, stored_bundle.message_id)
    )
    ids = sorted(rid for _, rid in decided)
    if not same:
        _note(connection, message_id, report_id, "reopened", ids, SUPERSEDING_RULE)
        log.info("re-extraction: %d reviewed values need review again", len(ids))
        return ReviewedKept(bundle)
    _note(connection, message_id, report_id, "kept", ids, SAME_REPORT_RULE)
    log.info("re-extraction of the same report: %d reviewed values kept", len(ids))
    assert stored_bundle is not None and incoming is not None
    if set(incoming_keys) <= set(decided):
        return ReviewedKept(
            bundle,
            unchanged=True,
            reason="kept: every value of this report was decided by a reviewer (same report)",
        )
    missing = [key for key in sorted(decided) if key not in incoming_keys]
    results_missing = [rid for kind, rid in missing if kind == "Observation"]
    entries = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        key = (str(resource["resourceType"]), str(resource["id"]))
        if key in decided:
            entry = {**entry, "resource": decided[key]}
        elif resource["resourceType"] == "DiagnosticReport" and results_missing:
            results = [*resource.get("result", [])]
            results += [{"reference": f"Observation/{oid}"} for oid in results_missing]
            entry = {**entry, "resource": {**resource, "result": results}}
        entries.append(entry)
    entries += [
        {
            "fullUrl": f"urn:uuid:{rid}",
            "resource": decided[(kind, rid)],
            "request": {"method": "PUT", "url": f"{kind}/{rid}"},
        }
        for kind, rid in missing
    ]
    present = {(e["resource"]["resourceType"], str(e["resource"]["id"])) for e in entries}
    carried = [  # the decisions' Provenance (bundle_with_review added them)
        e
        for e in json.loads(stored_bundle.body).get("entry", [])
        if e["resource"]["resourceType"] == "Provenance"
        and ("Provenance", str(e["resource"]["id"])) not in present
    ]
    skip = set(decided)
    skip |= {("Provenance", str(e["resource"]["id"])) for e in carried}
    return ReviewedKept({**bundle, "entry": entries + carried}, skip=frozenset(skip))
