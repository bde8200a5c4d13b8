"""Push transaction Bundles to the EHR's FHIR server (RADBRIDGE_FHIR_BASE_URL).

The Bundle's entries are `PUT Type/id` with deterministic ids, so a retry never duplicates.
2xx -> delivered; 429 and 5xx, timeouts and refused connections -> `DeliveryRetryable` (honouring
`Retry-After`, seconds or HTTP-date); other 4xx -> `DeliveryRejected` with the server's
OperationOutcome (final: the message goes dead with it stored). Auth (RADBRIDGE_FHIR_AUTH):
`bearer` with RADBRIDGE_FHIR_BEARER_TOKEN, or `smart` (SMART Backend Services, see
`workers/smart_auth.py`); a 401 makes the provider fetch a new token and the push is tried once
more. The retry loop itself is Celery's (`workers/tasks.py`), using
`backoff_seconds`. Logs: bundle id, status, timing — never resource content.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from adapter.settings import Settings
from workers.errors import DeliveryError, DeliveryRejected, DeliveryRetryable
from workers.smart_auth import SmartBackendServices, StaticBearer, TokenProvider

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


def _post(
    http: httpx.Client, base_url: str, bundle: dict[str, Any], provider: TokenProvider | None
) -> httpx.Response:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if provider is not None:
        headers["Authorization"] = f"Bearer {provider.token()}"
    return http.post(base_url.rstrip("/") + "/", json=bundle, headers=headers)


def _outcome(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return (
        body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    )


_PROVIDERS: dict[tuple[object, ...], TokenProvider] = {}


def token_provider(settings: Settings) -> TokenProvider | None:
    """The process's token provider for the configured auth (cached, so tokens are reused)."""
    if settings.fhir_auth == "none" and settings.fhir_bearer_token is None:
        return None
    if settings.fhir_auth == "smart":
        missing = [
            name
            for name, value in (
                ("RADBRIDGE_SMART_TOKEN_URL", settings.smart_token_url),
                ("RADBRIDGE_SMART_CLIENT_ID", settings.smart_client_id),
                ("RADBRIDGE_SMART_PRIVATE_KEY_PATH", settings.smart_private_key_path),
                ("RADBRIDGE_SMART_KEY_ID", settings.smart_key_id),
            )
            if not value
        ]
        if missing:
            raise DeliveryError(f"SMART auth needs {', '.join(missing)}")
        key = (
            settings.smart_token_url,
            settings.smart_client_id,
            str(settings.smart_private_key_path),
            settings.smart_key_id,
            settings.smart_scope,
        )
        if key not in _PROVIDERS:
            assert settings.smart_private_key_path is not None
            _PROVIDERS[key] = SmartBackendServices(
                token_url=str(settings.smart_token_url),
                client_id=str(settings.smart_client_id),
                private_key_pem=settings.smart_private_key_path.read_bytes(),
                key_id=str(settings.smart_key_id),
                scope=settings.smart_scope,
                timeout=settings.delivery_timeout_s,
            )
        return _PROVIDERS[key]
    if settings.fhir_bearer_token is None:
        raise DeliveryError("RADBRIDGE_FHIR_AUTH=bearer needs RADBRIDGE_FHIR_BEARER_TOKEN")
    return StaticBearer(settings.fhir_bearer_token.get_secret_value())


def deliver_bundle(
    bundle: dict[str, Any],
    settings: Settings,
    *,
    client: httpx.Client | None = None,
    auth: TokenProvider | None = None,
) -> DeliveryResult:
    """POST one transaction Bundle to the FHIR base URL (one retry after a 401 with a new token)."""
    if not settings.fhir_base_url:
        raise DeliveryError("no delivery target: RADBRIDGE_FHIR_BASE_URL is not set")
    provider = auth if auth is not None else token_provider(settings)
    own_client = client is None
    http = client or httpx.Client(timeout=settings.delivery_timeout_s)
    started = time.perf_counter()
    try:
        response = _post(http, settings.fhir_base_url, bundle, provider)
        if response.status_code == 401 and provider is not None:
            provider.invalidate()
            response = _post(http, settings.fhir_base_url, bundle, provider)
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


def send_mllp(target_url: str, message: bytes, timeout: float) -> bytes:
    """Send one message to mllp://host:port and return the ACK (DeliveryRetryable on failure)."""
    import asyncio
    from urllib.parse import urlparse

    from adapter.mllp import MllpClient, MllpError

    target = urlparse(target_url)
    if target.scheme != "mllp" or not target.hostname or not target.port:
        raise DeliveryError(f"{target_url!r} must look like mllp://host:port")

    async def send() -> bytes:
        client = MllpClient(target.hostname or "", target.port or 0, timeout=timeout)
        try:
            return await client.send(message)
        finally:
            await client.close()

    try:
        return asyncio.run(send())
    except MllpError as exc:
        raise DeliveryRetryable(f"MLLP target: {exc}") from None


def oru_control_id(bundle: dict[str, Any]) -> str:
    """The ORU's MSH-10: the same for every retry of one Bundle, new when the Bundle changes
    (a corrected result is a new message). 'RB' + 18 hex digits of the Bundle's SHA-256: fits
    ST(20)."""
    import hashlib

    canonical = json.dumps(bundle, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "RB" + hashlib.sha256(canonical).hexdigest()[:18]


def deliver_oru_message(bundle: dict[str, Any], settings: Settings) -> bytes:
    """Send a Bundle as ORU^R01 over MLLP to RADBRIDGE_ORU_TARGET; returns the ACK.

    AA/CA -> done; AE/CE or no answer -> DeliveryRetryable; AR/CR -> DeliveryRejected.
    A retry resends the same MSH-10 (`oru_control_id`), so the receiver can de-duplicate it.
    """
    from mappings.ack import read_ack_code
    from mappings.oru import oru_from_bundle

    message = oru_from_bundle(bundle, control_id=oru_control_id(bundle))
    ack = send_mllp(settings.oru_target or "", message, settings.delivery_timeout_s)
    code = read_ack_code(ack) or ""
    log.info("oru delivery bundle=%s ack=%s", bundle.get("id"), code)
    if code in ("AA", "CA"):
        return ack
    if code in ("AR", "CR"):
        raise DeliveryRejected(
            f"ORU target rejected the message ({code})", status=400, outcome=None
        )
    raise DeliveryRetryable(f"ORU target answered {code or 'no MSA'}")
