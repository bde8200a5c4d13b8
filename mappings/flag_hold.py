"""Which critical-result Flags a destination does not get yet (pure; README "Insights",
`RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW`).

By default a Flag goes out at once (time matters). With the setting on, a Flag goes out only
once a reviewer accepted it (an `active` Flag with a reviewer's accept Provenance in the
Bundle); a rejected (`entered-in-error`) Flag goes out only when the destination got it before
(it then learns the retraction), else never. Everything else of the report (Observations,
follow-ups, the Communication that the result was passed on, mismatches) goes out as usual.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

Resource = dict[str, Any]


def _accepted(resources: Iterable[Resource]) -> set[str]:
    """`Type/id` of every resource a reviewer's Provenance accepted (any version)."""
    found = set()
    for resource in resources:
        if resource.get("resourceType") != "Provenance" or "activity" not in resource:
            continue
        if "accept" not in {str(r.get("text")) for r in resource.get("reason") or []}:
            continue
        for target in resource.get("target") or []:
            found.add(str(target.get("reference", "")).split("/_history", 1)[0])
    return found


def held_flags(resources: Iterable[Resource], sent_before: Container[str]) -> frozenset[str]:
    """`Flag/<id>` of the Flags among `resources` (a Bundle's) held until review: active and
    not accepted, or rejected and not in `sent_before` (the `Type/id` the destination got)."""
    resources = list(resources)
    accepted = _accepted(resources)
    held = set()
    for resource in resources:
        if resource.get("resourceType") != "Flag":
            continue
        key = f"Flag/{resource.get('id')}"
        status = resource.get("status")
        if status == "entered-in-error":
            if key not in sent_before:
                held.add(key)
        elif key not in accepted:
            held.add(key)
    return frozenset(held)


def provenance_targets(resource: Resource) -> list[str]:
    """A Provenance's targets as `Type/id` (versions dropped)."""
    return [
        str(t.get("reference", "")).split("/_history", 1)[0] for t in resource.get("target") or []
    ]


def without_targets(provenance: Resource, held: Container[str]) -> Resource:
    """The extraction Provenance without its targets that are held (they would dangle)."""
    kept = [
        t
        for t in provenance.get("target") or []
        if str(t.get("reference", "")).split("/_history", 1)[0] not in held
    ]
    return {**provenance, "target": kept}
