"""The operator console: `/ui/messages` (filters, destination health, metrics),
`/ui/messages/{id}` (one message's way, resend to a destination) and `/ui/metrics`. Operator
pages never show report text or patient names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from adapter.errors import UiRefused
from adapter.reviews import console_messages, message_detail
from adapter.store.messages import STATES
from adapter.ui.context import PAGE, day, ui_of, whole_number

router = APIRouter(prefix="/ui", include_in_schema=False)


async def metrics_lines(request: Request) -> list[tuple[str, str]]:
    """The Prometheus samples of `/metrics` (`adapter.api.operations.metrics_text` of the same
    app), without help lines; none when the app serves no API."""
    from adapter.api.operations import metrics_text

    context = getattr(request.app.state, "api", None)
    if context is None:
        return []
    text = await run_in_threadpool(metrics_text, context)
    return [
        (line.rsplit(" ", 1)[0], line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and " " in line
    ]


@router.get("/messages", response_class=HTMLResponse)
async def messages_page(
    request: Request,
    msh10: str = "",
    accession: str = "",
    conflicts: str = "",
    state: str = "",
    sender: str = "",
    since: str = "",
    until: str = "",
    offset: str = "0",
) -> Response:
    from adapter import destinations

    ui = ui_of(request)
    user = ui.signed_in(request, "operator")
    if isinstance(user, RedirectResponse):
        return user
    if state and state not in STATES:
        raise UiRefused(400, f"state must be one of {', '.join(STATES)}")
    start_at = whole_number(offset or "0", "offset", high=10**9)
    start, end = day(since, "from"), day(until, "to")
    rows, total = console_messages(
        ui.store,
        control_id=msh10.strip() or None,
        accession=accession.strip() or None,
        conflicts_only=conflicts == "1",
        state=state or None,
        sender=sender or None,
        since=start,
        until=end + timedelta(days=1) if end else None,
        limit=PAGE,
        offset=start_at,
    )
    query: dict[str, Any] = {
        "state": state,
        "sender": sender,
        "since": since,
        "until": until,
        "msh10": msh10,
        "accession": accession,
        "conflicts": conflicts,
    }

    def link(to: int) -> str:
        return "/ui/messages?" + urlencode({**query, "offset": str(to)})

    return ui.page(
        request,
        "messages.html",
        user,
        rows=rows,
        total=total,
        offset=start_at,
        states=STATES,
        query=query,
        previous=link(max(0, start_at - PAGE)) if start_at > 0 else None,
        next=link(start_at + PAGE) if start_at + PAGE < total else None,
        metrics=await metrics_lines(request),
        destinations=destinations.health(ui.settings, ui.store),
    )


@router.get("/metrics", response_class=HTMLResponse)
async def metrics_page(request: Request) -> Response:
    ui = ui_of(request)
    user = ui.signed_in(request, "operator")
    if isinstance(user, RedirectResponse):
        return user
    return ui.page(request, "metrics.html", user, metrics=await metrics_lines(request))


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message_page(request: Request, message_id: str) -> Response:
    from adapter import destinations

    ui = ui_of(request)
    user = ui.signed_in(request, "operator")
    if isinstance(user, RedirectResponse):
        return user
    detail = message_detail(ui.store, whole_number(message_id, "A message id", 1))
    if detail is None:
        raise UiRefused(404, f"No message {message_id}.")
    return ui.page(
        request,
        "message.html",
        user,
        detail=detail,
        destinations=destinations.bundle_destinations(ui.settings),
        resent=request.query_params.get("resent", ""),
    )


@router.post("/messages/{message_id}/resend")
async def resend(request: Request, message_id: str) -> Response:
    """Send a message's Bundles to one destination again, now (never re-extracted)."""
    from adapter import destinations

    ui = ui_of(request)
    found = await ui.posted(request, "operator")
    if isinstance(found, RedirectResponse):
        return found
    chosen_id = whole_number(message_id, "A message id", 1)
    user, data = found
    name = data.get("destination", "")
    chosen = [d for d in destinations.bundle_destinations(ui.settings) if d.name == name]
    if not chosen:
        raise UiRefused(400, "Choose a configured destination to resend to.")
    bundle_ids = ui.store.bundles_of_message(chosen_id)
    if not bundle_ids:
        raise UiRefused(409, f"Message {chosen_id} has no result to send. Nothing was sent.")
    destinations.dispatch(ui.broker(), ui.settings, ui.store, bundle_ids, [name], fresh=True)
    ui.store.audit(chosen_id, "resend_by_operator", f"{name} by {user.name}")
    return RedirectResponse(f"/ui/messages/{chosen_id}?resent={name}", status_code=303)
