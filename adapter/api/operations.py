"""Operations: `/healthz` (the process answers), `/readyz` (store, broker, serve's worker and
reconcile; the destinations reported, never counted) and `/metrics` (Prometheus text: HTTP and
MLLP counters, messages by state, deliveries by destination, queue depth, insights, model time)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from adapter import destinations
from adapter.api.context import OPERATOR, ApiContext, Context
from adapter.errors import StoreError
from mappings.media_types import PROMETHEUS_TEXT

router = APIRouter()
_HTTP_COUNTERS = (
    ("received", "messages received over HTTP"),
    ("acked", "messages accepted over HTTP"),
    ("rejected", "messages refused over HTTP"),
)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Context) -> JSONResponse:
    broker_ready, worker_ready = context.broker_ready, context.worker_ready
    checks = {"store": True, "broker": broker_ready() if broker_ready else True}
    if worker_ready is not None:  # serve's own worker: alive, with a fresh heartbeat
        checks["worker"] = worker_ready()
    if context.reconcile_ready is not None:  # a beat schedules reconcile: it finished lately
        checks["reconcile"] = await run_in_threadpool(context.reconcile_ready)
    try:
        context.store.counts_by_state()
    except StoreError:
        checks["store"] = False
    ready = all(checks.values())
    body: dict[str, Any] = {"ready": ready, **checks}
    if checks["store"]:  # the destinations are reported, never counted: an EHR outage
        body["destinations"] = destinations.health(  # must not stop intake
            context.settings, context.store
        )
    return JSONResponse(body, status_code=200 if ready else 503)


def _metric(name: str, kind: str, help_text: str, *samples: str) -> list[str]:
    """One metric family: its HELP and TYPE lines, then its samples."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _counter_lines(context: ApiContext) -> list[str]:
    lines: list[str] = []
    for name, help_text in _HTTP_COUNTERS:
        metric = f"radbridge_http_{name}_total"
        lines += _metric(metric, "counter", help_text, f"{metric} {context.counters[name]}")
    for name, value in sorted((context.mllp_counters or {}).items()):
        metric = f"radbridge_mllp_{name}_total"
        lines += _metric(metric, "counter", f"MLLP frames {name}", f"{metric} {value}")
    return lines


def _store_lines(context: ApiContext) -> list[str]:
    store = context.store
    lines = _metric(
        "radbridge_messages",
        "gauge",
        "messages in the store by state",
        *(
            f'radbridge_messages{{state="{state}"}} {count}'
            for state, count in store.counts_by_state().items()
        ),
    )
    lines += ["# HELP radbridge_deliveries deliveries by destination and state"]
    lines += ["# TYPE radbridge_deliveries gauge"]
    failing = []
    for name, states in destinations.health(context.settings, store).items():
        lines += [
            f'radbridge_deliveries{{destination="{name}",state="{state}"}} {count}'
            for state, count in states.items()
            if state != "failing"
        ]
        failing.append(
            f'radbridge_destination_failing{{destination="{name}"}} {int(states["failing"])}'
        )
    return lines + _metric(
        "radbridge_destination_failing",
        "gauge",
        "1 while deliveries to a destination are retrying or dead",
        *failing,
    )


def _work_lines(context: ApiContext) -> list[str]:
    lines: list[str] = []
    depth = context.queue_depth() if context.queue_depth else None
    if depth is not None:
        lines += _metric(
            "radbridge_queue_depth",
            "gauge",
            "tasks waiting in the broker",
            f"radbridge_queue_depth {depth}",
        )
    insights = context.store.insight_counts()
    unrouted = insights.pop("no_template")
    flagged = insights.pop("flagged_reports")
    lines += _metric(
        "radbridge_flagged_reports",
        "gauge",
        "reports with a Flag (critical result) in force (issue 20)",
        f"radbridge_flagged_reports {flagged}",
    )
    lines += _metric(
        "radbridge_insights",
        "gauge",
        "insight resources in force by type (issue 20)",
        *(f'radbridge_insights{{type="{kind}"}} {n}' for kind, n in insights.items()),
    )
    lines += _metric(
        "radbridge_no_template_messages",
        "gauge",
        "messages no template applied to",
        f"radbridge_no_template_messages {unrouted}",
    )
    count, seconds = context.store.extraction_seconds()
    return lines + _metric(
        "radbridge_extraction_seconds",
        "summary",
        "model time per extraction",
        f"radbridge_extraction_seconds_count {count}",
        f"radbridge_extraction_seconds_sum {seconds:.3f}",
    )


def metrics_text(context: ApiContext) -> str:
    """The Prometheus text of /metrics."""
    lines = _counter_lines(context) + _store_lines(context) + _work_lines(context)
    return "\n".join(lines) + "\n"


@router.get("/metrics", dependencies=OPERATOR, response_class=PlainTextResponse)
def metrics(context: Context) -> PlainTextResponse:
    return PlainTextResponse(metrics_text(context), media_type=PROMETHEUS_TEXT)
