"""The research table's insight columns (issue 20): a report's follow-up recommendations,
critical result, RADS categories and the largest size stated per finding, read from its
`Insights` and its Bundle. The codebook's meanings of these columns are here too.

Follow-up cells list one entry per recommendation, `;`-separated, in the same order in
`followup.modality`, `followup.due` and `followup.conditional`; likewise the insights step's
size Observations (findings no template holds) in `size.finding` and `size.largest_mm`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mappings import terminology as term
from mappings.insights.model import FollowUp, Insights
from mappings.review import template_of

Row = dict[str, Any]
LARGEST_SIZE = "largest_size_mm"  # the suffix of a finding's largest-size column
_MM_PER = {"mm": 1.0, "cm": 10.0}
INSIGHT_COLUMN_MEANINGS = {
    "followup.count": "how many follow-up recommendations the report makes (ServiceRequest)",
    "followup.modality": "each recommendation's DICOM modality (CT, MR, US, MG, CR, NM, PT), "
    "empty when none is stated; ';'-separated, one per recommendation",
    "followup.due": "each recommendation's due date (YYYY-MM-DD) or range (start/end) from the "
    "report's date; empty without a time frame; ';'-separated, one per recommendation",
    "followup.conditional": "each recommendation: true when conditional ('if clinically "
    "indicated'), else false; ';'-separated, one per recommendation",
    "critical": "true when the report states a finding of the critical-results list as "
    "present (a Flag), else false",
    "critical.findings": "the critical-list ids of those findings, ';'-separated",
    "size.finding": "each finding the report sizes that no template variable holds (the "
    "report's finding phrase, a size Observation); ';'-separated, one per finding",
    "size.largest_mm": "each of those findings' largest stated dimension in mm; "
    "';'-separated, one per finding, in the order of size.finding",
}
SIZE_TEMPLATE = ("insights", "size")  # template and variable of the insights step's sizes
RADS_MEANING = (
    "the category the report assigns in this scoring system, as the system writes it "
    "(side: prefix when stated; ';'-separated when several); no LOINC/RadElement code is "
    "verified for these categories: the Bundle's Observation codes only a mammogram's BI-RADS "
    "0-5 and breast density (SNOMED CT, mappings/rads_codes.py)"
)
LARGEST_SIZE_MEANING = "the largest stated dimension of the finding, in mm (its size components)"


def _due(followup: FollowUp) -> str:
    if followup.due is not None:
        return followup.due.isoformat()
    if followup.due_start is not None or followup.due_end is not None:
        start = followup.due_start.isoformat() if followup.due_start else ""
        end = followup.due_end.isoformat() if followup.due_end else ""
        return f"{start}/{end}"
    return ""


def insight_cells(insights: Insights) -> Row:
    """The follow-up, critical and RADS cells of one report's insights."""
    followups = insights.followups
    row: Row = {
        "followup.count": len(followups),
        "followup.modality": ";".join(f.modality or "" for f in followups),
        "followup.due": ";".join(_due(f) for f in followups),
        "followup.conditional": ";".join(str(f.conditional).lower() for f in followups),
        "critical": str(bool(insights.critical)).lower(),
        "critical.findings": ";".join(dict.fromkeys(c.finding for c in insights.critical)),
    }
    by_system: dict[str, list[str]] = {}
    for rads in insights.rads:
        category = f"{rads.side}:{rads.category}" if rads.side else rads.category
        by_system.setdefault(f"rads.{rads.system}", []).append(category)
    row.update({column: ";".join(dict.fromkeys(cats)) for column, cats in by_system.items()})
    return row


def _size_mm(component: dict[str, Any]) -> float | None:
    quantity = component.get("valueQuantity") or {}
    factor = _MM_PER.get(str(quantity.get("code")))
    value = quantity.get("value")
    if quantity.get("system") != term.UCUM or factor is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) * factor


def largest_sizes(resources: Iterable[dict[str, Any]], template_id: str, prefix: str = "") -> Row:
    """`VAR.largest_size_mm` per finding Observation of template `template_id` whose components
    state sizes (UCUM mm or cm); a report without size components gives none."""
    row: Row = {}
    for resource in resources:
        if resource.get("resourceType") != "Observation":
            continue
        ids = template_of(resource)
        sizes = [s for c in resource.get("component") or [] if (s := _size_mm(c)) is not None]
        if ids is None or ids[0] != template_id or not sizes:
            continue
        column = f"{prefix}{ids[1]}.{LARGEST_SIZE}"
        largest = max(sizes)
        row[column] = f"{largest:g}"
    return row


def insight_sizes(resources: Iterable[dict[str, Any]]) -> Row:
    """`size.finding` and `size.largest_mm` of the insights step's size Observations (evidence
    variable `size`, `code.text` the finding phrase), in Bundle order; empty cells when none."""
    findings: list[str] = []
    largest: list[str] = []
    for resource in resources:
        if resource.get("resourceType") != "Observation" or template_of(resource) != SIZE_TEMPLATE:
            continue
        sizes = [s for c in resource.get("component") or [] if (s := _size_mm(c)) is not None]
        findings.append(str((resource.get("code") or {}).get("text") or ""))
        largest.append(f"{max(sizes):g}" if sizes else "")
    return {"size.finding": ";".join(findings), "size.largest_mm": ";".join(largest)}


def insight_column_meaning(column: str) -> str | None:
    """What an insight column holds (None: not an insight column)."""
    if column in INSIGHT_COLUMN_MEANINGS:
        return INSIGHT_COLUMN_MEANINGS[column]
    if column.startswith("rads."):
        return f"{column.removeprefix('rads.')}: {RADS_MEANING}"
    if column.endswith(f".{LARGEST_SIZE}"):
        return LARGEST_SIZE_MEANING
    return None
