"""The FHIR router: write (`POST /fhir/DiagnosticReport`, `POST /fhir` with a Bundle: accepted
as jobs) and read, for every resource type `mappings.search_params.SEARCH_PARAMETERS` lists: read
(`GET /fhir/{type}/{id}`, with ETag and Last-Modified), vread (`…/_history/{vid}`), instance
history (`…/_history`) and search (`GET /fhir/{type}?…`, `POST /fhir/{type}/_search` with a
form body). Each route carries its FHIR interaction in `openapi_extra` (`x-fhir-type`,
`x-fhir-interaction`); `GET /fhir/metadata` builds the CapabilityStatement from the routes the
app actually serves and the same parameter table the searches read, so the two cannot drift.
`/fhir/metadata` needs no API key (clients read it to discover the server, as FHIR clients do);
everything else takes the app's authentication.

Full URLs and links are absolute, on RADBRIDGE_PUBLIC_URL when set (behind a proxy), else on
the request's own base URL. `_format` other than JSON is answered 406; `_pretty=true` indents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from adapter import fhir_queries
from adapter.api.context import AUTH, ApiContext, Context, RequestBody, api_context, parse_json
from adapter.api.errors import ApiError, fhir_json, operation_outcome
from adapter.ingest import INLINE_BODY_BYTES, fhir_messages
from adapter.settings import Settings
from adapter.store.messages import Incoming, field_problem
from mappings.errors import MessageRejected
from mappings.fhir_in import report_keys_from_fhir
from mappings.fhir_responses import capability_statement, history_bundle, searchset
from mappings.media_types import FHIR_JSON, FHIR_JSON_FORMATS, FORM
from mappings.search_params import SEARCH_PARAMETERS
from mappings.search_query import parse_history, parse_search, strict_handling

DEFAULT_PAGE = 100  # searchset page size without _count
MAX_PAGE = 1000
MAX_SEARCH_FORM_BYTES = 64 * 1024
FHIR_TYPE, FHIR_INTERACTION = "x-fhir-type", "x-fhir-interaction"


def fhir_interaction(resource_type: str, interaction: str) -> dict[str, Any]:
    """The `openapi_extra` that marks a route as a FHIR interaction for `/fhir/metadata`."""
    return {FHIR_TYPE: resource_type, FHIR_INTERACTION: interaction}


def served_interactions(routes: Sequence[Any]) -> dict[str, dict[str, str]]:
    """Resource type -> interaction -> documentation, read from the marked routes served (those
    of included routers and mounts too)."""
    found: dict[str, dict[str, str]] = {}
    for route in routes:
        extra = getattr(route, "openapi_extra", None) or {}
        if isinstance(route, APIRoute) and FHIR_INTERACTION in extra:
            found.setdefault(extra[FHIR_TYPE], {})[extra[FHIR_INTERACTION]] = str(
                route.description or ""
            ).strip()
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None and not isinstance(route, APIRoute):  # an included router
            for kind, served in served_interactions(inner).items():
                found.setdefault(kind, {}).update(served)
    return found


def fhir_base(request: Request, settings: Settings) -> str:
    """This server's FHIR base URL: RADBRIDGE_PUBLIC_URL + /fhir, else the request's."""
    root = settings.public_url or str(request.base_url)
    return root.rstrip("/") + "/fhir"


def _pretty(request: Request) -> bool:
    """`_pretty=true`; 406 when `_format` asks for anything but JSON."""
    for value in request.query_params.getlist("_format"):
        if value.split(";")[0].strip().lower() not in FHIR_JSON_FORMATS:
            raise HTTPException(406, "only JSON is served (_format json or application/fhir+json)")
    return request.query_params.get("_pretty", "").lower() == "true"


def fhir_response(
    body: dict[str, Any], *, pretty: bool = False, headers: dict[str, str] | None = None
) -> Response:
    """A FHIR JSON response."""
    text = json.dumps(body, ensure_ascii=False, indent=2 if pretty else None)
    return Response(text.encode(), media_type=FHIR_JSON, headers=headers)


def _version_headers(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta") or {}
    headers = {}
    if "versionId" in meta:
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    if "lastUpdated" in meta:
        moment = datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00"))
        headers["Last-Modified"] = format_datetime(moment.astimezone(UTC), usegmt=True)
    return headers


def _read_fhir(
    context: ApiContext, body: bytes, expected: tuple[str, ...]
) -> tuple[list[tuple[int | None, Incoming]], int]:
    """Parse and validate one FHIR body: (the messages to store, `fhir_messages`; reports).
    A rejection's status is its class's (`MessageRejected.http_status`)."""
    resource = parse_json(body)
    if not isinstance(resource, dict) or resource.get("resourceType") not in expected:
        raise ApiError(400, f"expected resourceType {' or '.join(expected)}")
    try:  # checked, narratives not read: the worker reads them (memory, issue 25)
        keys = report_keys_from_fhir(resource, default_language=context.settings.default_language)
    except MessageRejected as exc:
        context.counters["rejected"] += 1
        raise ApiError(exc.http_status, f"{exc.reason}: {exc.detail}", exc.issue_code) from None
    messages = fhir_messages(body, resource, keys, FHIR_JSON)
    for _, item in messages:
        unstorable = field_problem(item)
        if unstorable is not None:
            context.counters["rejected"] += 1
            code = "too-long" if unstorable.limit is not None else None
            raise ApiError(400, f"a report's id or identifier {unstorable.problem}", code)
    return messages, len(keys)


def _read_large_fhir(
    context: ApiContext, body: bytes, expected: tuple[str, ...]
) -> tuple[list[tuple[int | None, Incoming]], int]:
    with context.one_large_body:
        return _read_fhir(context, body, expected)


def _accepted(text: str) -> dict[str, Any]:
    return operation_outcome(text, "informational", "information")


async def _accept_fhir(context: ApiContext, body: bytes, expected: tuple[str, ...]) -> JSONResponse:
    """Store a DiagnosticReport or a Bundle's reports as jobs: 202 with the job ids."""
    context.counters["received"] += 1
    if len(body) > INLINE_BODY_BYTES:  # off the loop the MLLP listener shares
        messages, reports = await run_in_threadpool(_read_large_fhir, context, body, expected)
    else:
        messages, reports = _read_fhir(context, body, expected)
    items = [item for _, item in messages]
    results = await run_in_threadpool(context.store.accept_many, items)
    context.counters["acked"] += 1
    for result in results:
        if not result.duplicate and context.on_accepted is not None:
            context.on_accepted(result.message_id)
    if len(results) == 1:
        (result,) = results
        duplicate = " (duplicate)" if result.duplicate else ""
        text = f"accepted as job {result.message_id} ({reports} report(s)){duplicate}"
        return fhir_json(_accepted(text), 202, {"Location": f"/jobs/{result.message_id}"})
    # a Bundle of several reports: one job per DiagnosticReport, each in an issue of its own
    outcome = _accepted(
        f"accepted as {len(results)} jobs, one per DiagnosticReport ({reports} report(s))"
    )
    outcome["issue"] += [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"job {result.message_id}{' (duplicate)' if result.duplicate else ''}",
            "expression": [f"Bundle.entry[{entry}].resource"],
        }
        for (entry, _), result in zip(messages, results, strict=True)
    ]
    return fhir_json(outcome, 202)


