"""Sign-in, sign-out and the UI's home (which sends each role to its first page)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapter.errors import UiRefused
from adapter.ui.auth import (
    LOGIN_COOKIE,
    LOGIN_FORM_MAX_AGE_S,
    SESSION_COOKIE,
    User,
    check_csrf,
)
from adapter.ui.context import UiContext, form, log, ui_of
from adapter.ui.passwords import PasswordsBusy

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    user = ui_of(request).signed_in(request, None)
    if isinstance(user, RedirectResponse):
        return user
    return RedirectResponse(
        "/ui/review" if "reviewer" in user.roles else "/ui/messages", status_code=303
    )


def login_form(ui: UiContext, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    """The sign-in page with its CSRF token (hidden field + signed pre-session cookie)."""
    sessions = ui.sessions
    token, cookie = sessions.login_form_token(request.cookies.get(LOGIN_COOKIE))
    response = ui.page(request, "login.html", None, status, csrf=token, **context)
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
    ui = ui_of(request)
    if not ui.sessions.enabled:
        raise UiRefused(503, "The browser UI is off: RADBRIDGE_UI_USERS_FILE is not set.")
    return login_form(ui, request, next=next if next.startswith("/ui") else "/ui")


def _throttled(ui: UiContext, request: Request, target: str, wait: float) -> Response:
    """429: too many failed sign-ins for the name or from the address."""
    log.info("ui login throttled")
    minutes = max(1, round(wait / 60))
    throttled = login_form(
        ui,
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


def _signed_in_response(ui: UiContext, user: User, cookie: str, target: str) -> Response:
    """The redirect to `target` that sets the session cookie."""
    log.info("ui login role=%s", ",".join(sorted(user.roles)))
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=ui.sessions.secure_cookie,
        path="/ui",
    )
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    ui = ui_of(request)
    sessions = ui.sessions
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
    wait = max(sessions.throttle.refused_for(name), sessions.address_throttle.refused_for(address))
    if wait > 0:
        return _throttled(ui, request, target, wait)
    try:
        found = await sessions.login(name, data.get("password", ""))
    except PasswordsBusy as exc:
        busy = login_form(ui, request, exc.status, next=target, error=exc.text)
        busy.headers["Retry-After"] = "5"
        return busy
    if found is None:
        locked = sessions.throttle.failed(name)
        locked = sessions.address_throttle.failed(address) or locked
        log.info("ui login refused%s", " (now throttled)" if locked else "")
        return login_form(ui, request, 401, next=target, error="Wrong user name or password.")
    sessions.throttle.succeeded(name)
    user, cookie = found
    return _signed_in_response(ui, user, cookie, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    ui = ui_of(request)
    user = ui.signed_in(request, None)
    if isinstance(user, RedirectResponse):
        return user
    check_csrf(user, (await form(request)).get("csrf"))
    ui.sessions.logout(request.cookies.get(SESSION_COOKIE))  # the cookie opens nothing now
    log.info("ui logout")
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response
