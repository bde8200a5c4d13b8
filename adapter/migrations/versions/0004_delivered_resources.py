"""What a delivery target holds of each Bundle (issue 19): `deliveries.delivered`, a JSON object
of `Type/id` -> content hash (mappings.ehr), so a decision sends only the resources it changed.

0001 creates the schema from the current metadata, so a fresh database already has it: only
what is missing is added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_delivered_resources"
down_revision = "0003_observation_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deliveries")}
    if "delivered" not in present:
        with op.batch_alter_table("deliveries") as batch:
            batch.add_column(sa.Column("delivered", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("delivered")
