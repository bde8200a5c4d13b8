"""SMART Backend Services authorisation (client credentials with a signed JWT assertion).

Per the SMART App Launch IG, "Client Authentication: Asymmetric (public key)"
(hl7.org/fhir/smart-app-launch/STU2/client-confidential-asymmetric.html) and its Backend
Services flow: POST `grant_type=client_credentials`, `scope`,
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
`client_assertion` (form-encoded) to the token endpoint. The assertion is signed RS384 with the
registered key (`kid` header), iss = sub = client id, aud = the token endpoint URL, a fresh jti
for every assertion and exp at most five minutes ahead. The access token is cached until shortly
before `expires_in` runs out (thread-safe).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from workers.errors import DeliveryRejected, DeliveryRetryable

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300
REFRESH_MARGIN_S = 30


class TokenProvider(Protocol):
    """Gives a bearer token for the FHIR server; `invalidate` after a 401."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass
class StaticBearer:
    """A fixed bearer token (RADBRIDGE_FHIR_BEARER_TOKEN)."""

    value: str

    def token(self) -> str:
        """The token."""
        return self.value

    def invalidate(self) -> None:
        """Nothing to refresh."""


@dataclass
class SmartBackendServices:
    """Access tokens from a SMART token endpoint, cached until shortly before they expire."""

    token_url: str
    client_id: str
    private_key_pem: bytes
    key_id: str
    scope: str
    timeout: float = 30.0
    _token: str | None = None
    _expires_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0

    def assertion(self) -> str:
        """A freshly signed client assertion (unique jti, exp <= 5 minutes)."""
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
        }
        return jwt.encode(
            claims,
            self.private_key_pem,
            algorithm="RS384",
            headers={"kid": self.key_id, "typ": "JWT"},
        )

    def token(self) -> str:
        """A valid access token (fetched when none is cached or it is about to expire)."""
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at - REFRESH_MARGIN_S:
                return self._token
            self._token, lifetime = self._fetch()
            self._expires_at = time.monotonic() + lifetime
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the server said 401)."""
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        try:
            response = httpx.post(self.token_url, data=form, timeout=self.timeout)
        except httpx.TransportError as exc:
            raise DeliveryRetryable(f"token endpoint unreachable ({type(exc).__name__})") from None
        self.fetches += 1
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryRetryable(
                f"token endpoint answered {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            raise DeliveryRejected(
                f"token endpoint refused the client ({response.status_code})",
                status=response.status_code,
                outcome=None,
            )
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 300))
