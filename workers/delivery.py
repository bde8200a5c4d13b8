"""Push results to the EHR's FHIR server (RADBRIDGE_FHIR_BASE_URL) and over MLLP (ORU^R01).

`deliver_report` writes one report back against the EHR's own Patient and DiagnosticReport
(`mappings.ehr` decides what; this module reads the EHR, then sends): it finds the Patient and
the DiagnosticReport (searches by identifier with a system; two matches are refused, never
picked). Identifiers never appear in the URL of an HTTP request (nor in a request log): when
both are looked up they go as ONE FHIR `batch` (`POST <base>`, two `GET` entries: a search, or
the report's read; their URLs are in the request body; FHIR R4 RESTful API, batch/transaction,
https://hl7.org/fhir/R4/http.html#transaction: entries may be reads and searches, answered in
a `batch-response` entry by entry), an entry's failure handled as the
request's own would be; one lookup alone, or RADBRIDGE_EHR_BATCH_READS=false, is a
`POST Type/_search` (form body) or `GET DiagnosticReport/<id>`. Then it posts ONE transaction:
radbridge's changed resources and the EHR's DiagnosticReport with their links, a `PUT` with
`ifMatch` on the version read (`ehr.write_transaction`), so the results and the report's link
to them land together or not at all (a new report: one batch read and one transaction). An update alone is a plain `PUT` with `If-Match`; with RADBRIDGE_EHR_PATCH the
report gets a JSON Patch (with `If-Match`) after the transaction. A 409/412 (a stale version:
the whole transaction refused) is re-read and retried once, then `DeliveryConflict`. Last, the
decisions' Provenance goes with the versions the EHR returned. `deliver_bundle` posts one
transaction Bundle as it is.

`read_states` reads the state of several reports (an extraction task's pushes) in ONE batch,
each report's two entries as above, for `deliver_report`'s first attempt; an entry's failure or
a refusal stays its own report's. A report that shares a Patient identifier or a report key
with another of them reads on its own, at its turn: the first one's write may create the
Patient (RADBRIDGE_EHR_PATIENT=create) or the report that the other's stale read would
duplicate. A report read ahead and changed meanwhile is safe: its update carries `ifMatch`, and
the conflict's retry reads afresh.

radbridge's own entries are `PUT Type/id` with deterministic ids, so a retry never duplicates.
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
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from adapter.settings import Settings
from mappings import ehr
from mappings.errors import AmbiguousMatch, IdentityRefused
from mappings.media_types import FHIR_JSON, FORM
from mappings.report import Report
from workers.errors import DeliveryConflict, DeliveryError, DeliveryRejected, DeliveryRetryable
from workers.smart_auth import SmartBackendServices, StaticBearer, TokenProvider

log = logging.getLogger("radbridge.delivery")


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
    """POST one transaction Bundle as it is to the FHIR base URL (one retry after a 401 with a
    new token); 408/429/5xx/409/412 retryable, other 4xx rejected with the OperationOutcome."""
    if not settings.fhir_base_url:
        raise DeliveryError("no delivery target: RADBRIDGE_FHIR_BASE_URL is not set")
    started = time.perf_counter()
    with _connected(settings, client, auth) as server:
        response = server.checked(server.request("POST", "", body=bundle), "Bundle")
    seconds = time.perf_counter() - started
    log.info(
        "delivery bundle=%s status=%d seconds=%.3f", bundle.get("id"), response.status_code, seconds
    )
    body = response.json() if response.content else {}
    statuses = tuple(
        str((entry.get("response") or {}).get("status", ""))
        for entry in body.get("entry", [])
        if isinstance(entry, dict)
    )
    return DeliveryResult(status=response.status_code, entry_statuses=statuses, seconds=seconds)


@dataclass(frozen=True)
class WriteBack:
    """A report written back: `hashes` of what the EHR now holds of it (to record), `sent`
    False when nothing had changed (or the report adds nothing: no Observation)."""

    hashes: dict[str, str]
    sent: bool
    seconds: float


def identity_policy(settings: Settings) -> ehr.IdentityPolicy:
    """The identity settings as `mappings.ehr` takes them."""
    return ehr.IdentityPolicy(
        identifier_systems=dict(settings.identifier_systems),
        accession_systems=dict(settings.accession_systems),
        patient_system=settings.patient_identifier_system,
        create_patient=settings.ehr_patient == "create",
        create_reviewer=settings.ehr_reviewer == "create",
        reviewer_system=settings.reviewer_identifier_system,
    )


def _refused(exc: IdentityRefused) -> DeliveryRejected:
    outcome: dict[str, object] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": exc.issue_code, "diagnostics": str(exc)}],
    }
    return DeliveryRejected(str(exc), status=exc.http_status, outcome=outcome)


@contextmanager
def _connected(
    settings: Settings, client: httpx.Client | None, auth: TokenProvider | None
) -> Iterator[_Ehr]:
    """The EHR's FHIR base over `client` (else a client of its own, closed after the block)
    with `auth` (else RADBRIDGE_SMART_* / the configured token provider)."""
    assert settings.fhir_base_url is not None
    provider = auth if auth is not None else token_provider(settings)
    http = client or httpx.Client(timeout=settings.delivery_timeout_s)
    try:
        yield _Ehr(http, settings.fhir_base_url, provider)
    finally:
        if client is None:
            http.close()


class _Ehr:
    """HTTP to the EHR's FHIR base: one new token after a 401, errors classified."""

    def __init__(self, http: httpx.Client, base_url: str, provider: TokenProvider | None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.provider = provider

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}/{path}" if path else f"{self.base_url}/"
        content = json.dumps(body) if body is not None else None
        if form is not None:  # a search: its parameters stay out of URLs and request logs
            content = urlencode(form)
        for attempt in (1, 2):
            sent = {"Accept": FHIR_JSON, **(headers or {})}
            if form is not None:
                sent["Content-Type"] = FORM
            elif body is not None:
                sent.setdefault("Content-Type", FHIR_JSON)
            if self.provider is not None:
                sent["Authorization"] = f"Bearer {self.provider.token()}"
            try:
                response = self.http.request(method, url, content=content, headers=sent)
            except httpx.TransportError as exc:
                log.warning("ehr %s transport error %s", method, type(exc).__name__)
                raise DeliveryRetryable(f"FHIR server unreachable ({type(exc).__name__})") from None
            if response.status_code == 401 and self.provider is not None and attempt == 1:
                self.provider.invalidate()
                continue
            return response
        raise AssertionError("unreachable")

    def checked(self, response: httpx.Response, what: str) -> httpx.Response:
        status = response.status_code
        if 200 <= status < 300:
            return response
        raise _failure(
            status,
            what,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            outcome=_outcome(response),
        )

    def transaction(self, bundle: dict[str, Any], what: str) -> dict[str, Any]:
        """POST a transaction; its transaction-response. An entry answered with a failure in a
        2xx (a server that runs a transaction like a batch: Medplum's router answers a stale
        `ifMatch` so) fails it like that status would: 409/412 a conflict."""
        response = self.checked(self.request("POST", "", body=bundle), what)
        answer = response.json() if response.content else {}
        if not isinstance(answer, dict):
            return {}
        for entry in answer.get("entry", []):
            reply = _Answer.of(entry, None)
            if reply.status and not 200 <= reply.status < 300:  # 0: no status given
                raise _failure(reply.status, f"{what} (an entry)", outcome=reply.outcome)
        return answer

    def search(self, kind: str, key: ehr.Key) -> list[dict[str, Any]]:
        response = self.checked(
            self.request(
                "POST", f"{kind}/_search", form={"identifier": f"{key.system}|{key.value}"}
            ),
            f"{kind} search",
        )
        return _matches(response.json(), kind)

    def batch(self, urls: list[str]) -> list[_Answer]:
        """GET each of `urls` (`Type?params` or `Type/id`) in one FHIR batch; each entry's answer.
        The request's own failure is classified as any; an entry 401 gets one new token."""
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in urls],
        }
        for attempt in (1, 2):
            response = self.checked(self.request("POST", "", body=bundle), "batch read")
            body = response.json() if response.content else {}
            entries = body.get("entry") if isinstance(body, dict) else None
            if not isinstance(entries, list) or len(entries) != len(urls):
                raise DeliveryRejected(
                    "the EHR's batch-response does not answer each entry "
                    "(RADBRIDGE_EHR_BATCH_READS=false reads with one search each)",
                    status=response.status_code,
                    outcome=None,
                )
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            answers = [_Answer.of(entry, retry_after) for entry in entries]
            if attempt == 1 and self.provider is not None and any(a.status == 401 for a in answers):
                self.provider.invalidate()
                continue
            return answers
        raise AssertionError("unreachable")

    def read(self, reference: str) -> dict[str, Any] | None:
        response = self.request("GET", reference)
        if response.status_code in (404, 410):
            return None
        found: dict[str, Any] = self.checked(response, "read").json()
        return found


