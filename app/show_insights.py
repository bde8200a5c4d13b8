"""`radbridge show`'s insights table (issue 20): one row per follow-up (ServiceRequest),
critical result (Flag), communication (Communication) and mismatch (DetectedIssue) of a Bundle,
with its status (a reviewer's decision changes it) and evidence quote. RADS categories and the
size Observations of findings no template holds (`code.text` the finding phrase, its sizes as
components) are Observations: the Observations table shows them, once. The Observations table
shows a finding's stated side (`side_text`, the laterality on its body site) in its own column
and its grades with its value (`component_text`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.fhir_out import LATERALITY_EXTENSION
from mappings.review import evidence

Resource = dict[str, Any]
InsightRow = tuple[str, str, str, str, str]


def concept_text(concept: dict[str, Any] | None) -> str:
    """A concept as `display (system code)` of its first coding, else its text."""
    if not concept:
        return ""
    codings = concept.get("coding") or []
    if codings:
        first = codings[0]
        system = str(first.get("system", "")).rsplit("/", 1)[-1]
        return f"{first.get('display', '')} ({system} {first.get('code', '')})"
    return str(concept.get("text", ""))


def side_text(observation: Resource) -> str:
    """The side stated on an Observation's body site (its laterality), "" when none."""
    for extension in (observation.get("bodySite") or {}).get("extension") or []:
        if extension.get("url") == LATERALITY_EXTENSION:
            return concept_text(extension.get("valueCodeableConcept"))
    return ""


def component_text(component: Resource) -> str:
    """A component as `code: value`: a size with its unit, a grade's integer, else a concept."""
    quantity = component.get("valueQuantity")
    if quantity:
        value = f"{quantity.get('value')} {quantity.get('unit') or quantity.get('code') or ''}"
    elif "valueInteger" in component:
        value = str(component["valueInteger"])
    else:
        value = concept_text(component.get("valueCodeableConcept"))
    return f"{concept_text(component.get('code'))}: {value.strip()}"


def quote(resource: Resource) -> str:
    """The evidence quote of a resource ("" when none)."""
    return str((evidence(resource).get("quote") or [""])[0] or "")


def _followup(resource: Resource) -> tuple[str, str]:
    period = resource.get("occurrencePeriod") or {}
    when = resource.get("occurrenceDateTime") or "–".join(str(v) for v in period.values())
    detail = f"due {when}" if when else "no time frame"
    detail += ", conditional" if resource.get("asNeededBoolean") else ""
    return concept_text(resource.get("code")), detail


def _flag(resource: Resource) -> tuple[str, str]:
    return concept_text(resource.get("code")), ""


def _communication(resource: Resource) -> tuple[str, str]:
    names = ", ".join(str(r.get("display")) for r in resource.get("recipient", []))
    return (f"to {names}" if names else "communicated"), ""


def _mismatch(resource: Resource) -> tuple[str, str]:
    return concept_text(resource.get("code")), str(resource.get("detail", ""))


# what and detail of each insight resource type (a new insight type is one entry here)
DESCRIBE: dict[str, Callable[[Resource], tuple[str, str]]] = {
    "ServiceRequest": _followup,
    "Flag": _flag,
    "Communication": _communication,
    "DetectedIssue": _mismatch,
}
COLUMNS = ("resource", "what", "detail", "evidence", "status")


def insight_rows(bundle: dict[str, Any]) -> list[InsightRow]:
    """One row (COLUMNS) per insight of the Bundle, in Bundle order."""
    rows = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        describe = DESCRIBE.get(str(resource.get("resourceType")))
        if describe is None:
            continue
        what, detail = describe(resource)
        kind, status = str(resource["resourceType"]), str(resource.get("status"))
        rows.append((kind, what, detail, quote(resource), status))
    return rows
