"""UI users, sessions and CSRF (issue 13).

Users come from RADBRIDGE_UI_USERS_FILE, one `name:role:argon2-hash` per line (`radbridge users
add|passwd|disable|enable|remove` write it; `#` starts a comment; a hash starting with `!` is a
disabled user). Roles: `operator` (console, never report text) and `reviewer` (report text and
decisions). A session is a cookie signed with RADBRIDGE_UI_SESSION_SECRET (itsdangerous, expires
after `SESSION_MAX_AGE_S`) holding the user, the role, the session's CSRF token (every form must
send it back), a server-side session token (`adapter.ui.session_store`: signing out deletes its
row) and the user's generation (a keyed digest of the password hash: a password change, a
disabled or removed user ends every session of that user). The sign-in form has a CSRF token
too, before there is a session: `GET /ui/login` sets a signed pre-session cookie (`LOGIN_COOKIE`,
path `/ui/login`) holding a token that the form sends back as a hidden field, so a sign-in POST
forged by another site (login CSRF) is refused. Passwords are checked off the event loop, with
the same work for every name (`adapter.ui.passwords`). Failed sign-ins are counted in memory
(`LoginThrottle`: per process, a restart forgets them) per user name (after
`LOGIN_MAX_FAILURES` within `LOGIN_WINDOW_S` that name is refused for `LOGIN_LOCKOUT_S`) and per
source address (after RADBRIDGE_UI_LOGIN_MAX_FAILURES_PER_ADDRESS within `LOGIN_WINDOW_S` that
address is refused for `LOGIN_LOCKOUT_S`, whatever name it tries).
Development mode (RADBRIDGE_ENV=development and no users file): no login, every page acts as
the built-in development user (both roles) and says DEVELOPMENT.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from itsdangerous import BadSignature, URLSafeTimedSerializer

from adapter.errors import ConfigError, UiRefused
from adapter.settings import Environment, Settings
from adapter.store import Store
from adapter.ui.passwords import PasswordChecker
from adapter.ui.session_store import end_session, session_alive, start_session

ROLES = ("operator", "reviewer")
SESSION_COOKIE = "radbridge_ui"
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_COOKIE = "radbridge_ui_login"  # the sign-in form's CSRF token, before a session exists
LOGIN_FORM_MAX_AGE_S = 3600
LOGIN_MAX_FAILURES = 5  # failed sign-ins of one user name within LOGIN_WINDOW_S ...
LOGIN_WINDOW_S = 300.0
LOGIN_LOCKOUT_S = 300.0  # ... refuse that name for this long
DEVELOPMENT_USER = "development"
DISABLED = "!"  # a users-file hash starting with it: the user cannot sign in
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class User:
    """A signed-in user (or the development user) with the session's CSRF token."""

    name: str
    roles: frozenset[str]
    csrf: str


@dataclass(frozen=True)
class Account:
    """One line of the users file."""

    name: str
    role: str
    password_hash: str

    @property
    def disabled(self) -> bool:
        """Whether the user is disabled (`radbridge users disable`)."""
        return self.password_hash.startswith(DISABLED)


def check_name(name: str) -> str:
    """A valid user name (letters, digits, `_.@-`, at most 64), else ConfigError."""
    if not _NAME.match(name):
        raise ConfigError("a user name is 1-64 letters, digits or _.@-")
    return name


