"""Result order and attempts: `resources.status` (retired Observations are not served),
`messages.next_attempt_at` (reconcile respects a retry's backoff) and `messages.claimed_by`
(the task attempt holding a `processing` message).

0001 creates the schema from the current metadata, so a fresh database already has these
columns: only the missing ones are added.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002_result_order_attempts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_NEW_COLUMNS = {
    "resources": (sa.Column("status", sa.String(32)),),
    "messages": (
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_by", sa.String(255)),
    ),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _NEW_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        missing = [column for column in columns if column.name not in present]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT resource_type, id, body FROM resources WHERE status IS NULL")
    ).all()
    for resource_type, resource_id, body in rows:
        status = json.loads(body).get("status")
        if status is not None:
            bind.execute(
                sa.text("UPDATE resources SET status = :s WHERE resource_type = :t AND id = :i"),
                {"s": status, "t": resource_type, "i": resource_id},
            )


def downgrade() -> None:
    for table, columns in _NEW_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
