"""`install_ui`: the UI's page groups composed on the API app (server-rendered Jinja2; a little
JavaScript for highlighting, confirmations, the codes toggle and keyboard shortcuts; every page
works without it).

The page groups are module-level routers: `signin_views` (sign-in, sign-out, home),
`review_views` (the reviewer's worklist and review page), `console_views` (the operator's
messages, message detail and metrics) and `dead_letter_views`; what they share (settings,
store, sessions, rendering) is the app's `UiContext` (`adapter/ui/context.py`). Every POST
checks the CSRF token; every decision names the reviewer. Operator pages never show report
text or patient names.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from adapter.errors import UiRefused
from adapter.settings import Settings
from adapter.store import Store
from adapter.ui import console_views, dead_letter_views, review_views, signin_views
from adapter.ui.context import UiContext

PAGE_GROUPS = (signin_views, review_views, console_views, dead_letter_views)


async def ui_refused(request: Request, exc: Exception) -> Response:
    """A refusal under /ui as the HTML error page; elsewhere as an OperationOutcome."""
    assert isinstance(exc, UiRefused)
    status = getattr(exc, "status", type(exc).http_status)
    text = getattr(exc, "text", str(exc))
    if not request.url.path.startswith("/ui"):  # the API answers OperationOutcomes
        issue = {"severity": "error", "code": UiRefused.issue_code, "diagnostics": text}
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        return JSONResponse(outcome, status_code=status, media_type="application/fhir+json")
    ui: UiContext = request.app.state.ui
    return ui.error_page(request, status, text)


def install_ui(app: FastAPI, settings: Settings, store: Store) -> None:
    """Mount the UI on the API app (no settings are read at import)."""
    ui = UiContext(settings, store)
    app.state.ui = ui
    app.state.ui_sessions = ui.sessions  # its login throttle, for operators' tools and tests
    app.state.ui_error_page = ui.error_page
    app.add_exception_handler(UiRefused, ui_refused)
    for group in PAGE_GROUPS:
        app.include_router(group.router)
    static = str(files("adapter.ui") / "static")
    app.mount("/ui/static", StaticFiles(directory=static), name="ui-static")
