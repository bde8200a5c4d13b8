"""The store's schema: one SQLAlchemy `MetaData` and its tables (created and upgraded by the
Alembic migrations in `adapter/migrations/`). Read and written by `adapter.store`, and by
`adapter.reviews` for clinician review."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("sending_application", sa.String(255), nullable=False, server_default=""),
    sa.Column("sending_facility", sa.String(255), nullable=False, server_default=""),
    sa.Column("control_id", sa.String(255), nullable=False, server_default=""),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("conflict", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("resends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ack", sa.LargeBinary),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # when a `failed` message's retry is due (reconcile leaves it alone until then), and which
    # task attempt holds a `processing` message (its own redelivery may take it over)
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.String(255)),
    # a rejected (dead) message's HL7 table 0357 code and detail: its application ACK's ERR
    sa.Column("rejection_code", sa.String(8)),
    sa.Column("rejection_detail", sa.Text),
    # the raw bytes LAST (migration 0010): SQLite writes a trailing zeroblob(n) without holding
    # it, so the store fills a large body through incremental blob I/O without copying it;
    # a column added to `messages` later must keep it last (see 0010)
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint(
        "sending_application", "sending_facility", "control_id", "sha256", name="uq_messages_dedupe"
    ),
)
sa.Index("ix_messages_state", messages.c.state, messages.c.updated_at)
sa.Index(
    "ix_messages_control",
    messages.c.sending_application,
    messages.c.sending_facility,
    messages.c.control_id,
)

extractions = sa.Table(
    "extractions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=False, index=True),
    sa.Column("report_id", sa.String(255), nullable=False),
    sa.Column("template_id", sa.String(64), nullable=False),
    sa.Column("template_version", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

bundles = sa.Table(
    "bundles",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=True, index=True),
    sa.Column("report_id", sa.String(255), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

resources = sa.Table(
    "resources",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), nullable=False),
    sa.Column("subject", sa.String(255)),
    sa.Column("code", sa.String(255)),
    sa.Column("report_ref", sa.String(255)),
    sa.Column("status", sa.String(32)),  # the resource's own status (retired ones are not served)
    # the resource's current version (`meta.versionId`); older ones are in resource_versions
    sa.Column("version_id", sa.Integer, nullable=False, server_default="1"),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # the `date` search parameter's range [date_start, date_end) in UTC (effective[x] or
    # Provenance.recorded at their written precision; mappings/search_params.py)
    sa.Column("date_start", sa.DateTime(timezone=True)),
    sa.Column("date_end", sa.DateTime(timezone=True)),
    # the timeline's key of a radbridge Observation (its evidence extension's template id and
    # variable, and its effective time in UTC): the patient's latest earlier Observation of a
    # finding is one index lookup (`Store.latest_observations`), however long the history
    sa.Column("template_id", sa.String(64)),
    sa.Column("variable_id", sa.String(255)),
    sa.Column("effective", sa.DateTime(timezone=True)),
)
sa.Index("ix_resources_search", resources.c.resource_type, resources.c.subject, resources.c.code)
sa.Index("ix_resources_bundle", resources.c.bundle_id, resources.c.resource_type)
sa.Index(
    "ix_resources_updated", resources.c.resource_type, resources.c.last_updated, resources.c.id
)
sa.Index(
    "ix_resources_status", resources.c.resource_type, resources.c.status, resources.c.last_updated
)
sa.Index("ix_resources_date", resources.c.resource_type, resources.c.date_start)
sa.Index("ix_resources_date_end", resources.c.resource_type, resources.c.date_end)
sa.Index(  # ends with the tie-break, so the latest is read off the index, never sorted
    "ix_resources_timeline",
    resources.c.subject,
    resources.c.template_id,
    resources.c.variable_id,
    resources.c.effective,
    resources.c.id,
)

# the token and reference values of the FHIR search parameters (one row per coding, identifier
# or reference of a resource's current version; written with the resource, adapter/search_index.py)
search_tokens = sa.Table(
    "search_tokens",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("resource_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),  # the search parameter
    sa.Column("system", sa.String(255), primary_key=True),  # "" when none; a reference's type
    sa.Column("code", sa.String(255), primary_key=True),  # code, identifier value or id
)
sa.Index(
    "ix_search_tokens_code",
    search_tokens.c.resource_type,
    search_tokens.c.name,
    search_tokens.c.code,
    search_tokens.c.system,
)

# one row per start of a service that acknowledges HL7v2 (HTTP and MLLP share it): its id
# prefixes the MSH-10 of every ACK the service sends, unique across restarts (adapter/control_ids.py)
ack_generations = sa.Table(
    "ack_generations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), nullable=False, index=True),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_status", sa.Integer),
    sa.Column("outcome", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # JSON {"Type/id": sha256} of what the target holds (mappings.ehr): only changes are sent
    sa.Column("delivered", sa.Text),
    # when the current run of failures began (the retry horizon counts from it; None once
    # delivered) and why the last attempt failed (no PHI: an error class, a status, an ACK code)
    sa.Column("failing_since", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    # the Bundle's updated_at that the last delivery sent (a change saved during a push is newer)
    sa.Column("delivered_stamp", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("bundle_id", "target", name="uq_deliveries_target"),
)
# per destination and state: /metrics, /readyz and the console count them on each call
sa.Index("ix_deliveries_target_state", deliveries.c.target, deliveries.c.state)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("message_id", sa.Integer, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
)

# the earlier versions of a rewritten resource (the current one is in `resources`)
resource_versions = sa.Table(
    "resource_versions",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, primary_key=True),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

# the browser UI's sessions (issue 24): a signed cookie names one row; signing out deletes it, so
# the cookie is worthless afterwards (adapter/ui/session_store.py). `id` is the SHA-256 of the
# cookie's session token, never the token itself.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
