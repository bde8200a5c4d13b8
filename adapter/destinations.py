"""The one table of destinations: where radbridge sends what it made, and how.

Every place that produces a change (extraction, reconcile, a requeue, a review decision or
correction, an operator's resend) asks this table, so every change reaches every configured
destination:

- `fhir`: the report written back to the EHR's FHIR server (RADBRIDGE_FHIR_BASE_URL), per Bundle;
- `oru`: ORU^R01 over MLLP (RADBRIDGE_ORU_TARGET), per Bundle;
- `app_ack`: the enhanced-mode application ACK over MLLP (RADBRIDGE_APP_ACK_TARGET), per message
  (sent once its extraction ends; not re-sent by a decision).

A Bundle's delivery to one destination has its own state (`Store.delivery_states`): queued,
sending, retrying (with its next attempt), delivered, refused (the destination said no for
good) or dead (it kept failing for RADBRIDGE_DELIVERY_RETRY_FOR). One destination's failure
never changes another's. Enqueueing is by task name: adapter never imports workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapter.queue import DELIVER_ORU_TASK, DELIVER_TASK
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.deliveries import DELIVERY_STATES, shown_delivery_state


@dataclass(frozen=True)
class Destination:
    """One row of the table: `name` (the delivery record's target), what it is, the setting
    that turns it on, and the Celery task that delivers one Bundle (None: per message)."""

    name: str
    label: str
    setting: str
    task: str | None

    def configured(self, settings: Settings) -> bool:
        """Whether the setting that turns it on is set."""
        return bool(getattr(settings, self.setting))

    @property
    def env(self) -> str:
        """The setting's environment variable."""
        return f"RADBRIDGE_{self.setting.upper()}"


DESTINATIONS = (
    Destination("fhir", "FHIR push", "fhir_base_url", DELIVER_TASK),
    Destination("oru", "ORU^R01 over MLLP", "oru_target", DELIVER_ORU_TASK),
    Destination("app_ack", "application ACK over MLLP", "app_ack_target", None),
)


def configured(settings: Settings) -> list[Destination]:
    """The destinations turned on by the settings, in table order."""
    return [d for d in DESTINATIONS if d.configured(settings)]


def bundle_destinations(settings: Settings) -> list[Destination]:
    """The configured destinations that take each Bundle (every change of a result)."""
    return [d for d in configured(settings) if d.task is not None]


def by_name(name: str) -> Destination:
    """A destination of the table by name (KeyError if unknown)."""
    for destination in DESTINATIONS:
        if destination.name == name:
            return destination
    raise KeyError(name)


def required(settings: Settings) -> list[str]:
    """The destinations every Bundle of a message must reach before the message is
    `delivered` (one failing never makes the message dead: its own state says so)."""
    return [d.name for d in bundle_destinations(settings)]


def dispatch(
    app: Any | None,
    settings: Settings,
    store: Store,
    bundle_ids: Iterable[str],
    only: Iterable[str] | None = None,
    *,
    fresh: bool = False,
) -> list[str]:
    """Record the deliveries of stored Bundles to every configured destination (or those
    named in `only`) as queued, then send their tasks (`app` None: no broker, reconcile sends
    them); returns the destinations. `fresh`: an operator's resend (a new retry horizon)."""
    wanted = set(only) if only is not None else None
    chosen = [d for d in bundle_destinations(settings) if wanted is None or d.name in wanted]
    ids = list(bundle_ids)
    if not chosen or not ids:
        return []
    store.queue_deliveries(ids, [d.name for d in chosen], fresh=fresh)
    if app is not None:
        for bundle_id in ids:
            for destination in chosen:
                assert destination.task is not None
                app.send_task(destination.task, args=[bundle_id])
    return [d.name for d in chosen]


def health(settings: Settings, store: Store) -> dict[str, dict[str, Any]]:
    """Each configured destination's deliveries by state (as shown) and `failing`: any of them
    in a run of failures or dead (for /readyz's body, /metrics and the console; never
    /readyz's status: an EHR outage must not stop intake)."""
    counts = store.destination_health()
    report: dict[str, dict[str, Any]] = {}
    for destination in bundle_destinations(settings):
        states = counts.get(destination.name, {})
        shown = {shown_delivery_state(state): states.get(state, 0) for state in DELIVERY_STATES}
        report[destination.name] = {"failing": bool(states.get("failing", 0)), **shown}
    return report
