"""The UI pages (server-rendered Jinja2; a little JavaScript for highlighting, confirmations,
the codes toggle and keyboard shortcuts; every page works without it).

Reviewer: `/ui/review` (worklist: patient, MRN, accession, exam, exam date; flagged first),
`/ui/reports/{id}` (patient banner, report text with `<mark data-evidence>` spans kept in view
beside the values, per Observation Accept / Correct / Reject / Undo, Accept all). Operator:
`/ui/messages` (filters: state, sender as the column shows it, MSH-10, accession, conflicts),
`/ui/messages/{id}`, `/ui/dead-letters` (requeue one or all; discard or resolve with a reason),
`/ui/metrics`. Every POST checks the CSRF token; every decision names the reviewer. Operator
pages never show report text or patient names.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from adapter.errors import StoreError, UiRefused
from adapter.reviews import (
    StoredObservation,
    console_messages,
    earlier_versions,
    message_detail,
    message_of_report,
    report_observations,
    save_review,
    undoable,
    worklist,
)
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import CLOSED, STATES
from adapter.ui import identity
from adapter.ui.auth import (
    LOGIN_COOKIE,
    LOGIN_FORM_MAX_AGE_S,
    SESSION_COOKIE,
    Sessions,
    User,
    check_csrf,
    require_role,
)
from adapter.ui.passwords import PasswordsBusy
from mappings.errors import MappingError, MessageRejected, RadbridgeError
from mappings.fhir_out import diagnostic_report_id
from mappings.review import (
    Correction,
    CorrectionField,
    Decision,
    Reviewer,
    ReviewRefused,
    correction_field,
    evidence,
    review,
    template_of,
)
from mappings.template import Template, load_templates

log = logging.getLogger("radbridge.ui")
PAGE = 50
MAX_FORM_BYTES = 64 * 1024
MAX_ID = 2**63 - 1  # the store's 64-bit integer ids
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")  # FHIR id


def whole_number(value: str, name: str, low: int = 0, high: int = MAX_ID) -> int:
    """`value` as an integer in [low, high], else UiRefused 400 naming `name` (ASCII digits
    only: no sign, no exponent, nothing the store cannot hold)."""
    number = int(value) if _DIGITS.match(value) else None
    if number is None or not low <= number <= high:
        raise UiRefused(400, f"{name} must be a whole number from {low} to {high}.")
    return number


def resource_id(value: str, what: str) -> str:
    """A FHIR id (letters, digits, `-` and `.`, at most 64), else UiRefused 404."""
    if not _RESOURCE_ID.match(value):
        raise UiRefused(404, f"No such {what}.")
    return value


@dataclass(frozen=True)
class Segment:
    """A piece of the report text; `evidence` = the Observation ids whose quote covers it."""

    text: str
    evidence: tuple[str, ...]


def segments(text: str, spans: list[tuple[int, int, str]]) -> list[Segment]:
    """The report text cut at every span boundary (overlapping spans allowed)."""
    valid = [(s, e, i) for s, e, i in spans if 0 <= s < e <= len(text)]
    cuts = sorted({0, len(text), *(s for s, _, _ in valid), *(e for _, e, _ in valid)})
    pieces = []
    for start, end in itertools.pairwise(cuts):
        covering = tuple(i for s, e, i in valid if s <= start and end <= e)
        pieces.append(Segment(text[start:end], covering))
    return pieces


@dataclass(frozen=True)
class ObservationView:
    """One Observation row of the review page."""

    id: str
    version: int
    status: str
    code: str
    value: str
    body_site: str
    confidence: str
    flags: tuple[str, ...]
    quote: str
    found: bool
    variable: str
    field: CorrectionField | None
    ai_value: str
    current: str = ""
    current_location: str = ""
    undoable: bool = False
    label: str = ""  # the finding's name without its codes (codes are behind a toggle)
    value_label: str = ""
    body_site_label: str = ""


MAX_REASON = 500  # characters of an operator's reason for closing a dead letter
_PRESENCE_CODES = {"52101004": "present", "2667000": "absent", "42425007": "uncertain"}


def _current(body: dict[str, Any], template: Template, variable_id: str) -> tuple[str, str]:
    """The stored value as the correction form's option (preselected) and its location id."""
    concept = body.get("valueCodeableConcept") or {}
    codes = [str(c.get("code")) for c in concept.get("coding") or []]
    current = ""
    if "valueInteger" in body:
        current = str(body["valueInteger"])
    elif "valueQuantity" in body:
        current = str(body["valueQuantity"].get("value", ""))
    elif codes and codes[0] in _PRESENCE_CODES:
        current = _PRESENCE_CODES[codes[0]]
    else:
        try:
            options = template.variable(variable_id).options
        except KeyError:
            options = ()
        for option in options:
            if (option.code and option.code.code in codes) or option.label == concept.get("text"):
                current = option.id
    site = body.get("bodySite") or {}
    site_codes = [str(c.get("code")) for c in site.get("coding") or []]
    location = next(
        (
            loc.id
            for loc in template.locations
            if (loc.code and loc.code.code in site_codes) or loc.label == site.get("text")
        ),
        "",
    )
    return current, location


