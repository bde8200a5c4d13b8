"""Observation versions (issue 13): `resources.version_id` (the current `meta.versionId`) and
`resource_versions` (the earlier versions, served by `GET /fhir/Observation/<id>/_history/<vid>`).

0001 creates the schema from the current metadata, so a fresh database already has both: only
what is missing is added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_observation_versions"
down_revision = "0002_result_order_attempts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {column["name"] for column in inspector.get_columns("resources")}
    if "version_id" not in present:
        with op.batch_alter_table("resources") as batch:
            batch.add_column(
                sa.Column("version_id", sa.Integer, nullable=False, server_default="1")
            )
    if not inspector.has_table("resource_versions"):
        op.create_table(
            "resource_versions",
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("version_id", sa.Integer, primary_key=True),
            sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("resource_versions")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("version_id")
