"""FHIR search benchmark: the SQL search on indexed columns against reading every row.

Fills a fresh store (SQLite in a temporary data dir, or `--database-url` PostgreSQL in a schema
of its own, dropped afterwards) with `--reports` chest CT results (the golden Bundle of
tests/fixtures/hl7v2 under new ids: five Observations, a DiagnosticReport, a Provenance and a
Patient each, one patient per ten reports, one report a day), times the writes, then times each
search through `adapter.fhir_queries.search` (median of `--repeat`) and, in the same run, the
baseline a store without the index would need: read every resource of the type and filter in
Python. Prints a table: matches, ms per search, baseline ms, and the ratio.

    .venv/bin/python benchmarks/fhir_search.py [--reports 2000] [--repeat 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adapter import fhir_queries  # noqa: E402
from adapter.settings import Settings  # noqa: E402
from adapter.store import Store  # noqa: E402
from adapter.tables import resources  # noqa: E402
from mappings.search_query import parse_search  # noqa: E402

GOLDEN = REPO / "tests" / "fixtures" / "hl7v2" / "chest_ct.fhir.json"
START = datetime(2026, 1, 1, 8, tzinfo=UTC)


def bundle_of(template: dict[str, Any], n: int) -> dict[str, Any]:
    """Report `n` of the golden Bundle: its own ids, patient n // 10, day n."""
    text = json.dumps(template)
    for entry in template["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Device":
            continue
        new = (
            f"p{n // 10}" if resource["resourceType"] == "Patient" else f"r{n}-{resource['id'][:8]}"
        )
        text = text.replace(resource["id"], new)
    bundle: dict[str, Any] = json.loads(text)
    bundle["id"] = f"bundle-{n}"
    effective = (START + timedelta(days=n)).isoformat().replace("+00:00", "Z")
    for entry in bundle["entry"]:
        if "effectiveDateTime" in entry["resource"]:
            entry["resource"]["effectiveDateTime"] = effective
        if entry["resource"]["resourceType"] == "DiagnosticReport":
            entry["resource"]["identifier"][0]["value"] = f"ACC{n}"
    return bundle


@contextmanager
def opened(database_url: str | None) -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data))  # type: ignore[call-arg]
        if database_url is None:
            store = Store.open(settings)
            try:
                yield store
            finally:
                store.close()
            return
        schema = f"rb_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(database_url)
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        separator = "&" if "?" in database_url else "?"
        url = f"{database_url}{separator}options=-csearch_path%3D{schema}"
        store = Store.open(settings, url=url)
        try:
            yield store
        finally:
            store.close()
            with admin.begin() as connection:
                connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


def everything(store: Store, kind: str) -> list[dict[str, Any]]:
    """The baseline: every stored resource of the type, parsed."""
    with store.transaction() as connection:
        bodies = connection.execute(
            sa.select(resources.c.body).where(resources.c.resource_type == kind)
        ).scalars()
        return [json.loads(b) for b in bodies]


def codes(resource: dict[str, Any], element: str) -> set[str]:
    value = resource.get(element) or {}
    concepts = value if isinstance(value, list) else [value]
    return {f"{c.get('system')}|{c.get('code')}" for cc in concepts for c in cc.get("coding", [])}


SEARCHES: list[tuple[str, str, list[tuple[str, str]], Callable[[dict[str, Any]], bool]]] = [
    ("Observation", "status=final", [("status", "final")], lambda r: r["status"] == "final"),
    (
        "Observation",
        "code=snomed|60046008",
        [("code", "http://snomed.info/sct|60046008")],
        lambda r: "http://snomed.info/sct|60046008" in codes(r, "code"),
    ),
    (
        "Observation",
        "patient=p7",
        [("patient", "p7")],
        lambda r: r["subject"]["reference"] == "Patient/p7",
    ),
    (
        "Observation",
        "date=2026-03",
        [("date", "2026-03")],
        lambda r: r["effectiveDateTime"].startswith("2026-03"),
    ),
    (
        "Observation",
        "patient=p7&code=…&date=ge2026",
        [("patient", "p7"), ("code", "http://snomed.info/sct|60046008"), ("date", "ge2026")],
        lambda r: (
            r["subject"]["reference"] == "Patient/p7"
            and "http://snomed.info/sct|60046008" in codes(r, "code")
        ),
    ),
    (
        "DiagnosticReport",
        "identifier=ACC42",
        [("identifier", "ACC42")],
        lambda r: any(i.get("value") == "ACC42" for i in r.get("identifier", [])),
    ),
]


def timed(run: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default SQLite)")
    args = parser.parse_args()
    template = json.loads(GOLDEN.read_text("utf-8"))["CT0001-1"]
    with opened(args.database_url) as store:
        started = time.perf_counter()
        for n in range(args.reports):
            bundle = bundle_of(template, n)
            if n % 4 == 0:  # a quarter of the values reviewed
                for entry in bundle["entry"]:
                    if entry["resource"]["resourceType"] == "Observation":
                        entry["resource"]["status"] = "final"
            store.save_bundle(None, f"R{n}", copy.deepcopy(bundle))
        write_ms = (time.perf_counter() - started) * 1000 / args.reports
        print(
            f"{store.engine.dialect.name}: {args.reports} reports "
            f"({args.reports * 5} Observations) written, {write_ms:.2f} ms per Bundle"
        )
        print(f"{'search':34} {'matches':>8} {'SQL ms':>8} {'read-all ms':>12} {'ratio':>7}")
        for kind, label, items, keep in SEARCHES:
            query = parse_search(kind, items, strict=True, base_url="http://b/fhir")
            sql_ms, result = timed(lambda q=query: fhir_queries.search(store, q), args.repeat)
            base_ms, kept = timed(
                lambda k=kind, f=keep: [r for r in everything(store, k) if f(r)], args.repeat
            )
            total = result[0]  # type: ignore[index]
            assert total == len(kept), (label, total, len(kept))  # type: ignore[arg-type]
            print(
                f"{label:34} {total:>8} {sql_ms:>8.2f} {base_ms:>12.2f} {base_ms / sql_ms:>6.1f}x"
            )


if __name__ == "__main__":
    main()
