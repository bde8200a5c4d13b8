"""The operator's commands on the store: `dead-letters`, `requeue` and `resend`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from app.commands.common import cli_settings, fail, out


def dead_letters() -> None:
    """List messages that were given up on, with the reason, and deliveries refused or dead
    (per destination; the message itself is not dead)."""
    from adapter.store import Store

    store = Store.open(cli_settings())
    table = Table(title="dead letters")
    for column in ("id", "received", "channel", "control id", "attempts", "reason"):
        table.add_column(column)
    for row in store.dead_letters():
        table.add_row(
            str(row.id),
            row.received_at.isoformat(),
            row.channel,
            row.control_id,
            str(row.attempts),
            row.reason or "",
        )
    out.print(table)
    given_up = store.given_up_deliveries()
    if given_up:
        deliveries = Table(title="deliveries given up on (radbridge resend ID --to DESTINATION)")
        for column in ("message", "bundle", "destination", "state", "attempts", "reason"):
            deliveries.add_column(column)
        for record in given_up:
            deliveries.add_row(
                str(record["message_id"]),
                str(record["bundle_id"])[:8],
                str(record["target"]),
                str(record["state"]),
                str(record["attempts"]),
                str(record["reason"] or ""),
            )
        out.print(deliveries)


def requeue(message_id: Annotated[int, typer.Argument(help="the message (job) id")]) -> None:
    """Put a dead or failed message back in the queue."""
    from adapter.errors import StoreError
    from adapter.queue import enqueue_extract, make_celery
    from adapter.store import Store

    settings = cli_settings()
    store = Store.open(settings)
    try:
        store.requeue(message_id)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if settings.redis_url:
        enqueue_extract(make_celery(settings), message_id)
        out.print(f"message {message_id} requeued")
    else:
        out.print(
            f"message {message_id} is accepted again; the running service's reconcile picks it up"
        )


def resend(
    message_id: Annotated[int, typer.Argument(help="the message (job) id")],
    to: Annotated[str, typer.Option("--to", help="the destination: fhir or oru")],
) -> None:
    """Send a message's current results to one destination again, now (never re-extracted);
    a dead or refused delivery starts a new retry horizon."""
    from adapter import destinations
    from adapter.queue import make_celery
    from adapter.store import Store

    settings = cli_settings()
    names = [d.name for d in destinations.bundle_destinations(settings)]
    if to not in names:
        raise fail(f"{to!r} is not a configured destination ({', '.join(names) or 'none'})")
    store = Store.open(settings)
    bundle_ids = store.bundles_of_message(message_id)
    if not bundle_ids:
        raise fail(f"message {message_id} has no result to send")
    app_ = make_celery(settings) if settings.redis_url else None
    destinations.dispatch(app_, settings, store, bundle_ids, [to], fresh=True)
    store.audit(message_id, "resend_by_operator", to)
    where = "queued" if app_ is not None else "queued for the running service's reconcile"
    out.print(f"message {message_id}: {len(bundle_ids)} result(s) to {to} {where}")
