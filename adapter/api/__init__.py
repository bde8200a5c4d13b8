"""The HTTP API (FastAPI): FHIR in and out, HL7v2 over HTTP, jobs, health and metrics.

Every error is a FHIR OperationOutcome (registered handlers); a 500 carries a generic text and
a correlation id, never exception text or report content (details go to the log, without PHI).
Auth: `X-API-Key: <key>` or `Authorization: Bearer <key>` when RADBRIDGE_API_KEY is set; it must
be set when RADBRIDGE_ENV=production, where /metrics, /docs and /openapi.json need it too. Bodies over RADBRIDGE_HTTP_MAX_BODY_BYTES get 413.
Build the app with `create_app` (no settings are read at import).
"""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter import destinations, json_body
from adapter.api_docs import install_docs
from adapter.control_ids import ControlIds
from adapter.errors import AdapterError, StoreError
from adapter.fhir_routes import FHIR_JSON, fhir_interaction, install_fhir_routes
from adapter.ingest import INLINE_BODY_BYTES, Hl7Ingest, fhir_messages
from adapter.settings import Environment, Settings
from adapter.store import Incoming, Store, field_problem, shown_delivery_state
from adapter.ui import install_ui
from mappings.ack import read_ack_code
from mappings.errors import MessageRejected, RadbridgeError
from mappings.inbound import fhir_report_keys

log = logging.getLogger("radbridge.api")
MAX_JSON_DEPTH = 100  # FHIR resources nest ~20 deep; Python's json recurses per level
MAX_JOB_ID = 2**63 - 1  # the store's 64-bit integer ids
HL7_ER7 = "x-application/hl7-v2+er7"
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
}


