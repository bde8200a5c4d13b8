"""RADS categories a template Observation of the Bundle states already (issue 20 item 5: one
Observation per concept per report, never the same fact twice).

A RADS category of the insights step is stated already when a template Observation names the
same system in its code text ("BI-RADS final assessment category", "Highest ACR TI-RADS level",
"Breast density (ACR composition)"), states the same category as its value ("BI-RADS 4A: low
suspicion", 4, "b: scattered ...") and its evidence holds the category's evidence, and it is the
only category of that system inside that evidence: per-side categories stated together ("BI-RADS
right 2, left 4") are other facts than the template's one overall category and stay. The
template Observation then takes the verified codings of the RADS Observation it lacks
(`adopt_codings`: a mammogram's BI-RADS category, `mappings.rads_codes`).
"""

from __future__ import annotations

import re
from typing import Any

from mappings.fhir_out import evidence_offsets
from mappings.insights.model import RadsCategory

__all__ = ["adopt_codings", "stated_rads"]

Resource = dict[str, Any]
_PREFIX = re.compile(r"^(?:TR|LR-)")
"""Written before a TI-RADS or LI-RADS category ("TR4", "LR-5")."""


def _system_word(system: str) -> str:
    """What a template Observation's code text names for `system` ("density" for density)."""
    return "density" if system.endswith("density") else system


def _value_text(resource: Resource) -> str:
    if "valueInteger" in resource:
        return str(resource["valueInteger"])
    concept = resource.get("valueCodeableConcept") or {}
    return str(concept.get("text") or resource.get("valueString") or "")


def _states(resource: Resource, rads: RadsCategory) -> bool:
    code_text = str((resource.get("code") or {}).get("text") or "")
    if _system_word(rads.system).casefold() not in code_text.casefold():
        return False
    core = re.escape(_PREFIX.sub("", rads.category))
    return re.search(rf"(?<![\w-]){core}(?![\w-])", _value_text(resource), re.I) is not None


def stated_rads(bundle: Resource, rads: tuple[RadsCategory, ...]) -> dict[int, str]:
    """For each index of `rads` a template Observation of `bundle` states already, that
    Observation's id."""
    observations = [
        (entry["resource"], offsets)
        for entry in bundle.get("entry", [])
        if entry["resource"]["resourceType"] == "Observation"
        and (offsets := evidence_offsets(entry["resource"])) is not None
    ]
    stated: dict[int, str] = {}
    for index, category in enumerate(rads):
        start, end = category.evidence.start, category.evidence.end
        for resource, (low, high) in observations:
            inside = [
                other
                for other in rads
                if other.system == category.system and low <= other.evidence.start < high
            ]
            if low <= start and end <= high and len(inside) == 1 and _states(resource, category):
                stated[index] = resource["id"]
                break
    return stated


def adopt_codings(
    resource: Resource, code_codings: list[dict[str, Any]], value_codings: list[dict[str, Any]]
) -> None:
    """Give a template Observation that states a RADS category the codings of its `code` and
    `valueCodeableConcept` it has none of (a value other than a CodeableConcept is kept)."""
    code = resource.setdefault("code", {})
    if code_codings and not code.get("coding"):
        code["coding"] = code_codings
    concept = resource.get("valueCodeableConcept")
    if value_codings and concept is not None and not concept.get("coding"):
        concept["coding"] = value_codings
