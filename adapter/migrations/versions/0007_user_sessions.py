"""The browser UI's server-side sessions (issue 24): `ui_sessions`, one row per signed-in
browser (the SHA-256 of its cookie's session token, the user name, created and expiry times).
Signing out deletes the row, so the old cookie no longer opens a page.

0001 creates the schema from the current metadata, so a fresh database already has the table:
it is created only where it is missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_user_sessions"
down_revision = "0006_timeline_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ui_sessions" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_sessions_user_name", "ui_sessions", ["user_name"])
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("ui_sessions")