class ApiError(AdapterError):
    """An error answered as an OperationOutcome with `status` (its text is shown to the client:
    never report content)."""

    http_status = 400
    issue_code = "invalid"

    def __init__(self, status: int, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code or _ISSUE_CODES.get(status, "processing")


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


def operation_outcome(text: str, code: str, severity: str = "error") -> dict[str, Any]:
    """A one-issue OperationOutcome."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def _internal_outcome(exc: BaseException, request: Request | None = None) -> Response:
    """500 (503 for the store) with a generic text and a correlation id; the type in the log.
    Under /ui the browser UI's HTML error page instead of an OperationOutcome."""
    correlation = uuid.uuid4().hex
    log.error("internal error correlation=%s type=%s", correlation, type(exc).__name__)
    text = f"internal error (correlation id {correlation})"
    status = exc.http_status if isinstance(exc, RadbridgeError) else 500
    page = _ui_page(request, status, text) if request is not None else None
    return page or _fhir(operation_outcome(text, "exception"), status)


def _ui_page(request: Request, status: int, text: str) -> Response | None:
    """The UI's HTML error page for a request under /ui (None elsewhere, or without a UI)."""
    render = getattr(request.app.state, "ui_error_page", None)
    if render is None or not request.url.path.startswith("/ui"):
        return None
    page: Response = render(request, status, text)
    return page


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


def create_app(
    settings: Settings,
    store: Store,
    *,
    on_accepted: Callable[[int], None] | None = None,
    queue_depth: Callable[[], int | None] | None = None,
    broker_ready: Callable[[], bool] | None = None,
    mllp_counters: dict[str, int] | None = None,
    worker_ready: Callable[[], bool] | None = None,
    reconcile_ready: Callable[[], bool] | None = None,
    control_ids: ControlIds | None = None,
) -> FastAPI:
    """The API over a store; `on_accepted(message_id)` enqueues the extraction; `control_ids`
    draws the MSH-10 of ACKs (the serve's one generator, shared with MLLP); `worker_ready` and
    `reconcile_ready` are /readyz's checks of serve's worker and of a recent reconcile (a beat
    that runs). The settings are checked by the serving command (`radbridge serve`), not here."""
    app = FastAPI(
        title="radbridge",
        version="0.1.0",
        description="Radiology reports to coded FHIR Observations",
        docs_url=None,  # adapter/api_docs.py: offline Swagger UI, behind the key in production
        redoc_url=None,
        openapi_url=None,
    )
    ingest = Hl7Ingest(
        store,
        channel="http-hl7v2",
        on_accepted=on_accepted,
        group_commit=False,
        control_ids=control_ids,
    )
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
    # /metrics, /docs and /openapi.json: open in development, behind the key in production
    operator = auth if settings.env is Environment.PRODUCTION else []
    install_docs(app, operator)

    app.state.max_body_bytes = settings.http_max_body_bytes

    # every handler answers a request under /ui with the UI's HTML error page (issue 24)
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _ui_page(request, exc.status, exc.text) or _fhir(
            operation_outcome(exc.text, exc.code), exc.status
        )

    @app.exception_handler(RadbridgeError)
    async def _radbridge_error(request: Request, exc: RadbridgeError) -> Response:
        if exc.http_status < 500:  # messages of the tree are free of report content
            return _ui_page(request, exc.http_status, str(exc)) or _fhir(
                operation_outcome(str(exc), exc.issue_code), exc.http_status
            )
        return _internal_outcome(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _ui_page(request, exc.status_code, str(exc.detail)) or _fhir(
            operation_outcome(str(exc.detail), _ISSUE_CODES.get(exc.status_code, "processing")),
            exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors()[:3])
        text = f"invalid request parameters: {where}"
        return _ui_page(request, 400, text) or _fhir(operation_outcome(text, "invalid"), 400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        return _internal_outcome(exc, request)

    @app.post("/hl7v2", dependencies=auth, response_class=Response)
    async def post_hl7v2(body: RequestBody) -> Response:
        counters["received"] += 1
        ack = await ingest.handle_message(
            body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
        )
        if ack is None:
            return Response(status_code=204)
        code = read_ack_code(ack) or "AE"
        status = 200 if code in ("AA", "CA") else 400 if code in ("AR", "CR") else 503
        counters["acked" if status == 200 else "rejected"] += 1
        return Response(ack, status_code=status, media_type=HL7_ER7)

    def read_fhir(
        body: bytes, expected: tuple[str, ...]
    ) -> tuple[list[tuple[int | None, Incoming]], int]:
        """Parse and validate one FHIR body: (the messages to store, `fhir_messages`; reports)."""
        resource = parse_json(body)
        if not isinstance(resource, dict) or resource.get("resourceType") not in expected:
            raise ApiError(400, f"expected resourceType {' or '.join(expected)}")
        try:  # checked, narratives not read: the worker reads them (memory, issue 25)
            keys = fhir_report_keys(resource, default_language=settings.default_language)
        except MessageRejected as exc:
            counters["rejected"] += 1
            raise ApiError(
                422 if exc.reason in ("no_narrative", "pdf_only") else 400,
                f"{exc.reason}: {exc.detail}",
            ) from None
        messages = fhir_messages(body, resource, keys, FHIR_JSON)
        for _, item in messages:
            unstorable = field_problem(item)
            if unstorable is not None:
                counters["rejected"] += 1
                code = "too-long" if unstorable.limit is not None else None
                raise ApiError(400, f"a report's id or identifier {unstorable.problem}", code)
        return messages, len(keys)

    one_large_body = threading.Lock()  # threads parsing at once compete with the loop for the GIL

    def read_large_fhir(
        body: bytes, expected: tuple[str, ...]
    ) -> tuple[list[tuple[int | None, Incoming]], int]:
        with one_large_body:
            return read_fhir(body, expected)

    async def accept_fhir(body: bytes, expected: tuple[str, ...]) -> JSONResponse:
        counters["received"] += 1
        if len(body) > INLINE_BODY_BYTES:  # off the loop the MLLP listener shares
            messages, reports = await run_in_threadpool(read_large_fhir, body, expected)
        else:
            messages, reports = read_fhir(body, expected)
        results = await run_in_threadpool(store.accept_many, [item for _, item in messages])
        counters["acked"] += 1
        for result in results:
            if not result.duplicate and on_accepted is not None:
                on_accepted(result.message_id)
        if len(results) == 1:
            (result,) = results
            outcome = operation_outcome(
                f"accepted as job {result.message_id} ({reports} report(s)){' (duplicate)' if result.duplicate else ''}",
                "informational",
                "information",
            )
            return _fhir(outcome, 202, {"Location": f"/jobs/{result.message_id}"})
        # a Bundle of several reports: one job per DiagnosticReport, each in an issue of its own
        outcome = operation_outcome(
            f"accepted as {len(results)} jobs, one per DiagnosticReport ({reports} report(s))",
            "informational",
            "information",
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
        return _fhir(outcome, 202)

    @app.post(
        "/fhir/DiagnosticReport",
        dependencies=auth,
        status_code=202,
        description="Accepted as a job (202, Location /jobs/{id}), not stored as sent: "
        "radbridge extracts it and serves the resulting DiagnosticReport and Observations",
        openapi_extra=fhir_interaction("DiagnosticReport", "create"),
    )
    async def post_diagnostic_report(body: RequestBody) -> JSONResponse:
        return await accept_fhir(body, ("DiagnosticReport",))

    @app.post("/fhir", dependencies=auth, status_code=202)
    async def post_bundle(body: RequestBody) -> JSONResponse:
        return await accept_fhir(body, ("Bundle",))

    install_fhir_routes(app, settings, store, auth)

    @app.get("/jobs/{job_id}", dependencies=auth)
    async def job(job_id: Annotated[int, Path(ge=1, le=MAX_JOB_ID)]) -> JSONResponse:
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
                "deliveries": [
                    {
                        "destination": d["target"],
                        "bundle": d["bundle_id"],
                        "state": shown_delivery_state(str(d["state"])),
                        "attempts": d["attempts"],
                        "next_attempt": (
                            d["next_attempt_at"].isoformat()
                            if d["next_attempt_at"] is not None and d["state"] == "retry"
                            else None
                        ),
                        "reason": d["reason"],
                    }
                    for d in store.delivery_states(job_id)
                ],
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"store": True, "broker": broker_ready() if broker_ready else True}
        if worker_ready is not None:  # serve's own worker: alive, with a fresh heartbeat
            checks["worker"] = worker_ready()
        if reconcile_ready is not None:  # a beat schedules reconcile: it finished lately
            checks["reconcile"] = await run_in_threadpool(reconcile_ready)
        try:
            store.counts_by_state()
        except StoreError:
            checks["store"] = False
        ready = all(checks.values())
        body: dict[str, Any] = {"ready": ready, **checks}
        if checks["store"]:  # the destinations are reported, never counted: an EHR outage
            body["destinations"] = destinations.health(settings, store)  # must not stop intake
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", dependencies=operator, response_class=PlainTextResponse)
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
        lines += [
            "# HELP radbridge_deliveries deliveries by destination and state",
            "# TYPE radbridge_deliveries gauge",
        ]
        failing = []
        for name, states in destinations.health(settings, store).items():
            lines += [
                f'radbridge_deliveries{{destination="{name}",state="{state}"}} {count}'
                for state, count in states.items()
                if state != "failing"
            ]
            failing.append(
                f'radbridge_destination_failing{{destination="{name}"}} {int(states["failing"])}'
            )
        lines += [
            "# HELP radbridge_destination_failing 1 while deliveries to a destination are "
            "retrying or dead",
            "# TYPE radbridge_destination_failing gauge",
            *failing,
        ]
        depth = queue_depth() if queue_depth else None
        if depth is not None:
            lines += [
                "# HELP radbridge_queue_depth tasks waiting in the broker",
                "# TYPE radbridge_queue_depth gauge",
                f"radbridge_queue_depth {depth}",
            ]
        insights = store.insight_counts()
        unrouted = insights.pop("no_template")
        lines += [
            "# HELP radbridge_insights insight resources in force by type (issue 20)",
            "# TYPE radbridge_insights gauge",
            *(f'radbridge_insights{{type="{kind}"}} {n}' for kind, n in insights.items()),
            "# HELP radbridge_no_template_messages messages no template applied to",
            "# TYPE radbridge_no_template_messages gauge",
            f"radbridge_no_template_messages {unrouted}",
        ]
        seconds = store.extraction_seconds()
        lines += [
            "# HELP radbridge_extraction_seconds model time per extraction",
            "# TYPE radbridge_extraction_seconds summary",
            f"radbridge_extraction_seconds_count {seconds[0]}",
            f"radbridge_extraction_seconds_sum {seconds[1]:.3f}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    install_ui(app, settings, store)
    return app
