"""The HTTP API (FastAPI): FHIR in and out, HL7v2 over HTTP, jobs, health and metrics.

Every error is a FHIR OperationOutcome (registered handlers); a 500 carries a generic text and
a correlation id, never exception text or report content (details go to the log, without PHI).
Auth: `X-API-Key: <key>` or `Authorization: Bearer <key>` when RADBRIDGE_API_KEY is set; it must
be set when RADBRIDGE_ENV=production. Bodies over RADBRIDGE_HTTP_MAX_BODY_BYTES get 413.
Build the app with `create_app` (no settings are read at import).
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.errors import StoreError
from adapter.ingest import Hl7Ingest
from adapter.settings import Settings
from adapter.store import Incoming, Store
from mappings.errors import MessageRejected
from mappings.fhir import reports_from_fhir

log = logging.getLogger("radbridge.api")
FHIR_JSON = "application/fhir+json"
HL7_ER7 = "x-application/hl7-v2+er7"
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
}


class ApiError(Exception):
    """An error answered as an OperationOutcome with `status`."""

    def __init__(self, status: int, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code or _ISSUE_CODES.get(status, "processing")


def operation_outcome(text: str, code: str, severity: str = "error") -> dict[str, Any]:
    """A one-issue OperationOutcome."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def _fhir(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


async def request_body(request: Request) -> bytes:
    """The request body, refused with 413 above the configured size (header or actual length)."""
    limit: int = request.app.state.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    return body


RequestBody = Annotated[bytes, Depends(request_body)]


