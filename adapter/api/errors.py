"""The API's error policy: every error is answered as a FHIR OperationOutcome (under /ui: the
browser UI's HTML error page), its status and issue code chosen by the error's class
(`RadbridgeError.http_status`, `issue_code`; `ApiError` carries its own).

An unexpected exception is logged once (`mappings.errors.log_unexpected`: correlation id, type
and frames, never its message) and answered 500 (503 for the store) with a generic text and that
correlation id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.errors import AdapterError
from mappings.errors import RadbridgeError, log_unexpected
from mappings.media_types import FHIR_JSON

log = logging.getLogger("radbridge.api")
ISSUE_CODES = {
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
        self.code = code or ISSUE_CODES.get(status, "processing")


def operation_outcome(text: str, code: str, severity: str = "error") -> dict[str, Any]:
    """A one-issue OperationOutcome."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def fhir_json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A FHIR JSON response."""
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _answer(request: Request, status: int, text: str, code: str) -> Response:
    """The UI's HTML error page for a request under /ui (when the app has a UI), else an
    OperationOutcome."""
    render = getattr(request.app.state, "ui_error_page", None)
    if render is not None and request.url.path.startswith("/ui"):
        page: Response = render(request, status, text)
        return page
    return fhir_json(operation_outcome(text, code), status)


def internal_error(request: Request, exc: BaseException) -> Response:
    """500 (503 for the store) with a generic text and a correlation id; the exception logged
    once without its message."""
    route = request.scope.get("route")  # the path template: a path may hold an identifier
    correlation = log_unexpected(log, getattr(route, "path", "the API"), exc)
    text = f"internal error (correlation id {correlation})"
    status = exc.http_status if isinstance(exc, RadbridgeError) else 500
    return _answer(request, status, text, "exception")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _answer(request, exc.status, exc.text, exc.code)


async def _radbridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RadbridgeError)
    if exc.http_status < 500:  # messages of the tree are free of report content
        return _answer(request, exc.http_status, str(exc), exc.issue_code)
    return internal_error(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = ISSUE_CODES.get(exc.status_code, "processing")
    return _answer(request, exc.status_code, str(exc.detail), code)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    where = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors()[:3])
    return _answer(request, 400, f"invalid request parameters: {where}", "invalid")


async def _unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers (every one answers a request under /ui with the UI's page)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RadbridgeError, _radbridge_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
