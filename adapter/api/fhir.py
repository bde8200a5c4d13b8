"""The FHIR read side of the API (`install_fhir_routes`, called by `adapter.api.create_app`).

For every resource type `mappings.search_params.SEARCH_PARAMETERS` lists: read
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

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from adapter import fhir_queries
from adapter.settings import Settings
from adapter.store import Store
from mappings.fhir_responses import capability_statement, history_bundle, searchset
from mappings.search_params import SEARCH_PARAMETERS
from mappings.search_query import parse_history, parse_search, strict_handling

FHIR_JSON = "application/fhir+json"
DEFAULT_PAGE = 100  # searchset page size without _count
MAX_PAGE = 1000
MAX_SEARCH_FORM_BYTES = 64 * 1024
_JSON_FORMATS = ("json", "application/json", "application/fhir+json")
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
        if value.split(";")[0].strip().lower() not in _JSON_FORMATS:
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


def install_fhir_routes(
    app: FastAPI, settings: Settings, store: Store, auth: Sequence[Depends]
) -> None:
    """Add the FHIR read routes over `store` to `app` (as its own routes, so that the route list
    the CapabilityStatement reads is the app's); `auth`: the app's authentication."""
    started = datetime.now(UTC).isoformat(timespec="seconds")

    @app.get("/fhir/metadata", summary="CapabilityStatement (no API key needed)")
    def metadata(request: Request) -> Response:
        pretty = _pretty(request)
        security = (
            "API key: X-API-Key: <key> or Authorization: Bearer <key>"
            if settings.api_key is not None
            else "No authentication configured (RADBRIDGE_API_KEY is unset: development only)"
        )
        statement = capability_statement(
            fhir_base(request, settings),
            served_interactions(request.app.routes),
            software_version=str(request.app.version),
            date=started,
            security=security,
        )
        return fhir_response(statement, pretty=pretty)

    for resource_type in SEARCH_PARAMETERS:
        _add_type_routes(app, resource_type, settings, store, auth)


def _add_type_routes(
    app: FastAPI,
    resource_type: str,
    settings: Settings,
    store: Store,
    auth: Sequence[Depends],
) -> None:
    """search (GET and POST), read, vread and history of one resource type."""

    def run_search(request: Request, items: list[tuple[str, str]]) -> Response:
        pretty = _pretty(request)
        base = fhir_base(request, settings)
        query = parse_search(
            resource_type,
            items,
            strict=strict_handling(request.headers.get("prefer")),
            base_url=base,
            zone=settings.zone(),
            default_count=DEFAULT_PAGE,
            max_count=MAX_PAGE,
        )
        total, found = fhir_queries.search(store, query)
        return fhir_response(searchset(base, query, total, found), pretty=pretty)

    def search_get(request: Request) -> Response:
        return run_search(request, list(request.query_params.multi_items()))

    async def search_post(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
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
        items = [*request.query_params.multi_items(), *form]
        return await run_in_threadpool(run_search, request, items)

    def read(request: Request, resource_id: str) -> Response:
        pretty = _pretty(request)
        resource = store.get_resource(resource_type, resource_id, served=True)
        if resource is None:
            raise HTTPException(404, f"{resource_type}/{resource_id} not found")
        return fhir_response(resource, pretty=pretty, headers=_version_headers(resource))

    def vread(request: Request, resource_id: str, version_id: str) -> Response:
        pretty = _pretty(request)
        found = None
        if version_id.isascii() and version_id.isdigit() and len(version_id) <= 18:
            found = fhir_queries.read_version(store, resource_type, resource_id, int(version_id))
        if found is None:
            raise HTTPException(
                404, f"{resource_type}/{resource_id}/_history/{version_id} not found"
            )
        return fhir_response(found, pretty=pretty, headers=_version_headers(found))

    def history(request: Request, resource_id: str) -> Response:
        pretty = _pretty(request)
        query = parse_history(
            list(request.query_params.multi_items()),
            strict=strict_handling(request.headers.get("prefer")),
            default_count=DEFAULT_PAGE,
            max_count=MAX_PAGE,
        )
        found = fhir_queries.history(store, resource_type, resource_id, query)
        if found is None:
            raise HTTPException(404, f"{resource_type}/{resource_id} not found")
        total, versions = found
        base = fhir_base(request, settings)
        bundle = history_bundle(base, resource_type, resource_id, query, total, versions)
        return fhir_response(bundle, pretty=pretty)

    routes: list[tuple[str, str, Callable[..., Any], str, str]] = [
        ("", "GET", search_get, "search-type", f"Search {resource_type}"),
        ("/_search", "POST", search_post, "search-type", f"Search {resource_type} (form)"),
        ("/{resource_id}", "GET", read, "read", f"Read {resource_type}"),
        ("/{resource_id}/_history", "GET", history, "history-instance", "Instance history"),
        ("/{resource_id}/_history/{version_id}", "GET", vread, "vread", "Read a version"),
    ]
    for path, method, endpoint, interaction, summary in routes:
        app.add_api_route(
            f"/fhir/{resource_type}{path}",
            endpoint,
            methods=[method],
            dependencies=list(auth),
            summary=summary,
            response_class=Response,
            openapi_extra=fhir_interaction(resource_type, interaction),
        )