def read_users(path: Path) -> dict[str, Account]:
    """The accounts of a users file (ConfigError naming the line when malformed)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read RADBRIDGE_UI_USERS_FILE ({type(exc).__name__}): {path}"
        ) from None
    accounts: dict[str, Account] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if (
            len(parts) != 3
            or parts[1] not in ROLES
            or not parts[2].lstrip(DISABLED).startswith("$argon2")
        ):
            raise ConfigError(f"{path}:{number}: expected name:role:argon2-hash")
        accounts[parts[0]] = Account(check_name(parts[0]), parts[1], parts[2])
    return accounts


def write_users(path: Path, accounts: dict[str, Account]) -> None:
    """Write the users file (made 0600 when new)."""
    lines = ["# radbridge UI users: name:role:argon2 hash (radbridge users add; ! = disabled)"]
    lines += [f"{a.name}:{a.role}:{a.password_hash}" for a in accounts.values()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", "utf-8")


def _check_password(password: str) -> str:
    if len(password) < 8:
        raise ConfigError("a password needs at least 8 characters")
    return password


def add_user(path: Path, name: str, role: str, password: str) -> None:
    """Add or replace one user in the users file (argon2id hash; the file is made 0600)."""
    check_name(name)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}")
    accounts = read_users(path) if path.exists() else {}
    accounts[name] = Account(name, role, PasswordHasher().hash(_check_password(password)))
    write_users(path, accounts)


def _existing(path: Path, name: str) -> tuple[dict[str, Account], Account]:
    accounts = read_users(path)
    if name not in accounts:
        raise ConfigError(f"no user {name!r} in {path}")
    return accounts, accounts[name]


def remove_user(path: Path, name: str) -> None:
    """Remove one user (its sessions end: the account is gone)."""
    accounts, _ = _existing(path, name)
    del accounts[name]
    write_users(path, accounts)


def set_password(path: Path, name: str, password: str) -> None:
    """A new password for one user (its sessions end: the generation changes); a disabled
    user stays disabled."""
    accounts, account = _existing(path, name)
    fresh = PasswordHasher().hash(_check_password(password))
    prefix = DISABLED if account.disabled else ""
    accounts[name] = Account(name, account.role, prefix + fresh)
    write_users(path, accounts)


def set_disabled(path: Path, name: str, disabled: bool) -> None:
    """Disable (sessions end, sign-in refused) or enable one user; its password is kept."""
    accounts, account = _existing(path, name)
    bare = account.password_hash.lstrip(DISABLED)
    accounts[name] = Account(name, account.role, (DISABLED if disabled else "") + bare)
    write_users(path, accounts)


class LoginThrottle:
    """Failed sign-ins per user name, in memory (per process; a restart forgets them): after
    `max_failures` within `window_s` the name is refused for `lockout_s`, whatever password
    comes. At most `max_names` names are tracked (the stalest are forgotten first)."""

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        lockout_s: float = LOGIN_LOCKOUT_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_names: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.clock = clock
        self.max_names = max_names
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}  # name -> refused until (clock)
        self._lock = threading.Lock()

    @staticmethod
    def _key(name: str) -> str:
        return name[:128]

    def refused_for(self, name: str) -> float:
        """Seconds the name is still refused (0: it may try)."""
        with self._lock:
            until = self._locked.get(self._key(name))
            left = until - self.clock() if until is not None else 0.0
            if until is not None and left <= 0:
                del self._locked[self._key(name)]
            return max(left, 0.0)

    def failed(self, name: str) -> bool:
        """Count a failed sign-in; True when it locks the name out."""
        key, now = self._key(name), self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < self.window_s]
            recent.append(now)
            if len(recent) >= self.max_failures:
                self._failures.pop(key, None)
                self._locked[key] = now + self.lockout_s
                return True
            self._failures[key] = recent
            if len(self._failures) + len(self._locked) > self.max_names:
                self._forget(now)
            return False

    def succeeded(self, name: str) -> None:
        """A sign-in succeeded: its failures are forgotten."""
        with self._lock:
            self._failures.pop(self._key(name), None)

    def _forget(self, now: float) -> None:
        for key in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[key]
        for key in [k for k, ts in self._failures.items() if now - ts[-1] >= self.window_s]:
            del self._failures[key]
        while self._failures and len(self._failures) + len(self._locked) > self.max_names:
            stalest = min(self._failures, key=lambda k: self._failures[k][-1])
            del self._failures[stalest]


class Sessions:
    """Who may use the UI and how sessions are signed, from the settings; sessions live in the
    store's `ui_sessions` table."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        self.users_file = settings.ui_users_file
        self.development = (
            settings.env is Environment.DEVELOPMENT and settings.ui_users_file is None
        )
        self.enabled = self.development or settings.ui_users_file is not None
        secret = settings.ui_session_secret.get_secret_value() if settings.ui_session_secret else ""
        if self.users_file is not None and not secret:
            raise ConfigError(
                "RADBRIDGE_UI_USERS_FILE needs RADBRIDGE_UI_SESSION_SECRET (signs UI sessions)"
            )
        self.secret = secret or secrets.token_hex(32)  # development: one per process
        self.serializer = URLSafeTimedSerializer(self.secret, salt="radbridge-ui-session")
        self.login_serializer = URLSafeTimedSerializer(self.secret, salt="radbridge-ui-login")
        self.secure_cookie = settings.env is Environment.PRODUCTION
        self.throttle = LoginThrottle()  # per user name
        self.address_throttle = LoginThrottle(  # per source address, whatever the name
            settings.ui_login_max_failures_per_address
        )
        self.passwords = PasswordChecker() if self.users_file is not None else None

    def login_form_token(self, cookie: str | None) -> tuple[str, str]:
        """(token for the sign-in form's hidden field, pre-session cookie value): the token of
        a valid pre-session cookie (several tabs share it), else a new one."""
        token = self._login_token(cookie) or secrets.token_urlsafe(32)
        return token, self.login_serializer.dumps(token)

    def _login_token(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            token = self.login_serializer.loads(cookie, max_age=LOGIN_FORM_MAX_AGE_S)
        except BadSignature:
            return None
        return token if isinstance(token, str) and token else None

    def check_login_csrf(self, cookie: str | None, supplied: str | None) -> None:
        """UiRefused (403) unless the sign-in form sends back its pre-session cookie's token."""
        token = self._login_token(cookie)
        if not token or not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
            raise UiRefused(
                403,
                "This sign-in form has no valid CSRF token (forged, or the page is more than an "
                "hour old). Nobody was signed in: open the sign-in page again and retry.",
            )

    def development_user(self) -> User:
        """The built-in development user (both roles); its CSRF token is fixed per process."""
        token = hmac.new(self.secret.encode(), b"development-csrf", "sha256").hexdigest()
        return User(DEVELOPMENT_USER, frozenset(ROLES), token)

    def _generation(self, account: Account) -> str:
        """A keyed digest of the account's password hash: it changes with the password."""
        digest = hmac.new(self.secret.encode(), account.password_hash.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    async def login(self, name: str, password: str) -> tuple[User, str] | None:
        """(user, cookie value) when the name and password match an enabled user of the file.
        One argon2 verification off the event loop whatever the name (PasswordsBusy when the
        pool is full); a match starts a server-side session."""
        if self.users_file is None or self.passwords is None:
            return None
        account = read_users(self.users_file).get(name)
        usable = account is not None and not account.disabled
        stored_hash = account.password_hash if account is not None and usable else None
        if not await self.passwords.check(stored_hash, password) or account is None:
            return None
        token = start_session(self.store, account.name, SESSION_MAX_AGE_S)
        user = User(account.name, frozenset({account.role}), secrets.token_urlsafe(32))
        cookie = self.serializer.dumps(
            {
                "u": user.name,
                "r": account.role,
                "c": user.csrf,
                "s": token,
                "g": self._generation(account),
            }
        )
        return user, cookie

    def _session(self, cookie: str | None) -> dict[str, object] | None:
        if not cookie:
            return None
        try:
            data = self.serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None

    def user(self, cookie: str | None) -> User | None:
        """The user of a session cookie (None: none, expired, forged, signed out, or the user
        was removed, disabled or given another password since)."""
        if self.development:
            return self.development_user()
        if self.users_file is None:
            return None
        data = self._session(cookie)
        if data is None or not isinstance(data.get("s"), str):
            return None
        account = read_users(self.users_file).get(str(data.get("u")))
        if account is None or account.disabled or account.role != data.get("r"):
            return None
        if not hmac.compare_digest(str(data.get("g")), self._generation(account)):
            return None
        if not session_alive(self.store, str(data["s"]), account.name):
            return None
        return User(account.name, frozenset({account.role}), str(data.get("c")))

    def logout(self, cookie: str | None) -> None:
        """End the cookie's server-side session: the cookie opens nothing afterwards."""
        data = self._session(cookie)
        if data is not None and isinstance(data.get("s"), str):
            end_session(self.store, str(data["s"]))


def check_csrf(user: User, supplied: str | None) -> None:
    """UiRefused (403) unless the form carries the session's CSRF token."""
    if not supplied or not hmac.compare_digest(supplied.encode(), user.csrf.encode()):
        raise UiRefused(
            403,
            "This form has no valid CSRF token (forged or expired). Nothing was changed: "
            "reload the page and try again.",
        )


def require_role(user: User, role: str) -> None:
    """UiRefused (403) when the user lacks `role`."""
    if role not in user.roles:
        raise UiRefused(403, f"This page needs the {role} role; you are signed in without it.")