def create_app(
    settings: Settings,
    store: Store,
    *,
    on_accepted: Callable[[int], None] | None = None,
    queue_depth: Callable[[], int | None] | None = None,
    broker_ready: Callable[[], bool] | None = None,
    mllp_counters: dict[str, int] | None = None,
) -> FastAPI:
    """The API over a store; `on_accepted(message_id)` enqueues the extraction."""
    for warning in settings.check_production():
        log.warning("%s", warning)
    app = FastAPI(
        title="radbridge",
        version="0.1.0",
        description="Radiology reports to coded FHIR Observations",
    )
    ingest = Hl7Ingest(store, channel="http-hl7v2", on_accepted=on_accepted, group_commit=False)
    counters = {"received": 0, "acked": 0, "rejected": 0}
    api_key = settings.api_key.get_secret_value() if settings.api_key else None

    def authorised(request: Request) -> None:
        if api_key is None:
            return
        supplied = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            supplied = supplied or bearer[7:]
        if not hmac.compare_digest(supplied.encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key")

    auth = [Depends(authorised)]

    app.state.max_body_bytes = settings.http_max_body_bytes

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _fhir(operation_outcome(exc.text, exc.code), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _fhir(
            operation_outcome(str(exc.detail), _ISSUE_CODES.get(exc.status_code, "processing")),
            exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors()[:3])
        return _fhir(operation_outcome(f"invalid request parameters: {where}", "invalid"), 400)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        correlation = uuid.uuid4().hex
        log.error("internal error correlation=%s type=%s", correlation, type(exc).__name__)
        text = f"internal error (correlation id {correlation})"
        return _fhir(
            operation_outcome(text, "exception"), 503 if isinstance(exc, StoreError) else 500
        )

    @app.post("/hl7v2", dependencies=auth, response_class=Response)
    async def post_hl7v2(body: RequestBody) -> Response:
        counters["received"] += 1
        ack = await ingest.handle_message(
            body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
        )
        if ack is None:
            return Response(status_code=204)
        code = ack.split(b"MSA|", 1)[1][:2] if b"MSA|" in ack else b"AE"
        status = 200 if code in (b"AA", b"CA") else 400 if code in (b"AR", b"CR") else 503
        counters["acked" if status == 200 else "rejected"] += 1
        return Response(ack, status_code=status, media_type=HL7_ER7)

    async def accept_fhir(body: bytes, expected: tuple[str, ...]) -> JSONResponse:
        counters["received"] += 1
        try:
            resource = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "body is not JSON") from None
        if not isinstance(resource, dict) or resource.get("resourceType") not in expected:
            raise ApiError(400, f"expected resourceType {' or '.join(expected)}")
        try:
            reports = reports_from_fhir(resource, default_language=settings.default_language)
        except MessageRejected as exc:
            counters["rejected"] += 1
            raise ApiError(
                422 if exc.reason in ("no_narrative", "pdf_only") else 400,
                f"{exc.reason}: {exc.detail}",
            ) from None
        key = reports[0].fhir_resource_id or reports[0].report_id
        result = store.accept(
            Incoming(
                raw=body,
                channel="fhir",
                sending_application="fhir",
                sending_facility="",
                control_id=key,
                content_type=FHIR_JSON,
            )
        )
        counters["acked"] += 1
        if not result.duplicate and on_accepted is not None:
            on_accepted(result.message_id)
        outcome = operation_outcome(
            f"accepted as job {result.message_id} ({len(reports)} report(s)){' (duplicate)' if result.duplicate else ''}",
            "informational",
            "information",
        )
        return _fhir(outcome, 202, {"Location": f"/jobs/{result.message_id}"})

    @app.post("/fhir/DiagnosticReport", dependencies=auth, status_code=202)
    async def post_diagnostic_report(body: RequestBody) -> JSONResponse:
        return await accept_fhir(body, ("DiagnosticReport",))

    @app.post("/fhir", dependencies=auth, status_code=202)
    async def post_bundle(body: RequestBody) -> JSONResponse:
        return await accept_fhir(body, ("Bundle",))

    @app.get("/fhir/Observation", dependencies=auth)
    async def search_observations(request: Request) -> JSONResponse:
        params = request.query_params
        since = None
        if "_lastUpdated" in params:
            value = params["_lastUpdated"].removeprefix("ge").removeprefix("gt")
            try:
                since = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(
                    400, "_lastUpdated must be a FHIR instant, optionally prefixed ge/gt"
                ) from None
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        found = store.search_observations(
            subject=params.get("subject"),
            code=params.get("code"),
            derived_from=params.get("derived-from"),
            last_updated_since=since,
        )
        return _fhir(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(found),
                "entry": [
                    {
                        "fullUrl": f"Observation/{o['id']}",
                        "resource": o,
                        "search": {"mode": "match"},
                    }
                    for o in found
                ],
            }
        )

    @app.get("/fhir/{resource_type}/{resource_id}", dependencies=auth)
    async def read_resource(resource_type: str, resource_id: str) -> JSONResponse:
        if resource_type not in (
            "Observation",
            "DiagnosticReport",
            "Provenance",
            "Device",
            "Patient",
        ):
            raise ApiError(404, f"{resource_type} is not served here")
        resource = store.get_resource(resource_type, resource_id)
        if resource is None:
            raise ApiError(404, f"{resource_type}/{resource_id} not found")
        return _fhir(resource)

    @app.get("/jobs/{job_id}", dependencies=auth)
    async def job(job_id: int) -> JSONResponse:
        row = store.get_message(job_id)
        if row is None:
            raise ApiError(404, f"job {job_id} not found")
        return JSONResponse(
            {
                "id": row.id,
                "state": row.state,
                "attempts": row.attempts,
                "reason": row.reason,
                "received": row.received_at.isoformat(),
                "conflict": row.conflict,
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"store": True, "broker": broker_ready() if broker_ready else True}
        try:
            store.counts_by_state()
        except StoreError:
            checks["store"] = False
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        lines = []
        for name, help_text in (
            ("received", "messages received over HTTP"),
            ("acked", "messages accepted over HTTP"),
            ("rejected", "messages refused over HTTP"),
        ):
            lines += [
                f"# HELP radbridge_http_{name}_total {help_text}",
                f"# TYPE radbridge_http_{name}_total counter",
                f"radbridge_http_{name}_total {counters[name]}",
            ]
        for name, value in sorted((mllp_counters or {}).items()):
            lines += [
                f"# HELP radbridge_mllp_{name}_total MLLP frames {name}",
                f"# TYPE radbridge_mllp_{name}_total counter",
                f"radbridge_mllp_{name}_total {value}",
            ]
        lines += [
            "# HELP radbridge_messages messages in the store by state",
            "# TYPE radbridge_messages gauge",
        ]
        lines += [
            f'radbridge_messages{{state="{state}"}} {count}'
            for state, count in store.counts_by_state().items()
        ]
        depth = queue_depth() if queue_depth else None
        if depth is not None:
            lines += [
                "# HELP radbridge_queue_depth tasks waiting in the broker",
                "# TYPE radbridge_queue_depth gauge",
                f"radbridge_queue_depth {depth}",
            ]
        seconds = store.extraction_seconds()
        lines += [
            "# HELP radbridge_extraction_seconds model time per extraction",
            "# TYPE radbridge_extraction_seconds summary",
            f"radbridge_extraction_seconds_count {seconds[0]}",
            f"radbridge_extraction_seconds_sum {seconds[1]:.3f}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app
