"""The one table of FHIR search parameters radbridge serves, and what each indexes (pure).

`SEARCH_PARAMETERS` names, per resource type served, every search parameter with its FHIR type,
the official R4 definition it implements and where its values live. Three readers share it and
nothing else: the search routes (`adapter/api/fhir.py`: a parameter not listed here is
unknown), the store's index (`index_terms`: what a resource puts in `search_tokens` and the date
columns when it is written) and the CapabilityStatement (`/fhir/metadata`). A parameter cannot be
served without being declared, nor declared without being served.

Where values live (`SearchParam.column`):
- `status`, `subject` (a `Type/id` reference), `id`, `last_updated`: columns of `resources`;
- `date`: the `[date_start, date_end)` range columns, from the first element of `elements` the
  resource has (a dateTime, instant or Period);
- None: rows of `search_tokens` (resource, parameter, system, code), one per coding of a
  CodeableConcept, per Identifier (system, value) or per Reference (type, id; the version of a
  versioned reference is dropped).

Definitions verified against public CapabilityStatements that cite the R4 SearchParameter
canonicals (Resource-id, Resource-lastUpdated, clinical-code/-date/-identifier/-patient,
Observation-*, DiagnosticReport-*, Provenance-*, Patient-identifier, Device-identifier).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from mappings.errors import FhirMappingError
from mappings.fhir_dates import EARLIEST, LATEST, fhir_range

SP = "http://hl7.org/fhir/SearchParameter"
MAX_TOKEN_CHARS = 255
"""System and code are indexed up to this length (the store's columns); a longer identifier
value is not searchable (reported by `index_terms`' caller)."""


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type."""

    name: str
    type: str  # FHIR SearchParamType: token | reference | date
    definition: str
    documentation: str
    column: str | None = None  # status | subject | id | last_updated | date; None: search_tokens
    elements: tuple[str, ...] = ()  # dotted element paths indexed (token/reference/date)
    targets: tuple[str, ...] = ()  # reference parameters: the resource types referenced
    system: str | None = None  # a `code` element's implicit code system (status)


def _id() -> SearchParam:
    return SearchParam(
        "_id", "token", f"{SP}/Resource-id", "The logical id of the resource", column="id"
    )


def _last_updated() -> SearchParam:
    return SearchParam(
        "_lastUpdated",
        "date",
        f"{SP}/Resource-lastUpdated",
        "When radbridge last wrote the resource (meta.lastUpdated)",
        column="last_updated",
    )


_SUBJECT_TYPES = ("Patient", "Group", "Device", "Location")


def _subject_patient_date(resource_type: str, what: str, when: str) -> tuple[SearchParam, ...]:
    """subject, patient and date (effective[x]) of a clinical resource type."""
    return (
        SearchParam(
            "subject",
            "reference",
            f"{SP}/{resource_type}-subject",
            f"The subject of the {what}",
            column="subject",
            targets=_SUBJECT_TYPES,
        ),
        SearchParam(
            "patient",
            "reference",
            f"{SP}/clinical-patient",
            f"The subject of the {what} when it is a Patient",
            column="subject",
            targets=("Patient",),
        ),
        SearchParam(
            "date",
            "date",
            f"{SP}/clinical-date",
            when,
            column="date",
            elements=("effectiveDateTime", "effectivePeriod", "effectiveInstant"),
        ),
    )


SEARCH_PARAMETERS: dict[str, tuple[SearchParam, ...]] = {
    "Observation": (
        _id(),
        _last_updated(),
        SearchParam(
            "status",
            "token",
            f"{SP}/Observation-status",
            "preliminary (AI-extracted, awaiting review), final (accepted or corrected by a "
            "clinician) or entered-in-error (rejected, or retired by a superseding report); "
            "without this parameter entered-in-error and cancelled values are left out",
            column="status",
            system="http://hl7.org/fhir/observation-status",
        ),
        SearchParam(
            "category",
            "token",
            f"{SP}/Observation-category",
            "The classification (observation-category imaging)",
            elements=("category",),
        ),
        SearchParam(
            "code",
            "token",
            f"{SP}/clinical-code",
            "Any coding of the finding's code (system|code, or code in any system)",
            elements=("code",),
        ),
        *_subject_patient_date(
            "Observation",
            "Observation",
            "When the finding was observed (effective[x]: the report's observation time)",
        ),
        SearchParam(
            "identifier",
            "token",
            f"{SP}/clinical-identifier",
            "A business identifier of the Observation",
            elements=("identifier",),
        ),
        SearchParam(
            "derived-from",
            "reference",
            f"{SP}/Observation-derived-from",
            "The earlier Observation of the same finding this one follows (patient timeline)",
            elements=("derivedFrom",),
            targets=("Observation",),
        ),
        SearchParam(
            "device",
            "reference",
            f"{SP}/Observation-device",
            "The Device (model or rules stage) that produced the value",
            elements=("device",),
            targets=("Device",),
        ),
    ),
    "DiagnosticReport": (
        _id(),
        _last_updated(),
        SearchParam(
            "identifier",
            "token",
            f"{SP}/clinical-identifier",
            "A business identifier of the report (e.g. the accession number)",
            elements=("identifier",),
        ),
        SearchParam(
            "status",
            "token",
            f"{SP}/DiagnosticReport-status",
            "The status of the report (preliminary, final, corrected …)",
            column="status",
            system="http://hl7.org/fhir/diagnostic-report-status",
        ),
        *_subject_patient_date(
            "DiagnosticReport",
            "report",
            "The clinically relevant time of the report (effective[x])",
        ),
        SearchParam(
            "code",
            "token",
            f"{SP}/clinical-code",
            "Any coding of the report's code (e.g. the LOINC of the procedure)",
            elements=("code",),
        ),
        SearchParam(
            "category",
            "token",
            f"{SP}/DiagnosticReport-category",
            "The service category (v2-0074 RAD)",
            elements=("category",),
        ),
        SearchParam(
            "result",
            "reference",
            f"{SP}/DiagnosticReport-result",
            "An Observation the report lists in result",
            elements=("result",),
            targets=("Observation",),
        ),
    ),
    "Provenance": (
        _id(),
        _last_updated(),
        SearchParam(
            "target",
            "reference",
            f"{SP}/Provenance-target",
            "A resource the Provenance is about (a versioned reference matches its resource)",
            elements=("target",),
        ),
        SearchParam(
            "agent",
            "reference",
            f"{SP}/Provenance-agent",
            "Who took part: the extracting Device or the reviewing Practitioner",
            elements=("agent.who",),
        ),
        SearchParam(
            "entity",
            "reference",
            f"{SP}/Provenance-entity",
            "What the activity used: the source DiagnosticReport or the revised Observation",
            elements=("entity.what",),
        ),
        SearchParam(
            "recorded",
            "date",
            f"{SP}/Provenance-recorded",
            "When the activity was recorded",
            column="date",
            elements=("recorded",),
        ),
    ),
    "Patient": (
        _id(),
        _last_updated(),
        SearchParam(
            "identifier",
            "token",
            f"{SP}/Patient-identifier",
            "A patient identifier (system|value)",
            elements=("identifier",),
        ),
    ),
    "Device": (
        _id(),
        _last_updated(),
        SearchParam(
            "identifier",
            "token",
            f"{SP}/Device-identifier",
            "The model's identifier (its SHA-256)",
            elements=("identifier",),
        ),
    ),
}


def search_param(resource_type: str, name: str) -> SearchParam | None:
    """The declared parameter `name` of `resource_type`, or None."""
    return next((p for p in SEARCH_PARAMETERS.get(resource_type, ()) if p.name == name), None)


def date_param(resource_type: str) -> SearchParam | None:
    """The parameter stored in the date columns of `resource_type` (at most one per type)."""
    found = [p for p in SEARCH_PARAMETERS.get(resource_type, ()) if p.column == "date"]
    return found[0] if found else None


@dataclass(frozen=True)
class IndexTerms:
    """What one resource contributes to the search index."""

    tokens: frozenset[tuple[str, str, str]]  # (parameter, system or type, code or id)
    date_start: datetime | None
    date_end: datetime | None
    skipped: int  # values longer than MAX_TOKEN_CHARS (not searchable)


def _walk(value: Any, path: list[str]) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, path)
        return
    if not path:
        yield value
        return
    if isinstance(value, dict) and path[0] in value:
        yield from _walk(value[path[0]], path[1:])


def reference_parts(reference: str) -> tuple[str, str] | None:
    """(type, id) of a relative literal reference `Type/id` or `Type/id/_history/vid`; None for
    anything else (absolute URLs, `urn:uuid:`, contained `#id`)."""
    parts = reference.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) != 2 or not parts[0][:1].isupper() or not parts[0].isalpha() or not parts[1]:
        return None
    return parts[0], parts[1]


def _token_values(param: SearchParam, item: Any) -> Iterator[tuple[str, str]]:
    if not isinstance(item, dict):
        return
    if param.type == "reference":
        parts = reference_parts(str(item.get("reference") or ""))
        if parts is not None:
            yield parts
    elif "coding" in item:  # CodeableConcept
        for coding in item.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                yield str(coding.get("system") or ""), str(coding["code"])
    elif "value" in item and param.name == "identifier":  # Identifier
        yield str(item.get("system") or ""), str(item["value"])
    elif item.get("code"):  # Coding
        yield str(item.get("system") or ""), str(item["code"])


def _date_range(
    resource: dict[str, Any], param: SearchParam, zone: tzinfo
) -> tuple[datetime, datetime] | None:
    for element in param.elements:
        value = resource.get(element)
        try:
            if isinstance(value, str):
                return fhir_range(value, zone)
            if isinstance(value, dict):  # Period: an open end is open
                start = value.get("start")
                end = value.get("end")
                if not isinstance(start, str) and not isinstance(end, str):
                    continue
                low = fhir_range(start, zone)[0] if isinstance(start, str) else EARLIEST
                high = fhir_range(end, zone)[1] if isinstance(end, str) else LATEST
                return low, high
        except FhirMappingError:
            return None  # an unreadable date is not searchable by date
    return None


def index_terms(resource: dict[str, Any], zone: tzinfo = UTC) -> IndexTerms:
    """The tokens and date range `resource` is found by (see the module docstring)."""
    resource_type = str(resource.get("resourceType"))
    tokens: set[tuple[str, str, str]] = set()
    skipped = 0
    dates: tuple[datetime, datetime] | None = None
    for param in SEARCH_PARAMETERS.get(resource_type, ()):
        if param.column == "date":
            dates = _date_range(resource, param, zone)
            continue
        if param.column is not None:
            continue
        for element in param.elements:
            for item in _walk(resource, element.split(".")):
                for system, code in _token_values(param, item):
                    if len(system) > MAX_TOKEN_CHARS or len(code) > MAX_TOKEN_CHARS:
                        skipped += 1
                    else:
                        tokens.add((param.name, system, code))
    return IndexTerms(
        frozenset(tokens), dates[0] if dates else None, dates[1] if dates else None, skipped
    )