router = APIRouter()


@router.post(
    "/fhir/DiagnosticReport",
    dependencies=AUTH,
    status_code=202,
    description="Accepted as a job (202, Location /jobs/{id}), not stored as sent: "
    "radbridge extracts it and serves the resulting DiagnosticReport and Observations",
    openapi_extra=fhir_interaction("DiagnosticReport", "create"),
)
async def post_diagnostic_report(body: RequestBody, context: Context) -> JSONResponse:
    return await _accept_fhir(context, body, ("DiagnosticReport",))


@router.post("/fhir", dependencies=AUTH, status_code=202)
async def post_bundle(body: RequestBody, context: Context) -> JSONResponse:
    return await _accept_fhir(context, body, ("Bundle",))


@router.get("/fhir/metadata", summary="CapabilityStatement (no API key needed)")
def metadata(request: Request, context: Context) -> Response:
    pretty = _pretty(request)
    settings = context.settings
    security = (
        "API key: X-API-Key: <key> or Authorization: Bearer <key>"
        if settings.api_key is not None
        else "No authentication configured (RADBRIDGE_API_KEY is unset: development only)"
    )
    statement = capability_statement(
        fhir_base(request, settings),
        served_interactions(request.app.routes),
        software_version=str(request.app.version),
        date=context.started,
        security=security,
    )
    return fhir_response(statement, pretty=pretty)


