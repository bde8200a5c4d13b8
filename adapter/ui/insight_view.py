"""The review page's view of a report's insights (pure; issue 20): what each says, its evidence
and whether a reviewer may still accept or reject it, or undo the decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.reviews import StoredInsight
from adapter.ui.report_view import label
from mappings.review import INSIGHT_REVIEWS, evidence


@dataclass(frozen=True)
class InsightView:
    """One insight row of the review page: `kind` (Follow-up, Critical result, ...), `what` it
    says, `details` (name, value) pairs, its evidence quote, and whether it awaits a decision."""

    id: str
    resource_type: str
    version: int
    status: str
    kind: str
    what: str
    details: tuple[tuple[str, str], ...]
    quote: str
    found: bool
    awaiting: bool
    undoable: bool = False
    """A reviewer's decision that Undo can take back (the version before awaits review)."""


def _timing(body: dict[str, Any]) -> list[tuple[str, str]]:
    """A follow-up's due date or period and whether it is conditional."""
    found = []
    if "occurrenceDateTime" in body:
        found.append(("Due", str(body["occurrenceDateTime"])))
    period = body.get("occurrencePeriod") or {}
    if period:
        found.append(("Due", f"{period.get('start', '?')} to {period.get('end', '?')}"))
    if body.get("asNeededBoolean"):
        found.append(("Conditional", "yes (as needed)"))
    return found


def details(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The facts an insight states beyond its code: modality, timing, recipient, notes."""
    found: list[tuple[str, str]] = []
    modalities = [
        str(c.get("code"))
        for c in (body.get("code") or {}).get("coding") or []
        if str(c.get("system", "")).endswith("/DCM")
    ]
    if modalities:
        found.append(("Modality", ", ".join(modalities)))
    found.extend(_timing(body))
    recipients = [str(r.get("display")) for r in body.get("recipient") or [] if r.get("display")]
    if recipients:
        found.append(("Recipient", ", ".join(recipients)))
    if body.get("detail"):
        found.append(("Detail", str(body["detail"])))
    found.extend(("Note", str(n.get("text"))) for n in body.get("note") or [] if n.get("text"))
    return tuple(found)


def _without_kind(text: str, kind: str) -> str:
    """`text` less a leading `kind:` (a Flag's code text starts with it; the heading adds it)."""
    prefix = f"{kind}:"
    return text[len(prefix) :].strip() if text.lower().startswith(prefix.lower()) else text


def insight_view(stored: StoredInsight) -> InsightView:
    """The review page's row of one stored insight."""
    body = stored.body
    subs = evidence(body)
    resource_type = str(body["resourceType"])
    kind = INSIGHT_REVIEWS[resource_type].kind
    said = label(body.get("code")) or label((body.get("reasonCode") or [None])[0])
    what = _without_kind(said, kind) or resource_type
    return InsightView(
        id=str(body["id"]),
        resource_type=resource_type,
        version=stored.version,
        status=str(body.get("status")),
        kind=kind,
        what=what,
        details=details(body),
        quote=str((subs.get("quote") or [""])[0]),
        found=isinstance((subs.get("start") or [None])[0], int),
        awaiting=stored.awaiting,
        undoable=stored.undoable,
    )


def evidence_spans(bodies: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(start, end, id) of each resource's evidence offsets, for the highlighted text."""
    spans = []
    for body in bodies:
        subs = evidence(body)
        start, end = (subs.get("start") or [None])[0], (subs.get("end") or [None])[0]
        if isinstance(start, int) and isinstance(end, int):
            spans.append((start, end, str(body["id"])))
    return spans
