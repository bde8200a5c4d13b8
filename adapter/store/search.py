"""The store's reads of stored resources for pull: one resource, Observation searches, the
timeline's lookup (the latest earlier Observation per finding) and the insight counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa

from adapter.store.connection import StoreBase
from adapter.tables import messages, resources
from mappings.result_order import RETIRED_STATUSES


def served_status() -> Any:
    """Observations a search serves: not retired by a superseding result."""
    # one `!=` per status, not NOT IN: an IN list is an expanding parameter, compiled again at
    # every execution (the timeline's lookup ran it once per finding and report)
    return sa.or_(
        resources.c.status.is_(None),
        sa.and_(*(resources.c.status != status for status in RETIRED_STATUSES)),
    )


def with_last_updated(
    resource: dict[str, Any], updated: datetime, version: int | None = None
) -> dict[str, Any]:
    """`meta.lastUpdated` = when the store last wrote the resource (FHIR instant, UTC), and
    `meta.versionId` when the store keeps the resource's versions."""
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    stamp = updated.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resource["meta"] = {**(resource.get("meta") or {}), "lastUpdated": stamp}
    if version is not None:
        resource["meta"]["versionId"] = str(version)
    return resource


def _latest_select(variable: str) -> Any:
    """The timeline's index seek: the subject's latest served Observation of a template and
    variable (the parameter named `variable`) before a time."""
    return (
        sa.select(resources.c.body)
        .where(
            resources.c.subject == sa.bindparam("subject"),
            resources.c.template_id == sa.bindparam("template_id"),
            resources.c.variable_id == sa.bindparam(variable),
            resources.c.effective < sa.bindparam("before"),
            resources.c.resource_type == "Observation",
            served_status(),
        )
        .order_by(resources.c.effective.desc(), resources.c.id.desc())
        .limit(1)
    )


LATEST_OBSERVATION = _latest_select("variable_id")
"""One variable's seek (see `Store.latest_observations`)."""


@cache
def _latest_observations(count: int) -> Any:
    """`Store.latest_observations` for `count` variables in one statement: a UNION ALL of one
    index seek per variable (`ix_resources_timeline`; the parameters `variable_0`...), built
    once per count."""
    if count == 1:
        return _latest_select("variable_0")
    # a UNION ALL cannot hold ORDER BY ... LIMIT but in subqueries
    parts = [_latest_select(f"variable_{i}").subquery() for i in range(count)]
    return sa.union_all(*(sa.select(part.c.body) for part in parts))


