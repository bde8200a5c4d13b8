"""Per-destination delivery state (issue 19 item 4): `deliveries.failing_since` (when the
current run of failures began: the retry horizon RADBRIDGE_DELIVERY_RETRY_FOR counts from it)
`deliveries.reason` (why the last attempt failed, without PHI) and `deliveries.delivered_stamp`
(the Bundle's `updated_at` the last delivery sent: a decision saved while a push was in flight
is newer, so it is sent again instead of being taken as delivered), and
`ix_deliveries_target_state` (the per-destination counts of /metrics, /readyz and the
console). The new states `queued` and `refused` fit the existing `state` column.

0001 creates the schema from the current metadata, so a fresh database already has them: only
what is missing is added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_destinations"
down_revision = "0007_user_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {column["name"] for column in inspector.get_columns("deliveries")}
    missing = [
        column
        for column in (
            sa.Column("failing_since", sa.DateTime(timezone=True)),
            sa.Column("reason", sa.Text),
            sa.Column("delivered_stamp", sa.DateTime(timezone=True)),
        )
        if column.name not in present
    ]
    if missing:
        with op.batch_alter_table("deliveries") as batch:
            for column in missing:
                batch.add_column(column)
    if "ix_deliveries_target_state" not in {i["name"] for i in inspector.get_indexes("deliveries")}:
        op.create_index("ix_deliveries_target_state", "deliveries", ["target", "state"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_target_state", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("delivered_stamp")
        batch.drop_column("reason")
        batch.drop_column("failing_since")