def _matches(body: Any, kind: str) -> list[dict[str, Any]]:
    """The `kind` resources a searchset Bundle matched (its `include`s left out)."""
    entries = body.get("entry", []) if isinstance(body, dict) else []
    return [
        e["resource"]
        for e in entries
        if isinstance(e, dict)
        and (e.get("resource") or {}).get("resourceType") == kind
        and (e.get("search") or {}).get("mode", "match") == "match"
    ]


@dataclass(frozen=True)
class _Answer:
    """One entry of a batch-response: its status, resource and OperationOutcome."""

    status: int
    resource: dict[str, Any] | None
    outcome: dict[str, Any] | None
    retry_after: float | None  # the batch response's Retry-After (an entry has none)

    @classmethod
    def of(cls, entry: Any, retry_after: float | None) -> _Answer:
        entry = entry if isinstance(entry, dict) else {}
        reply = entry.get("response") or {}
        code = str(reply.get("status", "") if isinstance(reply, dict) else "").split(" ", 1)[0]
        outcome = reply.get("outcome") if isinstance(reply, dict) else None
        resource = entry.get("resource")
        return cls(
            int(code) if code.isdigit() else 0,
            resource if isinstance(resource, dict) else None,
            outcome if isinstance(outcome, dict) else None,
            retry_after,
        )

    def checked(self, what: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """The entry's resource, or its failure raised as the request's own would be; None for
        a read answered 404/410 when `missing_ok`."""
        if missing_ok and self.status in (404, 410):
            return None
        if not 200 <= self.status < 300:
            raise _failure(self.status, what, retry_after=self.retry_after, outcome=self.outcome)
        if self.resource is None:  # never read as "none there": that would write a duplicate
            raise DeliveryRejected(
                f"the EHR's batch-response answered the {what} without a resource",
                status=self.status,
                outcome=None,
            )
        return self.resource


def _failure(
    status: int,
    what: str,
    *,
    retry_after: float | None = None,
    outcome: dict[str, Any] | None = None,
) -> DeliveryError:
    """A non-2xx answer classified: 409/412 a conflict, 408/429/5xx retryable, else rejected."""
    if status in (409, 412):
        return DeliveryConflict(f"the EHR answered {status} to the {what}", status=status)
    if status in (408, 429) or status >= 500:
        return DeliveryRetryable(
            f"FHIR server answered {status} to the {what}", status=status, retry_after=retry_after
        )
    return DeliveryRejected(
        f"FHIR server refused the {what} ({status})", status=status, outcome=outcome
    )


def _one(found: list[dict[str, Any]], kind: str, key: ehr.Key) -> dict[str, Any] | None:
    if len(found) > 1:
        raise AmbiguousMatch(
            f"{len(found)} {kind} resources at the EHR match one identifier (system "
            f"{key.system}): radbridge does not pick one; merge them at the EHR, then resend"
        )
    return found[0] if found else None


def _batched(who: ehr.Identity) -> bool:
    """Whether a report's reads are one batch: its Patient by identifier and its report."""
    return (
        who.patient_reference is None
        and who.patient_key is not None
        and bool(who.report_reference or who.report_key)
    )


def _read_urls(who: ehr.Identity) -> list[str]:
    """A batched report's two GET entries: its Patient search, its report's read or search."""
    assert who.patient_key is not None
    report_url = who.report_reference or f"DiagnosticReport?{_key(who).query}"
    return [f"Patient?{who.patient_key.query}", report_url]


def _read_state(
    server: _Ehr, who: ehr.Identity, policy: ehr.IdentityPolicy, *, batch: bool = True
) -> ehr.EhrState:
    """The EHR's Patient and DiagnosticReport of a report: one batch when both are looked up
    and `batch` (RADBRIDGE_EHR_BATCH_READS), else a request each; refusals in the same order."""
    answers = server.batch(_read_urls(who)) if batch and _batched(who) else None
    return _state_of(server, who, policy, answers)


def _state_of(
    server: _Ehr,
    who: ehr.Identity,
    policy: ehr.IdentityPolicy,
    answers: Sequence[_Answer] | None,
) -> ehr.EhrState:
    """A report's EHR state from its batch's two answers (`_read_urls`' order), else read with a
    request each; a read answered 404 is followed by the report's search."""
    key = who.patient_key if who.patient_reference is None else None
    patient = who.patient_reference
    if key is not None:
        found = (
            _matches(answers[0].checked("Patient search"), "Patient")
            if answers
            else server.search("Patient", key)
        )
        found_patient = _one(found, "Patient", key)
        if found_patient is not None:
            patient = f"Patient/{found_patient['id']}"
        elif not policy.create_patient:
            raise IdentityRefused(
                f"no Patient at the EHR has the report's identifier (system "
                f"{key.system}); RADBRIDGE_EHR_PATIENT=match writes results only "
                "against an existing Patient"
            )
    report: dict[str, Any] | None = None
    if who.report_reference:
        report = (
            answers[1].checked("read", missing_ok=True)
            if answers
            else server.read(who.report_reference)
        )
    if report is None and who.report_key is not None:
        reports = (
            _matches(answers[1].checked("DiagnosticReport search"), "DiagnosticReport")
            if answers and not who.report_reference
            else server.search("DiagnosticReport", who.report_key)
        )  # a read answered 404: the search after it
        report = _one(reports, "DiagnosticReport", who.report_key)
    version = str((report or {}).get("meta", {}).get("versionId") or "") or None
    return ehr.EhrState(patient=patient, report=report, report_version=version)


PreRead = ehr.EhrState | DeliveryError | IdentityRefused
"""A report's EHR state read ahead with others' (`read_states`), or what its own read raised."""


def _written_keys(who: ehr.Identity) -> set[tuple[str, object]]:
    """What a report's write may find or create at the EHR: its Patient's identifiers, its
    report's reference and identifier."""
    keys: set[tuple[str, object]] = {("Patient", key) for key in who.patient_identifiers}
    keys |= {("Patient", who.patient_key), ("DiagnosticReport", who.report_key)}
    keys |= {("DiagnosticReport", who.report_reference)}
    return {(kind, key) for kind, key in keys if key is not None}


def _read_ahead(reports: Sequence[Report], policy: ehr.IdentityPolicy) -> list[ehr.Identity | None]:
    """The identity of each report whose state may be read ahead, else None: a report whose
    reads are one batch and that shares no Patient identifier or report key with another of
    `reports` (the first one's write may create what the other would then duplicate)."""
    identities: list[ehr.Identity | None] = []
    for report in reports:
        try:
            identities.append(ehr.identity(report, policy))
        except IdentityRefused:  # refused at its own turn, without a request
            identities.append(None)
    seen: Counter[tuple[str, object]] = Counter(
        key for who in identities if who is not None for key in _written_keys(who)
    )
    return [
        who
        if who is not None and _batched(who) and all(seen[k] == 1 for k in _written_keys(who))
        else None
        for who in identities
    ]


def read_states(
    reports: Sequence[Report],
    settings: Settings,
    *,
    client: httpx.Client | None = None,
    auth: TokenProvider | None = None,
) -> list[PreRead | None]:
    """The EHR states of several reports read in ONE FHIR batch (each report's two entries, as
    its own read), for `deliver_report`'s `state`: per report its state, or the refusal or
    entry failure its own read would raise; None where it must read on its own (not a batch
    read, a key shared with another report, RADBRIDGE_EHR_BATCH_READS=false, or fewer than two
    reports to read). The batch request's own failure is raised (DeliveryError)."""
    found: list[PreRead | None] = [None] * len(reports)
    if not settings.fhir_base_url or not settings.ehr_batch_reads:
        return found
    policy = identity_policy(settings)
    ahead = [(n, who) for n, who in enumerate(_read_ahead(reports, policy)) if who is not None]
    if len(ahead) < 2:  # a batch of one saves no request
        return found
    started = time.perf_counter()
    with _connected(settings, client, auth) as server:
        answers = server.batch([url for _, who in ahead for url in _read_urls(who)])
        for at, (n, who) in enumerate(ahead):
            try:
                found[n] = _state_of(server, who, policy, answers[2 * at : 2 * at + 2])
            except (DeliveryError, IdentityRefused) as exc:
                found[n] = exc
    log.info(
        "ehr read ahead reports=%d of=%d seconds=%.3f",
        len(ahead), len(reports), time.perf_counter() - started,
    )  # fmt: skip
    return found


def _key(who: ehr.Identity) -> ehr.Key:
    assert who.report_key is not None
    return who.report_key


def _send_plan(
    server: _Ehr,
    bundle: dict[str, Any],
    plan: ehr.Plan,
    policy: ehr.IdentityPolicy,
    delivered: dict[str, str],
    base_url: str,
) -> tuple[dict[str, str], bool]:
    """Send one write-back plan (`deliver_report`): its transaction, with the report's update
    when there is one, else the report's update alone (PUT, or a JSON Patch), then the review
    transaction; (the review hashes, whether anything was sent). DeliveryConflict when the EHR
    refuses a conditional write."""
    versions: dict[str, str] = {}
    sent = False
    transaction = ehr.write_transaction(plan, base_url=base_url)
    if transaction is not None:  # with the report's update, when there is one
        versions = ehr.versions_from_response(server.transaction(transaction, "transaction"))
        sent = True
    alone = plan.report_update if transaction is None else None
    if alone is not None or plan.patch is not None:
        patching = alone is None  # JSON Patch, else the whole resource
        headers = {"Content-Type": "application/json-patch+json"} if patching else {}
        if plan.report_version:
            headers["If-Match"] = f'W/"{plan.report_version}"'
        server.checked(
            server.request(
                "PATCH" if patching else "PUT", plan.report_reference,
                body=plan.patch if patching else alone, headers=headers,
            ),
            "DiagnosticReport update",
        )  # fmt: skip
        sent = True
    reviews, review_hashes = ehr.review_transaction(
        bundle, plan, versions, policy, delivered, base_url=base_url
    )
    if reviews is not None:
        server.transaction(reviews, "review transaction")
        sent = True
    return review_hashes, sent


def deliver_report(
    bundle: dict[str, Any],
    report: Report | None,
    settings: Settings,
    delivered: dict[str, str],
    *,
    client: httpx.Client | None = None,
    auth: TokenProvider | None = None,
    state: PreRead | None = None,
) -> WriteBack:
    """Write one report's current state back to the EHR (see the module docstring).
    `delivered`: the hashes recorded by the last delivery (only what changed is sent);
    `state`: its EHR state read ahead (`read_states`), used by the first attempt only (a
    conflict's retry reads again). DeliveryRejected (with an OperationOutcome) when the
    identity policy refuses it."""
    if not settings.fhir_base_url:
        raise DeliveryError("no delivery target: RADBRIDGE_FHIR_BASE_URL is not set")
    if not ehr.has_content(bundle):
        return WriteBack(hashes=dict(delivered), sent=False, seconds=0.0)
    if report is None:
        raise _refused(IdentityRefused("the Bundle has no source message: its identity is unknown"))
    policy = identity_policy(settings)
    with _connected(settings, client, auth) as server:
        started = time.perf_counter()
        try:
            who = ehr.identity(report, policy)
            for attempt in (1, 2):
                ahead = state if attempt == 1 else None  # a conflict's retry reads again
                current = _current_state(server, who, policy, settings, ahead)
                plan = ehr.plan(
                    bundle, who, current, policy, delivered,
                    base_url=settings.fhir_base_url, patch=settings.ehr_patch,
                    hold_flags=settings.flags_hold_until_review,
                )  # fmt: skip
                try:
                    review_hashes, sent = _send_plan(
                        server, bundle, plan, policy, delivered, settings.fhir_base_url
                    )
                except DeliveryConflict as conflict:
                    log.info(
                        "delivery bundle=%s conflict=%s attempt=%d",
                        bundle.get("id"), conflict.status, attempt,
                    )  # fmt: skip
                    if attempt == 2:
                        raise DeliveryConflict(
                            f"the EHR answered {conflict.status} to a conditional write twice",
                            status=conflict.status,
                        ) from None
                    continue
                seconds = time.perf_counter() - started
                log.info("delivery bundle=%s sent=%s seconds=%.3f", bundle.get("id"), sent, seconds)
                return WriteBack(
                    hashes={**plan.hashes, **review_hashes}, sent=sent, seconds=seconds
                )
        except IdentityRefused as exc:
            log.warning("delivery bundle=%s refused: %s", bundle.get("id"), type(exc).__name__)
            raise _refused(exc) from None
    raise AssertionError("unreachable")


def _current_state(
    server: _Ehr,
    who: ehr.Identity,
    policy: ehr.IdentityPolicy,
    settings: Settings,
    ahead: PreRead | None,
) -> ehr.EhrState:
    """The state read ahead, else the report's own read. What the read ahead raised is
    raised when it is retryable; a refusal (no Patient under `match`, an entry refused, two
    matches) is the report's own read's to make: the read ahead may be up to a task's
    pushes old, and a refusal is final."""
    if isinstance(ahead, ehr.EhrState):
        return ahead
    if isinstance(ahead, DeliveryRetryable):
        raise ahead
    return _read_state(server, who, policy, batch=settings.ehr_batch_reads)


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


def oru_control_id(content: bytes) -> str:
    """The ORU's MSH-10 from its content (built with an empty MSH-10 and a fixed MSH-7): the same
    for every send of the same content (a retry, a re-send after requeue), new when the content
    changes (a corrected result is a new message). 'RB' + 18 hex digits of its SHA-256: fits
    ST(20)."""
    import hashlib

    return "RB" + hashlib.sha256(content).hexdigest()[:18]


@dataclass(frozen=True)
class OruMessage:
    """One ORU^R01 to send and the result statuses it carries (`mappings.hl7.oru_out.result_statuses`:
    recorded once delivered, so the next message knows what this destination holds)."""

    message: bytes
    statuses: dict[str, str]


def oru_message(
    bundle: dict[str, Any],
    report: Report | None,
    settings: Settings,
    sent: dict[str, str] | None = None,
) -> OruMessage:
    """The ORU^R01 of one Bundle (MSH-3..6 from settings), with its content-derived MSH-10;
    `sent`: the statuses this destination already got (OBX-11 C/W follow them)."""
    from mappings.hl7.oru_out import oru_from_bundle, result_statuses

    def build(control_id: str, now: datetime | None) -> bytes:
        return oru_from_bundle(
            bundle,
            control_id=control_id,
            report=report,
            sending_application=settings.oru_sending_application,
            sending_facility=settings.oru_sending_facility,
            receiving_application=settings.oru_receiving_application,
            receiving_facility=settings.oru_receiving_facility,
            now=now,
            sent=sent,
            hold_flags=settings.flags_hold_until_review,
        )

    message = build(oru_control_id(build("", datetime(2000, 1, 1, tzinfo=UTC))), None)
    return OruMessage(
        message, result_statuses(bundle, sent, hold_flags=settings.flags_hold_until_review)
    )


def deliver_oru_message(
    bundle: dict[str, Any],
    settings: Settings,
    report: Report | None = None,
    sent: dict[str, str] | None = None,
) -> OruMessage:
    """Send a Bundle as ORU^R01 over MLLP to RADBRIDGE_ORU_TARGET; returns what was sent
    (its statuses to record as what the destination now holds).

    AA/CA -> done; AE/CE or no answer -> DeliveryRetryable; AR/CR -> DeliveryRejected.
    A resend of the same content carries the same MSH-10 (`oru_control_id`), so the receiver
    can de-duplicate it.
    """
    from mappings.hl7.ack import Disposition, classify_ack

    built = oru_message(bundle, report, settings, sent)
    ack = send_mllp(settings.oru_target or "", built.message, settings.delivery_timeout_s)
    outcome, answered = classify_ack(ack)
    code = answered or ""
    log.info("oru delivery bundle=%s ack=%s", bundle.get("id"), code)
    if outcome is Disposition.ACCEPTED:
        return built
    if outcome is Disposition.REJECTED:
        raise DeliveryRejected(
            f"ORU target rejected the message ({code})", status=400, outcome=None
        )
    raise DeliveryRetryable(f"ORU target answered {code or 'no MSA'}")


_CLIENTS: dict[float, httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def http_client(settings: Settings) -> httpx.Client:
    """The process's HTTP client for FHIR delivery (made once per process, after the fork;
    thread-safe): a new client per delivery cost ~20-170 ms of TLS set-up (its certificate
    store) and a new connection to the EHR each time."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(settings.delivery_timeout_s)
        if client is None:
            client = _CLIENTS[settings.delivery_timeout_s] = httpx.Client(
                timeout=settings.delivery_timeout_s
            )
        return client


@dataclass(frozen=True)
class Pushed:
    """What one push of a Bundle left at its destination, to record: `status` (the HTTP status
    when something was sent, else None) and `delivered` (what the destination now holds: the
    FHIR write-back's hashes, the ORU's result statuses)."""

    status: int | None
    delivered: dict[str, str]


class Push(Protocol):
    """A destination's push: (Bundle, source report, settings, what it holds already) -> Pushed;
    `state`: the EHR state read ahead (`read_states`, the FHIR push's), else None."""

    def __call__(
        self,
        bundle: dict[str, Any],
        report: Report | None,
        settings: Settings,
        delivered: dict[str, str],
        /,
        *,
        state: PreRead | None = None,
    ) -> Pushed: ...


def push_fhir(
    bundle: dict[str, Any],
    report: Report | None,
    settings: Settings,
    delivered: dict[str, str],
    *,
    state: PreRead | None = None,
) -> Pushed:
    """Write a report back to the EHR's FHIR server (`deliver_report`; `state` read ahead)."""
    result = deliver_report(
        bundle, report, settings, delivered, client=http_client(settings), state=state
    )
    return Pushed(200 if result.sent else None, result.hashes)


def push_oru(
    bundle: dict[str, Any],
    report: Report | None,
    settings: Settings,
    delivered: dict[str, str],
    *,
    state: PreRead | None = None,
) -> Pushed:
    """Send a Bundle as ORU^R01 (`deliver_oru_message`): the next OBX-11 C/W follow what the
    receiver holds (`state`, an EHR read, is not used)."""
    return Pushed(None, deliver_oru_message(bundle, settings, report, delivered).statuses)


PUSHES: dict[str, Push] = {"fhir": push_fhir, "oru": push_oru}
"""How each Bundle destination of `adapter.destinations`' table is pushed, by its name."""