class SearchStore(StoreBase):
    """Reads of stored resources."""

    def get_resource(
        self, resource_type: str, resource_id: str, *, served: bool = False
    ) -> dict[str, Any] | None:
        """One stored resource by type and id, or None; `served`: with `meta.lastUpdated` and
        `meta.versionId`."""
        with self.transaction() as connection:
            row = connection.execute(
                sa.select(resources.c.body, resources.c.last_updated, resources.c.version_id).where(
                    resources.c.resource_type == resource_type, resources.c.id == resource_id
                )
            ).first()
        if row is None:
            return None
        resource: dict[str, Any] = json.loads(row[0])
        if not served:
            return resource
        return with_last_updated(resource, row[1], row[2])

    def _observation_query(
        self,
        columns: Any,
        *,
        subject: str | None,
        code: str | None,
        derived_from: str | None,
        last_updated_since: datetime | None,
    ) -> Any:
        query = sa.select(*columns).where(
            resources.c.resource_type == "Observation", served_status()
        )
        if subject:
            query = query.where(resources.c.subject == subject)
        if code:  # `system|code`, or a bare code of any system (LIKE wildcards are literal)
            query = query.where(
                resources.c.code == code
                if "|" in code
                else resources.c.code.endswith(f"|{code}", autoescape=True)
            )
        if derived_from:
            query = query.where(resources.c.report_ref == derived_from)
        if last_updated_since:
            query = query.where(resources.c.last_updated >= last_updated_since)
        return query

    def search_observations(
        self,
        *,
        subject: str | None = None,
        code: str | None = None,
        derived_from: str | None = None,
        last_updated_since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Observations by subject reference, `system|code` (or bare code), report reference, update
        time; one page (`limit` from `offset`), each with `meta.lastUpdated` from the store."""
        query = self._observation_query(
            (resources.c.body, resources.c.last_updated, resources.c.version_id),
            subject=subject,
            code=code,
            derived_from=derived_from,
            last_updated_since=last_updated_since,
        )
        with self.transaction() as connection:
            rows = connection.execute(
                query.order_by(resources.c.last_updated, resources.c.id).limit(limit).offset(offset)
            ).all()
        return [
            with_last_updated(json.loads(body), updated, version) for body, updated, version in rows
        ]

    def count_observations(
        self,
        *,
        subject: str | None = None,
        code: str | None = None,
        derived_from: str | None = None,
        last_updated_since: datetime | None = None,
    ) -> int:
        """How many Observations `search_observations` finds over all pages (searchset total)."""
        query = self._observation_query(
            (sa.func.count(),),
            subject=subject,
            code=code,
            derived_from=derived_from,
            last_updated_since=last_updated_since,
        )
        with self.transaction() as connection:
            return int(connection.execute(query).scalar_one())

    def latest_observations(
        self, subject: str, template_id: str, variable_ids: Sequence[str], before: datetime
    ) -> list[dict[str, Any]]:
        """The timeline's lookup: per variable, the subject's served radbridge Observation of
        that template and variable with the latest effective time strictly before `before`
        (a tie: the greatest id). One transaction, one index seek per variable
        (`ix_resources_timeline`), all in one statement: its cost does not grow with the
        patient's history."""
        moment = before.astimezone(UTC) if before.tzinfo else before.replace(tzinfo=UTC)
        wanted = list(dict.fromkeys(variable_ids))
        if not wanted:
            return []
        params: dict[str, Any] = {"subject": subject, "template_id": template_id, "before": moment}
        params.update({f"variable_{i}": variable_id for i, variable_id in enumerate(wanted)})
        with self.transaction() as connection:
            bodies = connection.execute(_latest_observations(len(wanted)), params).scalars().all()
        return [json.loads(body) for body in bodies]

    def observations_of_subject(self, subject: str) -> list[dict[str, Any]]:
        """Every stored Observation of one subject (`Patient/<id>`), served ones only: the
        patient's whole history (the worker's timeline reads `latest_observations` instead)."""
        query = sa.select(resources.c.body).where(
            resources.c.resource_type == "Observation",
            resources.c.subject == subject,
            served_status(),
        )
        with self.transaction() as connection:
            bodies = connection.execute(query.order_by(resources.c.id)).scalars()
            return [json.loads(b) for b in bodies]

    def insight_counts(self) -> dict[str, int]:
        """For metrics (issue 20): the insight resources in force by type (ServiceRequest,
        Flag, Communication, DetectedIssue; retired ones left out), the flagged reports (the
        report Bundles holding a Flag in force: a report with two critical results is one) and
        the messages no template applied to."""
        kinds = ("ServiceRequest", "Flag", "Communication", "DetectedIssue")
        with self.transaction() as connection:
            rows = connection.execute(
                sa.select(resources.c.resource_type, sa.func.count())
                .where(resources.c.resource_type.in_(kinds), served_status())
                .group_by(resources.c.resource_type)
            ).all()
            flagged = connection.execute(
                sa.select(sa.func.count(sa.distinct(resources.c.bundle_id))).where(
                    resources.c.resource_type == "Flag", served_status()
                )
            ).scalar()
            unrouted = connection.execute(
                sa.select(sa.func.count()).where(messages.c.reason == "no template")
            ).scalar()
        counts = dict.fromkeys(kinds, 0)
        counts.update({str(kind): int(n) for kind, n in rows})
        counts["flagged_reports"] = int(flagged or 0)
        counts["no_template"] = int(unrouted or 0)
        return counts
