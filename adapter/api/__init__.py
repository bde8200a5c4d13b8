"""The HTTP API (FastAPI), one router per area: FHIR in and out (`fhir`), HL7v2 over HTTP
(`hl7v2`), jobs (`jobs`), health, readiness and metrics (`operations`), the offline API docs
(`docs`); the browser UI is `adapter.ui`. What the routers share is `context.ApiContext`, in
`app.state.api`.

Every error is a FHIR OperationOutcome (`errors`: status and issue code by the error's class); a
500 carries a generic text and a correlation id, never exception text or report content (the
traceback, without messages, goes to the log). Auth: `X-API-Key: <key>` or `Authorization:
Bearer <key>` when RADBRIDGE_API_KEY is set; it must be set when RADBRIDGE_ENV=production, where
/metrics, /docs and /openapi.json need it too. Bodies over RADBRIDGE_HTTP_MAX_BODY_BYTES get 413.
Build the app with `create_app` (no settings are read at import).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from adapter.api import fhir, hl7v2, jobs, operations
from adapter.api.context import OPERATOR, ApiContext
from adapter.api.docs import install_docs
from adapter.api.errors import install_error_handlers
from adapter.control_ids import ControlIds
from adapter.ingest import Hl7Ingest
from adapter.settings import Settings
from adapter.store import Store
from adapter.ui import install_ui


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
        docs_url=None,  # adapter/api/docs.py: offline Swagger UI, behind the key in production
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
    context = ApiContext(
        settings,
        store,
        ingest,
        on_accepted=on_accepted,
        queue_depth=queue_depth,
        broker_ready=broker_ready,
        mllp_counters=mllp_counters,
        worker_ready=worker_ready,
        reconcile_ready=reconcile_ready,
    )
    app.state.api = context
    install_docs(app, OPERATOR)
    install_error_handlers(app)
    for router in (hl7v2.router, fhir.router, jobs.router, operations.router):
        app.include_router(router)
    install_ui(app, settings, store)
    return app
