"""The raw body as the last column of `messages` on SQLite (issue 25 item 4): the store inserts
a large body as a trailing `zeroblob(n)` and fills it through incremental blob I/O, which SQLite
does without building a record that holds a copy of it; only the last column can be so written.

SQLite cannot move a column, so `raw` is copied into a new last column, dropped and the new one
renamed (SQLite >= 3.35); every body is kept byte for byte. A store where `raw` is already last
(a fresh one: 0001 creates the schema from the current metadata) is left alone. PostgreSQL
stores large values out of line whatever their place: unchanged. A later migration that adds a
column to `messages` must move `raw` last again in the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_raw_last"
down_revision = "0009_rejection_code"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    columns = [column["name"] for column in sa.inspect(bind).get_columns("messages")]
    if columns[-1] == "raw":
        return
    op.execute("ALTER TABLE messages ADD COLUMN raw_last BLOB NOT NULL DEFAULT x''")
    op.execute("UPDATE messages SET raw_last = raw")
    op.execute("ALTER TABLE messages DROP COLUMN raw")
    op.execute("ALTER TABLE messages RENAME COLUMN raw_last TO raw")


def downgrade() -> None:
    """Nothing: the column's place changes no reader."""
