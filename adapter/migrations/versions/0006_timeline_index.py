"""The timeline's index (issue 25): `resources.template_id`, `variable_id` and `effective` (UTC)
of each radbridge Observation, and `ix_resources_timeline` over (subject, template_id,
variable_id, effective, id), so that `Store.latest_observations` finds a patient's latest earlier
Observation of a finding with one index seek (the tie-break `id` in the index: nothing is sorted)
instead of reading every Observation of the patient; `ix_resources_bundle` over (bundle_id,
resource_type) replaces `ix_resources_bundle_id`, so a Bundle's Observations are one seek (with
the search indexes of 0005 on resource_type alone, SQLite's planner chose those: every
Observation of the store).

0001 creates the schema from the current metadata, so a fresh database already has them: only
what is missing is added. The Observations already stored get their columns from their bodies
(the evidence extension's `template` and `variable`, and `effectiveDateTime`), in batches.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_timeline_index"
down_revision = "0005_fhir_search_index"
branch_labels = None
depends_on = None

EVIDENCE_EXTENSION = "https://radbridge.org/fhir/StructureDefinition/evidence"
BATCH = 1000


def _timeline_key(body: str) -> tuple[str, str, datetime] | None:
    """(template id, variable id, effective in UTC) of a stored radbridge Observation."""
    try:
        resource: dict[str, Any] = json.loads(body)
        moment = datetime.fromisoformat(str(resource["effectiveDateTime"]))
    except (ValueError, KeyError, TypeError):
        return None
    subs: dict[str, str] = {}
    for extension in resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == EVIDENCE_EXTENSION:
            for sub in extension.get("extension") or []:
                if isinstance(sub, dict) and "valueString" in sub:
                    subs.setdefault(str(sub.get("url")), str(sub["valueString"]))
    template, variable = subs.get("template"), subs.get("variable")
    if not template or not variable:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return template.split("|", 1)[0], variable, aware.astimezone(UTC)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = {column["name"] for column in inspector.get_columns("resources")}
    missing = [
        column
        for column in (
            sa.Column("template_id", sa.String(64)),
            sa.Column("variable_id", sa.String(255)),
            sa.Column("effective", sa.DateTime(timezone=True)),
        )
        if column.name not in present
    ]
    if missing:
        with op.batch_alter_table("resources") as batch:
            for column in missing:
                batch.add_column(column)
    indexes = {index["name"] for index in inspector.get_indexes("resources")}
    if "ix_resources_timeline" not in indexes:
        op.create_index(
            "ix_resources_timeline",
            "resources",
            ["subject", "template_id", "variable_id", "effective", "id"],
        )
    # a Bundle's resources of one type: (bundle_id, resource_type), so SQLite's planner never
    # prefers an index on resource_type alone (every Observation) over the bundle_id one
    if "ix_resources_bundle" not in indexes:
        op.create_index("ix_resources_bundle", "resources", ["bundle_id", "resource_type"])
    if "ix_resources_bundle_id" in indexes:
        op.drop_index("ix_resources_bundle_id", table_name="resources")
    resources = sa.table(
        "resources",
        sa.column("resource_type", sa.String),
        sa.column("id", sa.String),
        sa.column("body", sa.Text),
        sa.column("template_id", sa.String),
        sa.column("variable_id", sa.String),
        sa.column("effective", sa.DateTime(timezone=True)),
    )
    after = ""
    while True:  # keyset batches over the Observations without a timeline key
        rows = bind.execute(
            sa.select(resources.c.id, resources.c.body)
            .where(
                resources.c.resource_type == "Observation",
                resources.c.template_id.is_(None),
                resources.c.id > after,
            )
            .order_by(resources.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        for resource_id, body in rows:
            key = _timeline_key(body)
            if key is not None:
                bind.execute(
                    resources.update()
                    .where(
                        resources.c.resource_type == "Observation", resources.c.id == resource_id
                    )
                    .values(template_id=key[0], variable_id=key[1], effective=key[2])
                )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_resources_timeline", table_name="resources")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("effective")
        batch.drop_column("variable_id")
        batch.drop_column("template_id")
