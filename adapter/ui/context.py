"""What every UI view shares: the settings, store, sessions and page rendering of one app
(`UiContext`, kept in `app.state.ui` by `install_ui`), sign-in checks, form reading and the
checks of path and query values."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from importlib.resources import files
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from adapter.errors import UiRefused
from adapter.settings import Settings
from adapter.store import Store
from adapter.ui import identity
from adapter.ui.auth import SESSION_COOKIE, Sessions, User, check_csrf, require_role
from mappings.errors import RadbridgeError
from mappings.template import Template, load_templates

log = logging.getLogger("radbridge.ui")
PAGE = 50
MAX_FORM_BYTES = 64 * 1024
MAX_ID = 2**63 - 1  # the store's 64-bit integer ids
MAX_REASON = 500  # characters of an operator's reason for closing a dead letter
DIGITS = re.compile(r"^[0-9]{1,19}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")  # FHIR id
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def whole_number(value: str, name: str, low: int = 0, high: int = MAX_ID) -> int:
    """`value` as an integer in [low, high], else UiRefused 400 naming `name` (ASCII digits
    only: no sign, no exponent, nothing the store cannot hold)."""
    number = int(value) if DIGITS.match(value) else None
    if number is None or not low <= number <= high:
        raise UiRefused(400, f"{name} must be a whole number from {low} to {high}.")
    return number


def resource_id(value: str, what: str) -> str:
    """A FHIR id (letters, digits, `-` and `.`, at most 64), else UiRefused 404."""
    if not _RESOURCE_ID.match(value):
        raise UiRefused(404, f"No such {what}.")
    return value


def day(value: str | None, name: str) -> datetime | None:
    """A `YYYY-MM-DD` filter as midnight UTC (None when empty), else UiRefused 400."""
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise UiRefused(400, f"{name} must be a date (YYYY-MM-DD)") from None


class UiContext:
    """The UI of one app: settings, store, sessions, templates and the broker to enqueue on
    (no settings are read at import)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.sessions = Sessions(settings, store)
        self.env = Environment(
            loader=FileSystemLoader(str(files("adapter.ui") / "templates")),
            autoescape=select_autoescape(["html"]),
        )
        self.identities = identity.Identities(store, settings)  # who each report is about
        self._templates: dict[str, Template] = {}
        self._celery: list[Any] = []

    def templates(self) -> dict[str, Template]:
        """The templates (built-in and RADBRIDGE_TEMPLATES_DIR), read on first use."""
        if not self._templates:
            self._templates.update(load_templates(self.settings.templates_dir))
        return self._templates

    def broker(self) -> Any | None:
        """The Celery app to enqueue on (None without a broker: reconcile picks work up)."""
        from adapter.queue import make_celery

        if not self.settings.redis_url:
            return None
        if not self._celery:
            self._celery.append(make_celery(self.settings))
        return self._celery[0]

    def dispatch(self, kind: str, value: Any) -> None:
        """Enqueue by task name (adapter never imports workers): a changed Bundle goes to every
        configured destination (`adapter.destinations`), a requeued message to extraction."""
        from adapter import destinations
        from adapter.queue import enqueue_extract

        app_ = self.broker()
        if kind == "deliver":
            destinations.dispatch(app_, self.settings, self.store, [value])
        elif app_ is not None:
            enqueue_extract(app_, value)
        if app_ is None:
            log.info("ui %s not enqueued: no broker configured (reconcile picks it up)", kind)

    def page(
        self, request: Request, name: str, user: User | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A rendered page, never cached, under the UI's content security policy."""
        body = self.env.get_template(name).render(
            request=request,
            user=user,
            development=self.sessions.development,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(body, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def error_page(self, request: Request, status: int, text: str) -> HTMLResponse:
        """The HTML error page (the API's handlers use it for every error under /ui)."""
        sessions = self.sessions
        try:
            user = sessions.user(request.cookies.get(SESSION_COOKIE)) if sessions.enabled else None
        except RadbridgeError:  # the store is away: the page still answers, signed out
            user = None
        return self.page(request, "error.html", user, status, message=text)

    def signed_in(self, request: Request, role: str | None) -> User | RedirectResponse:
        """The signed-in user (with `role` when given), or the redirect to the sign-in page."""
        if not self.sessions.enabled:
            raise UiRefused(
                503,
                "The browser UI is off: RADBRIDGE_UI_USERS_FILE is not set (production needs "
                "configured users).",
            )
        user = self.sessions.user(request.cookies.get(SESSION_COOKIE))
        if user is None:
            target = urlencode({"next": request.url.path})
            return RedirectResponse(f"/ui/login?{target}", status_code=303)
        if role is not None:
            require_role(user, role)
        return user

    async def posted(
        self, request: Request, role: str
    ) -> tuple[User, dict[str, str]] | RedirectResponse:
        """A POST's user (with `role`) and form, its CSRF token checked."""
        user = self.signed_in(request, None)
        if isinstance(user, RedirectResponse):
            return user
        data = await form(request)
        check_csrf(user, data.get("csrf"))
        require_role(user, role)
        return user, data


async def form(request: Request) -> dict[str, str]:
    """A url-encoded form (the last value of each field), refused above MAX_FORM_BYTES."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UiRefused(413, "form too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def ui_of(request: Request) -> UiContext:
    """The UI context of the app serving `request`."""
    return cast(UiContext, request.app.state.ui)
