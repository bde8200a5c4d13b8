"""A rejected message's HL7 table 0357 code and detail kept with its dead state (issue 22):
`messages.rejection_code` and `messages.rejection_detail`, so the enhanced-mode application ACK
carries them without parsing the message again.

0001 creates the schema from the current metadata, so a fresh database already has them: only
what is missing is added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_rejection_code"
down_revision = "0008_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("messages")}
    missing = [
        column
        for column in (
            sa.Column("rejection_code", sa.String(8)),
            sa.Column("rejection_detail", sa.Text),
        )
        if column.name not in present
    ]
    if missing:
        with op.batch_alter_table("messages") as batch:
            for column in missing:
                batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("rejection_detail")
        batch.drop_column("rejection_code")
