"""Push transaction Bundles to the EHR's FHIR server (RADBRIDGE_FHIR_BASE_URL).

The Bundle's entries are `PUT Type/id` with deterministic ids, so a retry never duplicates.
2xx -> delivered; 429 and 5xx, timeouts and refused connections -> `DeliveryRetryable` (honouring
`Retry-After`, seconds or HTTP-date); other 4xx -> `DeliveryRejected` with the server's
OperationOutcome (final: the message goes dead with it stored). Auth: a static bearer token
(RADBRIDGE_FHIR_BEARER_TOKEN). The retry loop itself is Celery's (`workers/tasks.py`), using
`backoff_seconds`. Logs: bundle id, status, timing — never resource content.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from adapter.settings import Settings
from workers.errors import DeliveryError, DeliveryRejected, DeliveryRetryable

log = logging.getLogger("radbridge.delivery")
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class DeliveryResult:
    """A successful delivery."""

    status: int
    entry_statuses: tuple[str, ...]
    seconds: float


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After in seconds (delta-seconds or HTTP-date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def backoff_seconds(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 600.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    delay = (rng or random.SystemRandom()).uniform(0, ceiling)
    return max(delay, retry_after or 0.0)


def _outcome(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return (
        body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    )


def deliver_bundle(
    bundle: dict[str, Any], settings: Settings, *, client: httpx.Client | None = None
) -> DeliveryResult:
    """POST one transaction Bundle to the FHIR base URL."""
    if not settings.fhir_base_url:
        raise DeliveryError("no delivery target: RADBRIDGE_FHIR_BASE_URL is not set")
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if settings.fhir_bearer_token is not None:
        headers["Authorization"] = f"Bearer {settings.fhir_bearer_token.get_secret_value()}"
    own_client = client is None
    http = client or httpx.Client(timeout=settings.delivery_timeout_s)
    started = time.perf_counter()
    try:
        response = http.post(settings.fhir_base_url.rstrip("/") + "/", json=bundle, headers=headers)
    except httpx.TransportError as exc:
        log.warning(
            "delivery transport error bundle=%s error=%s", bundle.get("id"), type(exc).__name__
        )
        raise DeliveryRetryable(f"FHIR server unreachable ({type(exc).__name__})") from None
    finally:
        if own_client:
            http.close()
    seconds = time.perf_counter() - started
    status = response.status_code
    log.info("delivery bundle=%s status=%d seconds=%.3f", bundle.get("id"), status, seconds)
    if 200 <= status < 300:
        body = response.json() if response.content else {}
        statuses = tuple(
            str((entry.get("response") or {}).get("status", ""))
            for entry in body.get("entry", [])
            if isinstance(entry, dict)
        )
        return DeliveryResult(status=status, entry_statuses=statuses, seconds=seconds)
    if status == 429 or status >= 500:
        raise DeliveryRetryable(
            f"FHIR server answered {status}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    raise DeliveryRejected(
        f"FHIR server refused the Bundle ({status})", status=status, outcome=_outcome(response)
    )
