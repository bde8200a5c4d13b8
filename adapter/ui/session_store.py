"""The browser UI's server-side sessions (issue 24): one `ui_sessions` row per signed-in browser.

The session cookie (signed, `adapter.ui.auth`) carries a random token; the store keeps only its
SHA-256, the user name and the expiry. A page opens only while the row exists: signing out
deletes it, so a copied or stolen cookie is worthless afterwards, and `end_user_sessions` ends
every session of one user. Expired rows are deleted whenever a session starts.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from adapter.store import Store
from adapter.tables import ui_sessions


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def start_session(store: Store, user_name: str, max_age_s: float) -> str:
    """A new session of `user_name` (its token, for the cookie); expired rows are dropped."""
    token = secrets.token_urlsafe(32)
    now = _now()
    with store.transaction() as connection:
        connection.execute(ui_sessions.delete().where(ui_sessions.c.expires_at <= now))
        connection.execute(
            ui_sessions.insert().values(
                id=_key(token),
                user_name=user_name,
                created_at=now,
                expires_at=now + timedelta(seconds=max_age_s),
            )
        )
    return token


def session_alive(store: Store, token: str, user_name: str) -> bool:
    """Whether the session of `token` exists, belongs to `user_name` and has not expired."""
    with store.transaction() as connection:
        row = connection.execute(
            sa.select(ui_sessions.c.user_name).where(
                ui_sessions.c.id == _key(token), ui_sessions.c.expires_at > _now()
            )
        ).first()
    return row is not None and row.user_name == user_name


def end_session(store: Store, token: str) -> None:
    """Sign one session out (nothing when it is gone already)."""
    with store.transaction() as connection:
        connection.execute(ui_sessions.delete().where(ui_sessions.c.id == _key(token)))


def end_user_sessions(store: Store, user_name: str) -> int:
    """Sign every session of one user out; how many there were."""
    with store.transaction() as connection:
        result = connection.execute(
            ui_sessions.delete().where(ui_sessions.c.user_name == user_name)
        )
    return int(result.rowcount or 0)
