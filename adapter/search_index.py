"""The FHIR search index, written in the transaction that writes the resources.

`mappings.search_params.index_terms` says what a resource is found by; this module keeps
`search_tokens` and the `date_start` / `date_end` columns of `resources` in step with each
resource's current version (`Store.save_result`, `adapter.reviews.save_review`, and migration
0004 for rows written before the index existed). Nothing here logs values: they may be
identifiers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapter.tables import search_tokens
from mappings.search_params import IndexTerms

log = logging.getLogger("radbridge.search_index")


def keys_condition(type_column: Any, id_column: Any, types: int) -> Any:
    """`(type, id) IN keys` for keys of `types` resource types, as an OR of `type = :kind_i AND
    id IN :ids_i` (values from `key_params`): both databases look each up in the primary key
    (SQLite scans the table for a row-value IN list). The condition depends only on the number
    of types, so a statement holding it is built once and its compiled form cached."""
    return sa.or_(
        *(
            sa.and_(
                type_column == sa.bindparam(f"kind_{i}"),
                id_column.in_(sa.bindparam(f"ids_{i}", expanding=True)),
            )
            for i in range(types)
        )
    )


def key_params(keys: Iterable[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """The number of resource types in `keys` and the parameters of `keys_condition`."""
    by_type: dict[str, set[str]] = {}
    for kind, ident in keys:
        by_type.setdefault(kind, set()).add(ident)
    params: dict[str, Any] = {}
    for i, (kind, ids) in enumerate(sorted(by_type.items())):
        params[f"kind_{i}"] = kind
        params[f"ids_{i}"] = sorted(ids)
    return len(by_type), params


@cache
def _delete_tokens(types: int) -> Any:
    return search_tokens.delete().where(
        keys_condition(search_tokens.c.resource_type, search_tokens.c.resource_id, types)
    )


def write_tokens(
    connection: Connection, written: Sequence[tuple[dict[str, Any], IndexTerms]]
) -> None:
    """Replace the `search_tokens` rows of each resource in `written` (their current versions,
    with their `index_terms`): one DELETE and one INSERT for all of them."""
    if not written:
        return
    keys = {(str(r["resourceType"]), str(r["id"])) for r, _ in written}
    rows: list[dict[str, str]] = []
    skipped = 0
    for resource, terms in written:
        skipped += terms.skipped
        rows += [
            {
                "resource_type": str(resource["resourceType"]),
                "resource_id": str(resource["id"]),
                "name": name,
                "system": system,
                "code": code,
            }
            for name, system, code in terms.tokens
        ]
    types, params = key_params(keys)
    connection.execute(_delete_tokens(types), params)
    if rows:
        unique = {tuple(row.values()): row for row in rows}  # one resource written twice
        connection.execute(_insert_ignoring_present(connection), list(unique.values()))
    if skipped:
        log.warning("search index: %d over-long values not indexed", skipped)


def _insert_ignoring_present(connection: Connection) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a row is the whole key, so a row another transaction
    inserted first (two reports writing the same new Device or Patient at once on PostgreSQL,
    where the DELETE above cannot see it yet) is the same token, not an error."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(search_tokens).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(search_tokens).on_conflict_do_nothing()
