"""The dead letters: `/ui/dead-letters` (requeue one or all; discard or resolve with a reason,
audited; the stored message is kept)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapter.errors import StoreError, UiRefused
from adapter.store.messages import CLOSED
from adapter.ui.context import MAX_REASON, UiContext, log, ui_of, whole_number

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(request: Request, done: str = "", closed: str = "") -> Response:
    ui = ui_of(request)
    user = ui.signed_in(request, "operator")
    if isinstance(user, RedirectResponse):
        return user
    return ui.page(
        request,
        "dead_letters.html",
        user,
        rows=ui.store.dead_letters(),
        done=done,
        closed=closed,
        closed_rows=ui.store.closed_dead_letters(),
    )


def requeue(ui: UiContext, message_id: int) -> None:
    """Put a dead letter back to extraction (409 when it is not one)."""
    store = ui.store
    row = store.get_message(message_id)
    if row is None or row.state != "dead":
        state = row.state if row else "unknown"
        raise UiRefused(
            409, f"Message {message_id} is not a dead letter ({state}). Nothing was changed."
        )
    try:
        store.requeue(message_id)
    except StoreError as exc:
        raise UiRefused(409, f"{exc}. Nothing was changed.") from None
    store.audit(message_id, "requeued_by_operator", None)
    ui.dispatch("extract", message_id)


@router.post("/dead-letters/{message_id}/requeue")
async def requeue_one(request: Request, message_id: str) -> Response:
    ui = ui_of(request)
    found = await ui.posted(request, "operator")
    if isinstance(found, RedirectResponse):
        return found
    requeue(ui, whole_number(message_id, "A message id", 1))
    return RedirectResponse(f"/ui/dead-letters?done={message_id}", status_code=303)


@router.post("/dead-letters/requeue")
async def requeue_many(request: Request) -> Response:
    ui = ui_of(request)
    found = await ui.posted(request, "operator")
    if isinstance(found, RedirectResponse):
        return found
    _, data = found
    chosen = [whole_number(k[3:], "A message id", 1) for k in data if k.startswith("id_")]
    if data.get("all") == "1":
        chosen = [row.id for row in ui.store.dead_letters()]
    if not chosen:
        raise UiRefused(400, "Choose at least one dead letter to requeue.")
    for message_id in chosen:
        requeue(ui, message_id)
    return RedirectResponse(f"/ui/dead-letters?done={len(chosen)}", status_code=303)


@router.post("/dead-letters/{message_id}/close")
async def close_one(request: Request, message_id: str) -> Response:
    """Discard (it can never succeed) or resolve (handled outside radbridge) a dead letter,
    with a reason: audited; the stored message is kept."""
    ui = ui_of(request)
    found = await ui.posted(request, "operator")
    if isinstance(found, RedirectResponse):
        return found
    chosen = whole_number(message_id, "A message id", 1)
    user, data = found
    outcome = data.get("outcome", "")
    if outcome not in CLOSED:
        raise UiRefused(400, "Choose Discard or Resolve.")
    reason = " ".join(data.get("reason", "").split())
    if not reason:
        raise UiRefused(400, f"Say why the message is {outcome}. Nothing was changed.")
    if len(reason) > MAX_REASON:
        raise UiRefused(400, f"The reason is longer than {MAX_REASON} characters.")
    try:
        ui.store.close_dead_letter(chosen, outcome, reason, user.name)
    except StoreError:
        row = ui.store.get_message(chosen)
        state = row.state if row else "unknown"
        raise UiRefused(
            409, f"Message {chosen} is not a dead letter ({state}). Nothing was changed."
        ) from None
    log.info("ui dead letter %s", outcome)
    return RedirectResponse(f"/ui/dead-letters?closed={outcome}+{chosen}", status_code=303)
