"""Initial schema: messages, extractions, bundles, resources, deliveries, audit events."""

from __future__ import annotations

from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    from adapter.tables import metadata

    metadata.create_all(op.get_bind())


def downgrade() -> None:
    from adapter.tables import metadata

    metadata.drop_all(op.get_bind())