def _run_search(request: Request, resource_type: str, items: list[tuple[str, str]]) -> Response:
    pretty = _pretty(request)
    context = api_context(request)
    base = fhir_base(request, context.settings)
    query = parse_search(
        resource_type,
        items,
        strict=strict_handling(request.headers.get("prefer")),
        base_url=base,
        zone=context.settings.zone(),
        default_count=DEFAULT_PAGE,
        max_count=MAX_PAGE,
    )
    total, found = fhir_queries.search(context.store, query)
    return fhir_response(searchset(base, query, total, found), pretty=pretty)


async def _search_form(request: Request) -> list[tuple[str, str]]:
    """A POST search's parameters: the query's, then the form body's (415 unless a form, 413
    above MAX_SEARCH_FORM_BYTES)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM:
        raise HTTPException(415, "a POST search takes application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SEARCH_FORM_BYTES:
            raise HTTPException(413, f"search form larger than {MAX_SEARCH_FORM_BYTES} bytes")
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "the search form is not UTF-8") from None
    return [*request.query_params.multi_items(), *form]


def _type_endpoints(resource_type: str) -> list[tuple[str, str, Callable[..., Any], str, str]]:
    """search (GET and POST), read, vread and history of one resource type: (path, method,
    endpoint, interaction, summary)."""

    def search_get(request: Request) -> Response:
        return _run_search(request, resource_type, list(request.query_params.multi_items()))

    async def search_post(request: Request) -> Response:
        items = await _search_form(request)
        return await run_in_threadpool(_run_search, request, resource_type, items)

    def read(request: Request, resource_id: str, context: Context) -> Response:
        pretty = _pretty(request)
        resource = context.store.get_resource(resource_type, resource_id, served=True)
        if resource is None:
            raise HTTPException(404, f"{resource_type}/{resource_id} not found")
        return fhir_response(resource, pretty=pretty, headers=_version_headers(resource))

    def vread(request: Request, resource_id: str, version_id: str, context: Context) -> Response:
        pretty = _pretty(request)
        found = None
        if version_id.isascii() and version_id.isdigit() and len(version_id) <= 18:
            found = fhir_queries.read_version(
                context.store, resource_type, resource_id, int(version_id)
            )
        if found is None:
            raise HTTPException(
                404, f"{resource_type}/{resource_id}/_history/{version_id} not found"
            )
        return fhir_response(found, pretty=pretty, headers=_version_headers(found))

    def history(request: Request, resource_id: str, context: Context) -> Response:
        pretty = _pretty(request)
        query = parse_history(
            list(request.query_params.multi_items()),
            strict=strict_handling(request.headers.get("prefer")),
            default_count=DEFAULT_PAGE,
            max_count=MAX_PAGE,
        )
        found = fhir_queries.history(context.store, resource_type, resource_id, query)
        if found is None:
            raise HTTPException(404, f"{resource_type}/{resource_id} not found")
        total, versions = found
        base = fhir_base(request, context.settings)
        bundle = history_bundle(base, resource_type, resource_id, query, total, versions)
        return fhir_response(bundle, pretty=pretty)

    return [
        ("", "GET", search_get, "search-type", f"Search {resource_type}"),
        ("/_search", "POST", search_post, "search-type", f"Search {resource_type} (form)"),
        ("/{resource_id}", "GET", read, "read", f"Read {resource_type}"),
        ("/{resource_id}/_history", "GET", history, "history-instance", "Instance history"),
        ("/{resource_id}/_history/{version_id}", "GET", vread, "vread", "Read a version"),
    ]


def _add_type_routes(into: APIRouter) -> None:
    for resource_type in SEARCH_PARAMETERS:
        for path, method, endpoint, interaction, summary in _type_endpoints(resource_type):
            into.add_api_route(
                f"/fhir/{resource_type}{path}",
                endpoint,
                methods=[method],
                dependencies=AUTH,
                summary=summary,
                response_class=Response,
                openapi_extra=fhir_interaction(resource_type, interaction),
            )


_add_type_routes(router)
