"""The FHIR API's own resources (pure): searchset and history Bundles, their paging links, and the
CapabilityStatement.

Every `fullUrl` and link is absolute: `base` is this server's FHIR base URL (RADBRIDGE_PUBLIC_URL
behind a proxy, else the request's own) ending in `/fhir`. A searchset's self link repeats only
the parameters that were applied (FHIR R4 search: what the server did, not what was asked);
parameters ignored under lenient handling are named in an OperationOutcome entry
(`search.mode` `outcome`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from mappings.media_types import FHIR_JSON
from mappings.search_params import SEARCH_PARAMETERS
from mappings.search_query import HistoryQuery, SearchQuery

FHIR_VERSION = "4.0.1"
INTERACTION_ORDER = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
Resource = dict[str, Any]


def page_url(base: str, path: str, used: Sequence[tuple[str, str]], count: int, offset: int) -> str:
    """`base/path?` the applied parameters, then `_count` and `_offset`."""
    query = [*used, ("_count", str(count)), ("_offset", str(offset))]
    return f"{base}/{path}?{urlencode(query, quote_via=quote, safe=':|,/')}"


def _links(
    base: str, path: str, used: Sequence[tuple[str, str]], count: int, offset: int, total: int
) -> list[dict[str, str]]:
    links = [{"relation": "self", "url": page_url(base, path, used, count, offset)}]
    if count > 0 and offset + count < total:
        links.append({"relation": "next", "url": page_url(base, path, used, count, offset + count)})
    if count > 0 and offset > 0:
        previous = max(0, offset - count)
        links.append({"relation": "previous", "url": page_url(base, path, used, count, previous)})
    return links


def _outcome_entry(ignored: Sequence[str]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "warning", "code": "not-supported", "diagnostics": text}
                for text in ignored
            ],
        },
        "search": {"mode": "outcome"},
    }


def searchset(
    base: str, query: SearchQuery, total: int, found: Sequence[Resource]
) -> dict[str, Any]:
    """The searchset Bundle of one page of `query`'s matches (`total` over all pages)."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in found
    ]
    if query.ignored:
        entries.append(_outcome_entry(query.ignored))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": _links(base, query.resource_type, query.used, query.count, query.offset, total),
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    base: str,
    resource_type: str,
    resource_id: str,
    query: HistoryQuery,
    total: int,
    versions: Sequence[Resource],
) -> dict[str, Any]:
    """The history Bundle of one resource: `versions` newest first, each with the PUT that
    wrote it and its ETag (`W/"<versionId>"`)."""
    path = f"{resource_type}/{resource_id}/_history"
    entries: list[dict[str, Any]] = []
    for version in versions:
        meta = version.get("meta") or {}
        version_id = str(meta.get("versionId", ""))
        entries.append(
            {
                "fullUrl": f"{base}/{resource_type}/{resource_id}",
                "resource": version,
                "request": {"method": "PUT", "url": f"{resource_type}/{resource_id}"},
                "response": {
                    "status": "201 Created" if version_id == "1" else "200 OK",
                    "etag": f'W/"{version_id}"',
                    "lastModified": meta.get("lastUpdated"),
                },
            }
        )
    bundle: dict[str, Any] = {  # no outcome entry: a history entry is a request and response
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": _links(base, path, query.used, query.count, query.offset, total),
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def capability_statement(
    base: str,
    interactions: Mapping[str, Mapping[str, str]],
    *,
    software_version: str,
    date: str,
    security: str,
) -> dict[str, Any]:
    """The CapabilityStatement of this instance: for each resource type, the interactions served
    (`interactions`: type -> interaction code -> documentation, '' for none) and, with
    search-type, the parameters `SEARCH_PARAMETERS` declares for it."""
    resources = []
    for resource_type in sorted(interactions):
        served = interactions[resource_type]
        codes = sorted(served, key=INTERACTION_ORDER.index)
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [
                {"code": code, **({"documentation": served[code]} if served[code] else {})}
                for code in codes
            ],
            "versioning": "versioned" if "vread" in served else "no-version",
            "readHistory": "vread" in served,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        if "search-type" in served:
            entry["searchParam"] = [
                {
                    "name": param.name,
                    "definition": param.definition,
                    "type": param.type,
                    "documentation": param.documentation,
                }
                for param in SEARCH_PARAMETERS[resource_type]
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "name": "RadbridgeFhirApi",
        "title": "radbridge FHIR API",
        "status": "active",
        "experimental": False,
        "date": date,
        "publisher": "radbridge",
        "description": "Coded FHIR R4 Observations extracted from radiology reports, with their "
        "DiagnosticReport, Provenance, Device and Patient, for pull and review. Generated from "
        "the routes this instance serves.",
        "kind": "instance",
        "software": {"name": "radbridge", "version": software_version},
        "implementation": {"description": "radbridge FHIR API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", FHIR_JSON],
        "rest": [
            {
                "mode": "server",
                "documentation": "Searches follow FHIR R4 search: comma = OR, a repeated "
                "parameter = AND; an unknown parameter is ignored and left out of the self link, "
                "or refused with 400 under `Prefer: handling=strict`; an unsupported modifier or "
                "prefix is always refused. Without a status parameter, entered-in-error and "
                "cancelled resources are left out of searches (read and vread still serve them). "
                "Paging: `_count` (default 100, at most 1000) and `next` links. "
                "Reports are accepted as jobs: POST [base]/DiagnosticReport or a Bundle to "
                "POST [base] answers 202 with Location /jobs/{id}.",
                "security": {"cors": False, "description": security},
                "resource": resources,
            }
        ],
    }