def _label(concept: dict[str, Any] | None) -> str:
    """A concept's text (or first display) without its code."""
    if not concept:
        return ""
    codings = concept.get("coding") or []
    return str(concept.get("text") or (codings[0].get("display") if codings else "") or "")


def _value_label(resource: dict[str, Any]) -> str:
    if "valueCodeableConcept" in resource:
        text = _label(resource["valueCodeableConcept"])
        for component in resource.get("component") or []:
            text += f"; {_label(component.get('valueCodeableConcept'))}"
        return text
    return _value(resource)


def _text(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    codings = concept.get("coding") or []
    label = concept.get("text") or (codings[0].get("display") if codings else "") or ""
    if not codings:
        return str(label)
    system = str(codings[0].get("system", "")).rsplit("/", 1)[-1]
    return f"{label} ({system} {codings[0].get('code')})"


def _value(resource: dict[str, Any]) -> str:
    if "valueCodeableConcept" in resource:
        text = _text(resource["valueCodeableConcept"])
        for component in resource.get("component") or []:
            text += f"; {_text(component.get('valueCodeableConcept'))}"
        return text
    if "valueInteger" in resource:
        return str(resource["valueInteger"])
    if "valueQuantity" in resource:
        quantity = resource["valueQuantity"]
        return f"{quantity.get('value')} {quantity.get('unit', '')}".strip()
    return ""


def _ai_value(resource: dict[str, Any]) -> str:
    subs = evidence(resource)
    old = (subs.get("ai-value") or [None])[0]
    if isinstance(old, dict) and ("coding" in old or "text" in old):
        return _text(old)
    if isinstance(old, dict):
        return f"{old.get('value')} {old.get('unit', '')}".strip()
    return "" if old is None else str(old)


def _view(
    stored: StoredObservation, templates: dict[str, Template], can_undo: bool = False
) -> ObservationView:
    body = stored.body
    subs = evidence(body)
    ids = template_of(body)
    field = None
    variable_id = ids[1] if ids else ""
    current, location = "", ""
    if ids and ids[0] in templates:
        template = templates[ids[0]]
        try:
            field = correction_field(template, template.variable(ids[1]))
        except KeyError:
            field = None
        current, location = _current(body, template, variable_id)
    confidence = (subs.get("confidence") or [None])[0]
    return ObservationView(
        id=str(body["id"]),
        version=stored.version,
        status=str(body.get("status")),
        code=_text(body.get("code")),
        value=_value(body),
        body_site=_text(body.get("bodySite")),
        confidence=f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "",
        flags=tuple(str(f) for f in subs.get("flag", [])),
        quote=str((subs.get("quote") or [""])[0]),
        found=bool(subs.get("start")),
        variable=variable_id,
        field=field,
        ai_value=_ai_value(body),
        current=current,
        current_location=location,
        undoable=can_undo,
        label=_label(body.get("code")),
        value_label=_value_label(body),
        body_site_label=_label(body.get("bodySite")),
    )


def _day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise UiRefused(400, f"{name} must be a date (YYYY-MM-DD)") from None


def install_ui(app: FastAPI, settings: Settings, store: Store) -> None:
    """Mount the UI on the API app (no settings are read at import)."""
    from fastapi.staticfiles import StaticFiles

    sessions = Sessions(settings, store)
    app.state.ui_sessions = sessions  # its login throttle, for operators' tools and tests
    package = files("adapter.ui")
    env = Environment(
        loader=FileSystemLoader(str(package / "templates")),
        autoescape=select_autoescape(["html"]),
    )
    loaded: dict[str, Template] = {}
    identities = identity.Identities(store, settings)  # who and what each report is about

    def templates() -> dict[str, Template]:
        """The templates (built-in and RADBRIDGE_TEMPLATES_DIR), read on first use."""
        if not loaded:
            loaded.update(load_templates(settings.templates_dir))
        return loaded

    router = APIRouter(prefix="/ui", include_in_schema=False)
    celery: list[Any] = []

    def broker() -> Any | None:
        """The Celery app to enqueue on (None without a broker: reconcile picks work up)."""
        from adapter.queue import make_celery

        if not settings.redis_url:
            return None
        if not celery:
            celery.append(make_celery(settings))
        return celery[0]

    def dispatch(kind: str, value: Any) -> None:
        """Enqueue by task name (adapter never imports workers): a changed Bundle goes to every
        configured destination (`adapter.destinations`), a requeued message to extraction."""
        from adapter import destinations
        from adapter.queue import enqueue_extract

        app_ = broker()
        if kind == "deliver":
            destinations.dispatch(app_, settings, store, [value])
        elif app_ is not None:
            enqueue_extract(app_, value)
        if app_ is None:
            log.info("ui %s not enqueued: no broker configured (reconcile picks it up)", kind)

    def page(
        request: Request, name: str, user: User | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        body = env.get_template(name).render(
            request=request,
            user=user,
            development=sessions.development,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(body, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def ui_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UiRefused)
        status = getattr(exc, "status", type(exc).http_status)
        text = getattr(exc, "text", str(exc))
        if not request.url.path.startswith("/ui"):  # the API answers OperationOutcomes
            issue = {"severity": "error", "code": UiRefused.issue_code, "diagnostics": text}
            outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
            return JSONResponse(outcome, status_code=status, media_type="application/fhir+json")
        return error_page(request, status, text)

    def error_page(request: Request, status: int, text: str) -> HTMLResponse:
        """The HTML error page (the API's handlers use it for every error under /ui)."""
        try:
            user = sessions.user(request.cookies.get(SESSION_COOKIE)) if sessions.enabled else None
        except RadbridgeError:  # the store is away: the page still answers, signed out
            user = None
        return page(request, "error.html", user, status, message=text)

    app.add_exception_handler(UiRefused, ui_refused)
    app.state.ui_error_page = error_page

    def signed_in(request: Request, role: str | None) -> User | RedirectResponse:
        if not sessions.enabled:
            raise UiRefused(
                503,
                "The browser UI is off: RADBRIDGE_UI_USERS_FILE is not set (production needs "
                "configured users).",
            )
        user = sessions.user(request.cookies.get(SESSION_COOKIE))
        if user is None:
            target = urlencode({"next": request.url.path})
            return RedirectResponse(f"/ui/login?{target}", status_code=303)
        if role is not None:
            require_role(user, role)
        return user

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise UiRefused(413, "form too large")
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    async def posted(request: Request, role: str) -> tuple[User, dict[str, str]] | RedirectResponse:
        user = signed_in(request, None)
        if isinstance(user, RedirectResponse):
            return user
        data = await form(request)
        check_csrf(user, data.get("csrf"))
        require_role(user, role)
        return user, data

    @router.get("", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        user = signed_in(request, None)
        if isinstance(user, RedirectResponse):
            return user
        return RedirectResponse(
            "/ui/review" if "reviewer" in user.roles else "/ui/messages", status_code=303
        )

    def login_form(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        """The sign-in page with its CSRF token (hidden field + signed pre-session cookie)."""
        token, cookie = sessions.login_form_token(request.cookies.get(LOGIN_COOKIE))
        response = page(request, "login.html", None, status, csrf=token, **context)
        response.set_cookie(
            LOGIN_COOKIE,
            cookie,
            max_age=int(LOGIN_FORM_MAX_AGE_S),
            httponly=True,
            samesite="strict",
            secure=sessions.secure_cookie,
            path="/ui/login",
        )
        return response

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/ui") -> Response:
        if not sessions.enabled:
            raise UiRefused(503, "The browser UI is off: RADBRIDGE_UI_USERS_FILE is not set.")
        return login_form(request, next=next if next.startswith("/ui") else "/ui")

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if sessions.development:
            return RedirectResponse("/ui", status_code=303)
        if not sessions.enabled:
            raise UiRefused(503, "The browser UI is off: RADBRIDGE_UI_USERS_FILE is not set.")
        data = await form(request)
        # a forged sign-in (login CSRF) is refused before anything else
        sessions.check_login_csrf(request.cookies.get(LOGIN_COOKIE), data.get("csrf"))
        target = data.get("next", "/ui")
        target = target if target.startswith("/ui") and "//" not in target else "/ui"
        name = data.get("username", "")
        address = request.client.host if request.client else ""
        wait = max(
            sessions.throttle.refused_for(name), sessions.address_throttle.refused_for(address)
        )
        if wait > 0:
            log.info("ui login throttled")
            minutes = max(1, round(wait / 60))
            throttled = login_form(
                request,
                429,
                next=target,
                error=(
                    "Too many failed sign-ins for this user name or from this address: sign-in "
                    f"is refused for about {minutes} more minute{'s' if minutes != 1 else ''}. "
                    "Try again later or ask an administrator."
                ),
            )
            throttled.headers["Retry-After"] = str(int(wait) + 1)
            return throttled
        try:
            found = await sessions.login(name, data.get("password", ""))
        except PasswordsBusy as exc:
            busy = login_form(request, exc.status, next=target, error=exc.text)
            busy.headers["Retry-After"] = "5"
            return busy
        if found is None:
            locked = sessions.throttle.failed(name)
            locked = sessions.address_throttle.failed(address) or locked
            log.info("ui login refused%s", " (now throttled)" if locked else "")
            return login_form(request, 401, next=target, error="Wrong user name or password.")
        sessions.throttle.succeeded(name)
        user, cookie = found
        log.info("ui login role=%s", ",".join(sorted(user.roles)))
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=sessions.secure_cookie,
            path="/ui",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        user = signed_in(request, None)
        if isinstance(user, RedirectResponse):
            return user
        check_csrf(user, (await form(request)).get("csrf"))
        sessions.logout(request.cookies.get(SESSION_COOKIE))  # the cookie opens nothing now
        log.info("ui logout")
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    # -- reviewer ---------------------------------------------------------------------------
    @router.get("/review", response_class=HTMLResponse)
    async def review_list(
        request: Request, template: str = "", since: str = "", until: str = ""
    ) -> Response:
        user = signed_in(request, "reviewer")
        if isinstance(user, RedirectResponse):
            return user
        start, end = _day(since, "from"), _day(until, "to")
        items = worklist(
            store,
            template=template or None,
            since=start,
            until=end + timedelta(days=1) if end else None,
        )
        return page(
            request,
            "worklist.html",
            user,
            items=items,
            who={item.report_id: identities.of(item.report_id) for item in items},
            templates=sorted(templates()),
            template=template,
            since=since,
            until=until,
        )

    def report_text(report_id: str) -> str | None:
        """The normalised report text the evidence offsets point into (re-read from the
        stored message), or None when the message is not in the store."""
        from mappings.inbound import parse_message

        message_id = message_of_report(store, report_id)
        if message_id is None:
            return None
        try:
            reports = parse_message(
                store.raw(message_id),
                store.content_type(message_id),
                default_charset=settings.default_charset,
                default_language=settings.default_language,
            )
        except (MessageRejected, RadbridgeError):
            return None
        for report in reports:
            if diagnostic_report_id(report) == report_id or report.fhir_resource_id == report_id:
                return report.text
        return None

    @router.get("/reports/{report_id}", response_class=HTMLResponse)
    async def report_page(request: Request, report_id: str, done: str = "") -> Response:
        user = signed_in(request, "reviewer")
        if isinstance(user, RedirectResponse):
            return user
        report = store.get_resource("DiagnosticReport", resource_id(report_id, "report"))
        if report is None:
            raise UiRefused(404, "No such report.")
        stored = report_observations(store, report_id)
        can_undo = undoable(store, stored)
        views = [_view(o, templates(), str(o.body["id"]) in can_undo) for o in stored]
        text = report_text(report_id)
        spans = []
        for o in stored:
            subs = evidence(o.body)
            start, end = (subs.get("start") or [None])[0], (subs.get("end") or [None])[0]
            if isinstance(start, int) and isinstance(end, int):
                spans.append((start, end, str(o.body["id"])))
        return page(
            request,
            "report.html",
            user,
            report=report,
            report_id=report_id,
            who=identities.of(report_id),
            title=_label(report.get("code")) or "report",
            segments=segments(text, spans) if text is not None else None,
            observations=views,
            waiting=[v for v in views if v.status == "preliminary"],
            done=done,
        )

    def decide(
        user: User, report_id: str, observation_id: str, data: dict[str, str], decision: Decision
    ) -> str:
        resource_id(report_id, "report")
        resource_id(observation_id, "value in this report")
        stored = {str(o.body["id"]): o for o in report_observations(store, report_id)}
        current = stored.get(observation_id)
        if current is None:
            raise UiRefused(404, "That value is not part of this report.")
        raw_version = data.get("version", "")
        if not _DIGITS.match(raw_version):
            raise UiRefused(400, "The form does not say which version the decision was made on.")
        version = whole_number(raw_version, "version")
        ids = template_of(current.body)
        template = templates().get(ids[0]) if ids else None
        correction = None
        previous = None
        if decision is Decision.UNDO:  # the version the decision was made on comes back
            previous = earlier_versions(store, [(observation_id, current.version - 1)]).get(
                observation_id
            )
        if decision is Decision.CORRECT:
            correction = Correction(
                status=data.get("status") or None,
                value=data.get("value") or None,
                location=data.get("location") if "location" in data else None,
            )
        if version != current.version:
            raise UiRefused(
                409,
                f"This value changed since the page was loaded (now version {current.version}, "
                f"your decision was made on version {version}). Nothing was changed: reload the "
                "page and decide again.",
            )
        try:
            result = review(
                current.body,
                template,
                decision,
                Reviewer(user.name),
                new_version=version + 1,
                correction=correction,
                report=f"DiagnosticReport/{report_id}",
                previous=previous,
            )
            bundle_id = save_review(
                store,
                result,
                expected_version=version,
                reviewer=user.name,
                decision=decision.value,
            )
        except ReviewRefused as exc:
            raise UiRefused(exc.http_status, f"{exc} Nothing was changed.") from None
        except MappingError as exc:
            raise UiRefused(422, f"The decision cannot be applied: {exc}") from None
        dispatch("deliver", bundle_id)
        return bundle_id

    @router.post("/reports/{report_id}/observations/{observation_id}")
    async def decide_one(request: Request, report_id: str, observation_id: str) -> Response:
        found = await posted(request, "reviewer")
        if isinstance(found, RedirectResponse):
            return found
        user, data = found
        try:
            decision = Decision(data.get("decision", ""))
        except ValueError:
            raise UiRefused(400, "Choose Accept, Correct, Reject or Undo.") from None
        decide(user, report_id, observation_id, data, decision)
        return RedirectResponse(
            f"/ui/reports/{report_id}?done={decision.value}#obs-{observation_id}",
            status_code=303,
        )

    @router.post("/reports/{report_id}/accept-all")
    async def accept_all(request: Request, report_id: str) -> Response:
        found = await posted(request, "reviewer")
        if isinstance(found, RedirectResponse):
            return found
        user, data = found
        waiting = [
            o
            for o in report_observations(store, resource_id(report_id, "report"))
            if o.body.get("status") == "preliminary"
        ]
        for o in waiting:  # each carries the version shown on the page
            oid = str(o.body["id"])
            if f"v_{oid}" not in data:
                continue
            decide(user, report_id, oid, {"version": data[f"v_{oid}"]}, Decision.ACCEPT)
        return RedirectResponse(f"/ui/reports/{report_id}?done=accept-all", status_code=303)

    # -- operator ---------------------------------------------------------------------------
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
        user = signed_in(request, "operator")
        if isinstance(user, RedirectResponse):
            return user
        if state and state not in STATES:
            raise UiRefused(400, f"state must be one of {', '.join(STATES)}")
        start_at = whole_number(offset or "0", "offset", high=10**9)
        start, end = _day(since, "from"), _day(until, "to")
        rows, total = console_messages(
            store,
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
        query = {
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

        return page(
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
            destinations=destination_health(),
        )

    def destination_health() -> dict[str, dict[str, Any]]:
        from adapter import destinations

        return destinations.health(settings, store)

    async def metrics_lines(request: Request) -> list[tuple[str, str]]:
        """The Prometheus samples of `/metrics` (same app), without help lines."""
        for route in request.app.routes:
            if getattr(route, "path", None) == "/metrics":
                answer = await route.endpoint()
                text = bytes(answer.body).decode()
                return [
                    (line.rsplit(" ", 1)[0], line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line and not line.startswith("#") and " " in line
                ]
        return []

    @router.get("/metrics", response_class=HTMLResponse)
    async def metrics_page(request: Request) -> Response:
        user = signed_in(request, "operator")
        if isinstance(user, RedirectResponse):
            return user
        return page(request, "metrics.html", user, metrics=await metrics_lines(request))

    @router.get("/messages/{message_id}", response_class=HTMLResponse)
    async def message_page(request: Request, message_id: str) -> Response:
        user = signed_in(request, "operator")
        if isinstance(user, RedirectResponse):
            return user
        from adapter import destinations

        detail = message_detail(store, whole_number(message_id, "A message id", 1))
        if detail is None:
            raise UiRefused(404, f"No message {message_id}.")
        return page(
            request,
            "message.html",
            user,
            detail=detail,
            destinations=destinations.bundle_destinations(settings),
            resent=request.query_params.get("resent", ""),
        )

    @router.post("/messages/{message_id}/resend")
    async def resend(request: Request, message_id: str) -> Response:
        """Send a message's Bundles to one destination again, now (never re-extracted)."""
        from adapter import destinations

        found = await posted(request, "operator")
        if isinstance(found, RedirectResponse):
            return found
        chosen_id = whole_number(message_id, "A message id", 1)
        user, data = found
        name = data.get("destination", "")
        chosen = [d for d in destinations.bundle_destinations(settings) if d.name == name]
        if not chosen:
            raise UiRefused(400, "Choose a configured destination to resend to.")
        bundle_ids = store.bundles_of_message(chosen_id)
        if not bundle_ids:
            raise UiRefused(409, f"Message {chosen_id} has no result to send. Nothing was sent.")
        destinations.dispatch(broker(), settings, store, bundle_ids, [name], fresh=True)
        store.audit(chosen_id, "resend_by_operator", f"{name} by {user.name}")
        return RedirectResponse(f"/ui/messages/{chosen_id}?resent={name}", status_code=303)

    @router.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, done: str = "", closed: str = "") -> Response:
        user = signed_in(request, "operator")
        if isinstance(user, RedirectResponse):
            return user
        return page(
            request,
            "dead_letters.html",
            user,
            rows=store.dead_letters(),
            done=done,
            closed=closed,
            closed_rows=store.closed_dead_letters(),
        )

    def requeue(message_id: int) -> None:
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
        dispatch("extract", message_id)

    @router.post("/dead-letters/{message_id}/requeue")
    async def requeue_one(request: Request, message_id: str) -> Response:
        found = await posted(request, "operator")
        if isinstance(found, RedirectResponse):
            return found
        requeue(whole_number(message_id, "A message id", 1))
        return RedirectResponse(f"/ui/dead-letters?done={message_id}", status_code=303)

    @router.post("/dead-letters/requeue")
    async def requeue_many(request: Request) -> Response:
        found = await posted(request, "operator")
        if isinstance(found, RedirectResponse):
            return found
        _, data = found
        chosen = [whole_number(k[3:], "A message id", 1) for k in data if k.startswith("id_")]
        if data.get("all") == "1":
            chosen = [row.id for row in store.dead_letters()]
        if not chosen:
            raise UiRefused(400, "Choose at least one dead letter to requeue.")
        for message_id in chosen:
            requeue(message_id)
        return RedirectResponse(f"/ui/dead-letters?done={len(chosen)}", status_code=303)

    @router.post("/dead-letters/{message_id}/close")
    async def close_one(request: Request, message_id: str) -> Response:
        """Discard (it can never succeed) or resolve (handled outside radbridge) a dead letter,
        with a reason: audited; the stored message is kept."""
        found = await posted(request, "operator")
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
            store.close_dead_letter(chosen, outcome, reason, user.name)
        except StoreError:
            row = store.get_message(chosen)
            state = row.state if row else "unknown"
            raise UiRefused(
                409, f"Message {chosen} is not a dead letter ({state}). Nothing was changed."
            ) from None
        log.info("ui dead letter %s", outcome)
        return RedirectResponse(f"/ui/dead-letters?closed={outcome}+{chosen}", status_code=303)

    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(package / "static")), name="ui-static")
