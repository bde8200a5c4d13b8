"""Result order: which DiagnosticReport result may replace the stored one, and what a
superseding result retires (pure rules; `adapter.store.results` applies them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

RETIRED_STATUSES = ("entered-in-error", "cancelled")
RETIRABLE = ("Observation", "ServiceRequest", "Flag", "Communication", "DetectedIssue")
"""What a superseding result retires when it no longer has it: the Observations and the
insights (issue 20: follow-ups, critical flags, communications, mismatches)."""

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


def stale_reason(incoming: dict[str, Any], stored: dict[str, Any]) -> str | None:
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


def as_retired(resource: dict[str, Any]) -> dict[str, Any]:
    """A stored Observation or insight a superseding result no longer has: entered in error
    (a status of each of these resources in R4)."""
    if resource.get("status") in RETIRED_STATUSES:
        return resource
    return {**resource, "status": "entered-in-error"}
