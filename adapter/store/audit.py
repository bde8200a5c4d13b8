"""The store's audit trail: events per message (never report text or identifiers)."""

from __future__ import annotations

import sqlalchemy as sa

from adapter.store.connection import StoreBase
from adapter.store.connection import utc_now as _now
from adapter.tables import audit_events


class AuditStore(StoreBase):
    """Audit events."""

    def audit(self, message_id: int | None, event: str, detail: str | None = None) -> None:
        """Append an audit event (detail must be free of PHI)."""
        with self.transaction() as connection:
            connection.execute(
                audit_events.insert().values(
                    at=_now(), message_id=message_id, event=event, detail=detail
                )
            )

    def audit_trail(self, message_id: int) -> list[str]:
        """The events of one message, in order."""
        with self.transaction() as connection:
            return list(
                connection.execute(
                    sa.select(audit_events.c.event)
                    .where(audit_events.c.message_id == message_id)
                    .order_by(audit_events.c.id)
                ).scalars()
            )
