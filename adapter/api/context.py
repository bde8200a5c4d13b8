"""What the API's routers share, held in `app.state.api` and given to routes by FastAPI's
`Depends`: the store, the settings, the HL7v2 ingest, the counters and serve's checks; the API
key check; the request body read within its size limit."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from adapter import json_body
from adapter.api.errors import ApiError
from adapter.ingest import Hl7Ingest
from adapter.settings import Environment, Settings
from adapter.store import Store

MAX_JSON_DEPTH = 100  # FHIR resources nest ~20 deep; Python's json recurses per level


@dataclass
class ApiContext:
    """The API's shared state (one per app)."""

    settings: Settings
    store: Store
    ingest: Hl7Ingest
    on_accepted: Callable[[int], None] | None = None
    queue_depth: Callable[[], int | None] | None = None
    broker_ready: Callable[[], bool] | None = None
    mllp_counters: dict[str, int] | None = None
    worker_ready: Callable[[], bool] | None = None
    reconcile_ready: Callable[[], bool] | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {"received": 0, "acked": 0, "rejected": 0}
    )
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    """When the app was built: the CapabilityStatement's date."""
    one_large_body: threading.Lock = field(default_factory=threading.Lock)
    """Held while a large FHIR body is parsed: threads parsing at once compete with the loop
    for the GIL."""


def api_context(request: Request) -> ApiContext:
    """The app's `ApiContext`."""
    context: ApiContext = request.app.state.api
    return context


Context = Annotated[ApiContext, Depends(api_context)]


def require_key(request: Request) -> None:
    """401 unless the request carries the API key (`X-API-Key` or `Authorization: Bearer`),
    when RADBRIDGE_API_KEY is set."""
    secret = api_context(request).settings.api_key
    if secret is None:
        return
    supplied = request.headers.get("x-api-key") or ""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        supplied = supplied or bearer[7:]
    if not hmac.compare_digest(supplied.encode(), secret.get_secret_value().encode()):
        raise ApiError(401, "missing or wrong API key")


def require_operator_key(request: Request) -> None:
    """/metrics, /docs and /openapi.json: open in development, behind the key in production."""
    if api_context(request).settings.env is Environment.PRODUCTION:
        require_key(request)


AUTH = [Depends(require_key)]
OPERATOR = [Depends(require_operator_key)]


async def request_body(request: Request) -> bytes:
    """The request body, refused with 413 above the configured size (header or actual length)."""
    limit = api_context(request).settings.http_max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # counted as it arrives: memory stays flat
        size += len(chunk)
        if size > limit:
            chunks.clear()  # the rest is read and dropped, so the client gets its 413
        elif chunk:
            chunks.append(chunk)
    if size > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    return b"".join(chunks)


RequestBody = Annotated[bytes, Depends(request_body)]


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep `body`'s arrays and objects nest (stops counting past `limit`), read without
    parsing: linear in the size, no recursion. Brackets inside strings do not count."""
    return json_body.scan(body, limit).depth


def parse_json(body: bytes) -> Any:
    """JSON with its depth bounded before parsing (ApiError 400 when too deep or not JSON); its
    large strings are not copied twice (`adapter.json_body`)."""
    found = json_body.scan(body, MAX_JSON_DEPTH)
    if found.depth > MAX_JSON_DEPTH:
        raise ApiError(400, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json_body.loads(body, found.large)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "body is not JSON") from None
