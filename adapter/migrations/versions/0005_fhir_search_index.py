"""The FHIR search index (issue 19 item 5) and the ACK control id generations.

- `resources.date_start` / `date_end`: the `date` search parameter's range;
- `search_tokens`: codes, identifiers and references of each resource's current version;
- indexes for the searches: (type, last_updated, id), (type, status, last_updated),
  (type, date_start), (type, date_end), and `search_tokens` (type, parameter, code, system);
- `ack_generations`: one row per start of a service sending ACKs (MSH-10 prefix).

Rows written before this revision are indexed here, in batches (every resource is read once).
0001 creates the schema from the current metadata, so a fresh database already has all of it:
only what is missing is added.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005_fhir_search_index"
down_revision = "0004_delivered_resources"
branch_labels = None
depends_on = None

_BATCH = 500


def _add_missing(inspector: sa.Inspector) -> None:
    present = {column["name"] for column in inspector.get_columns("resources")}
    missing = [name for name in ("date_start", "date_end") if name not in present]
    if missing:
        with op.batch_alter_table("resources") as batch:
            for name in missing:
                batch.add_column(sa.Column(name, sa.DateTime(timezone=True)))
    if not inspector.has_table("search_tokens"):
        op.create_table(
            "search_tokens",
            sa.Column("resource_type", sa.String(64), primary_key=True),
            sa.Column("resource_id", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("system", sa.String(255), primary_key=True),
            sa.Column("code", sa.String(255), primary_key=True),
        )
    if not inspector.has_table("ack_generations"):
        op.create_table(
            "ack_generations",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        )
    indexes = {
        index["name"]
        for table in ("resources", "search_tokens")
        for index in sa.inspect(op.get_bind()).get_indexes(table)
    }
    wanted = {
        "ix_resources_updated": ("resources", ["resource_type", "last_updated", "id"]),
        "ix_resources_status": ("resources", ["resource_type", "status", "last_updated"]),
        "ix_resources_date": ("resources", ["resource_type", "date_start"]),
        "ix_resources_date_end": ("resources", ["resource_type", "date_end"]),
        "ix_search_tokens_code": ("search_tokens", ["resource_type", "name", "code", "system"]),
    }
    for name, (table, columns) in wanted.items():
        if name not in indexes:
            op.create_index(name, table, columns)


def _index_existing() -> None:
    from adapter.search_index import write_tokens
    from mappings.search_params import index_terms

    bind = op.get_bind()
    resources = sa.table(
        "resources",
        sa.column("resource_type", sa.String),
        sa.column("id", sa.String),
        sa.column("body", sa.Text),
        sa.column("date_start", sa.DateTime(timezone=True)),
        sa.column("date_end", sa.DateTime(timezone=True)),
    )
    last: tuple[str, str] = ("", "")
    while True:
        rows = bind.execute(
            sa.select(resources.c.resource_type, resources.c.id, resources.c.body)
            .where(sa.tuple_(resources.c.resource_type, resources.c.id) > last)
            .order_by(resources.c.resource_type, resources.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        indexed = [(body, index_terms(body)) for body in (json.loads(r.body) for r in rows)]
        for row, (_, terms) in zip(rows, indexed, strict=True):
            bind.execute(
                resources.update()
                .where(resources.c.resource_type == row.resource_type, resources.c.id == row.id)
                .values(date_start=terms.date_start, date_end=terms.date_end)
            )
        write_tokens(bind, indexed)
        last = (rows[-1].resource_type, rows[-1].id)


def upgrade() -> None:
    _add_missing(sa.inspect(op.get_bind()))
    _index_existing()


def downgrade() -> None:
    op.drop_table("ack_generations")
    op.drop_index("ix_search_tokens_code", table_name="search_tokens")
    op.drop_table("search_tokens")
    for name in (
        "ix_resources_date_end",
        "ix_resources_date",
        "ix_resources_status",
        "ix_resources_updated",
    ):
        op.drop_index(name, table_name="resources")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("date_end")
        batch.drop_column("date_start")
