"""FHIR reads over the store: search, read of a version, instance history.

A `SearchQuery` (mappings/search_query.py) becomes one SQL statement over `resources` on
indexed columns (status, subject, id, last_updated, the date range) and `search_tokens`
(codes, identifiers, references), the same on SQLite and PostgreSQL; the total is counted by
the database, one page is read. Without a status parameter, retired resources
(entered-in-error, cancelled) are left out, as `Store.search_observations` does.

Date comparisons follow FHIR R4 search on ranges: a stored value `[t0, t1)` (its written
precision) against the searched `[s0, s1)`: eq s0 <= t0 and t1 <= s1; ne not eq; gt t1 > s1;
lt t0 < s0; ge gt or eq; le lt or eq; sa t0 >= s1; eb t1 <= s0. `_lastUpdated` is an instant
(t1 = t0 plus a microsecond).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from adapter.store import Store
from adapter.store.search import served_status, with_last_updated
from adapter.tables import resource_versions, resources, search_tokens
from mappings.search_params import SEARCH_PARAMETERS
from mappings.search_query import Criterion, DateValue, HistoryQuery, SearchQuery, Token


def _date_condition(value: DateValue, start: Any, end: Any | None) -> Any:
    """`value` against a stored range `[start, end)`; `end` None: `start` is an instant."""
    s0, s1 = value.start, value.end

    def ends_after(moment: Any) -> Any:  # t1 > moment
        return start >= moment if end is None else end > moment

    def ends_by(moment: Any) -> Any:  # t1 <= moment
        return start < moment if end is None else end <= moment

    # `start < s1` and `ends_after(s0)` follow from the other terms (t0 < t1): they are there
    # to bound a range scan of the date_start / date_end (or last_updated) index
    within = sa.and_(start >= s0, start < s1, ends_by(s1))
    return {
        "eq": within,
        "ne": sa.not_(within),
        "gt": ends_after(s1),
        "lt": start < s0,
        "ge": sa.and_(ends_after(s0), sa.or_(ends_after(s1), within)),
        "le": sa.and_(start < s1, sa.or_(start < s0, within)),
        "sa": start >= s1,
        "eb": ends_by(s0),
    }[value.prefix]


def _token_condition(token: Token) -> Any:
    conditions = []
    if token.system is not None:
        conditions.append(search_tokens.c.system == token.system)
    if token.code is not None:
        conditions.append(search_tokens.c.code == token.code)
    return sa.and_(*conditions)


def _condition(resource_type: str, criterion: Criterion) -> Any:
    param = criterion.param
    dates = [v for v in criterion.values if isinstance(v, DateValue)]
    tokens = [v for v in criterion.values if isinstance(v, Token)]
    if param.column == "date":
        found = sa.or_(
            *(_date_condition(v, resources.c.date_start, resources.c.date_end) for v in dates)
        )
    elif param.column == "last_updated":
        found = sa.or_(*(_date_condition(v, resources.c.last_updated, None) for v in dates))
    elif param.column == "status":  # a `code` element: its system is implicit
        codes = [t.code for t in tokens if t.system in (None, param.system) and t.code]
        any_code = any(t.system == param.system and t.code is None for t in tokens)
        found = resources.c.status.is_not(None) if any_code else resources.c.status.in_(codes)
    elif param.column == "id":
        found = resources.c.id.in_([t.code for t in tokens if t.code])
    elif param.column == "subject":
        references = [
            f"{kind}/{t.code}"
            for t in tokens
            for kind in ((t.system,) if t.system else param.targets)
        ]
        found = resources.c.subject.in_(references)
    else:
        matching = sa.select(search_tokens.c.resource_id).where(
            search_tokens.c.resource_type == resource_type,
            search_tokens.c.name == param.name,
            sa.or_(*(_token_condition(t) for t in tokens)),
        )
        found = resources.c.id.in_(matching)
    return sa.not_(found) if criterion.negated else found


def _where(query: SearchQuery) -> list[Any]:
    conditions = [resources.c.resource_type == query.resource_type]
    conditions += [_condition(query.resource_type, c) for c in query.criteria]
    has_status = any(p.column == "status" for p in SEARCH_PARAMETERS[query.resource_type])
    if has_status and not query.filters_status():
        conditions.append(served_status())
    return conditions


_SORT_COLUMNS = {"_lastUpdated": resources.c.last_updated, "_id": resources.c.id}


def _order(query: SearchQuery) -> list[Any]:
    order = []
    for name, descending in query.sort or (("_lastUpdated", False),):
        column = _SORT_COLUMNS.get(name, resources.c.date_start)
        order.append((column.desc() if descending else column.asc()).nulls_last())
    return [*order, resources.c.id.asc()]


def search(store: Store, query: SearchQuery) -> tuple[int, list[dict[str, Any]]]:
    """(How many resources match over all pages, one page of them with `meta.lastUpdated` and
    `meta.versionId`)."""
    conditions = _where(query)
    with store.transaction() as connection:
        total = int(
            connection.execute(
                sa.select(sa.func.count()).select_from(resources).where(*conditions)
            ).scalar_one()
        )
        rows: Sequence[Any] = ()
        if query.count > 0 and query.offset < total:
            rows = connection.execute(
                sa.select(resources.c.body, resources.c.last_updated, resources.c.version_id)
                .where(*conditions)
                .order_by(*_order(query))
                .limit(query.count)
                .offset(query.offset)
            ).all()
    return total, [with_last_updated(json.loads(b), u, int(v)) for b, u, v in rows]


def _versions(resource_type: str, resource_id: str) -> Any:
    """Every version of one resource: the current row and the archived ones."""
    current = sa.select(resources.c.version_id, resources.c.last_updated, resources.c.body).where(
        resources.c.resource_type == resource_type, resources.c.id == resource_id
    )
    earlier = sa.select(
        resource_versions.c.version_id, resource_versions.c.last_updated, resource_versions.c.body
    ).where(
        resource_versions.c.resource_type == resource_type,
        resource_versions.c.id == resource_id,
    )
    return sa.union_all(current, earlier).subquery()


def read_version(
    store: Store, resource_type: str, resource_id: str, version: int
) -> dict[str, Any] | None:
    """One version of a resource (the current one or an archived one), or None."""
    versions = _versions(resource_type, resource_id)
    with store.transaction() as connection:
        row = connection.execute(
            sa.select(versions.c.body, versions.c.last_updated).where(
                versions.c.version_id == version
            )
        ).first()
    if row is None:
        return None
    return with_last_updated(json.loads(row.body), row.last_updated, version)


def history(
    store: Store, resource_type: str, resource_id: str, query: HistoryQuery
) -> tuple[int, list[dict[str, Any]]] | None:
    """(How many versions, one page of them newest first), or None for an unknown resource."""
    versions = _versions(resource_type, resource_id)
    conditions = [versions.c.last_updated >= query.since] if query.since is not None else []
    with store.transaction() as connection:
        exists = connection.execute(
            sa.select(resources.c.id).where(
                resources.c.resource_type == resource_type, resources.c.id == resource_id
            )
        ).first()
        if exists is None:
            return None
        total = int(
            connection.execute(
                sa.select(sa.func.count()).select_from(versions).where(*conditions)
            ).scalar_one()
        )
        rows = connection.execute(
            sa.select(versions.c.version_id, versions.c.last_updated, versions.c.body)
            .where(*conditions)
            .order_by(versions.c.version_id.desc())
            .limit(query.count)
            .offset(query.offset)
        ).all()
    return total, [with_last_updated(json.loads(b), u, int(v)) for v, u, b in rows]
