"""The research table of `radbridge extract --table`: one row per report, as CSV or Parquet,
with its codebook beside it (`app.codebook`).

Columns: `id`, `template`, `template_version`, `language`, `report_date`, `stage`, `model`,
then per variable `VAR` (the value, or the status when no value is stated), `VAR.status`,
`VAR.evidence` (the verbatim quote), `VAR.confidence` (empty when the stage gives none) and
`VAR.locations` (location ids, `;`-separated, when stated); a finding whose template declares
a side or grade attribute for it has `VAR.side` (the stated side ids, `;`-separated) and one
`VAR.ATTRIBUTE` per grade attribute (`osteoarthritis.kl_grade`, `hydronephrosis.grade`,
`VAR.severity`: the stated values, `;`-separated), empty when none is stated. A report routed to several templates
gets `TEMPLATE.VAR` columns and `;`-joined `template` / `template_version` cells. The report's
insights add `followup.*`, `critical`, `critical.findings`, `rads.<system>` and
`VAR.largest_size_mm` (`app.insight_columns`).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.codebook import SIDE_ATTRIBUTE, attribute_columns, codebook_path, write_codebook
from app.insight_columns import insight_cells, insight_sizes, largest_sizes
from mappings.report import FindingStatus, FindingValue
from mappings.template import Template
from workers.process import Result

TABLE_SUFFIXES = (".csv", ".parquet")
REPORT_COLUMNS = ("id", "template", "template_version", "language", "report_date", "stage", "model")
VALUE_SUFFIXES = ("status", "evidence", "confidence", "locations")
PARQUET_HINT = "pip install 'radbridge[parquet]'"
Row = dict[str, Any]


def _attribute_cells(template: Template, value: FindingValue, name: str) -> Row:
    try:
        attributes = attribute_columns(template, template.variable(value.variable_id))
    except KeyError:
        return {}
    stated = value.status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
    cells: Row = {}
    for attribute in attributes:
        if attribute.id == SIDE_ATTRIBUTE:
            found = list(value.sides)
        else:
            found = [str(g.value) for g in value.grades if g.attribute == attribute.id]
        cells[f"{name}.{attribute.id}"] = ";".join(found) if stated else ""
    return cells


def _joined(values: Sequence[str]) -> str:
    return ";".join(dict.fromkeys(value for value in values if value))


def table_row(report_id: str, results: Sequence[Result]) -> Row:
    """One table row (see the module docstring) of a report's results, one per template."""
    report = results[0].report
    moment = report.observation_time
    row: Row = {
        "id": report_id,
        "template": ";".join(r.template.id for r in results),
        "template_version": ";".join(r.extraction.template_version for r in results),
        "language": report.language or "",
        "report_date": moment.date().isoformat() if moment is not None else "",
        "stage": _joined([r.extraction.stage.value for r in results]),
        "model": _joined([_model(r) for r in results]),
    }
    for result in results:
        prefix = f"{result.template.id}." if len(results) > 1 else ""
        for value in result.extraction.values:
            name = prefix + value.variable_id
            stated = value.value is not None and value.status is not FindingStatus.NOT_MENTIONED
            row[name] = str(value.value) if stated else value.status.value
            row[f"{name}.status"] = value.status.value
            row[f"{name}.evidence"] = value.evidence.quote if value.evidence else ""
            row[f"{name}.confidence"] = "" if value.confidence is None else value.confidence
            if value.locations:
                row[f"{name}.locations"] = ";".join(value.locations)
            row.update(_attribute_cells(result.template, value, name))
        if result.bundle is not None:
            resources = (e.get("resource") or {} for e in result.bundle.get("entry", []))
            row.update(largest_sizes(resources, result.template.id, prefix))
    if results[0].insights is not None:
        row.update(insight_cells(results[0].insights))
        bundles = [r.bundle for r in results if r.bundle is not None]
        by_id = {  # each size Observation once, whichever Bundle carries it
            str(e["resource"].get("id")): e["resource"]
            for bundle in bundles
            for e in bundle.get("entry", [])
            if e.get("resource")
        }
        row.update(insight_sizes(by_id.values()))
    return row


def _model(result: Result) -> str:
    model = result.extraction.model
    return f"{model.name} {model.version}" if model.version else model.name


def check_table_path(path: Path) -> str | None:
    """Why `--table` cannot be written (None when it can): an unknown suffix, or `.parquet`
    without pyarrow (the `parquet` extra)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        return f"--table must end in .csv or .parquet (got {path.name!r})"
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        return f"--table .parquet needs pyarrow ({PARQUET_HINT}), or write .csv"
    return None


def table_columns(rows: Sequence[Row]) -> list[str]:
    """The table's columns: the report columns, then the variables' in first-seen order."""
    columns: dict[str, None] = dict.fromkeys(REPORT_COLUMNS)
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def write_table(path: Path, rows: Sequence[Row], templates: Mapping[str, Template]) -> Path:
    """Write the rows as CSV or Parquet and the codebook beside them (`templates`: every
    template a row names, by id); returns the codebook's path."""
    names = table_columns(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        _write_parquet(path, names, rows)
    else:
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=names, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
    book = codebook_path(path)
    write_codebook(book, names, rows, templates)
    return book


def _write_parquet(path: Path, names: Sequence[str], rows: Sequence[Row]) -> None:
    """Strings, except `VAR.confidence` (float64); an empty cell is null."""
    arrow: Any = importlib.import_module("pyarrow")
    parquet: Any = importlib.import_module("pyarrow.parquet")
    columns: dict[str, Any] = {}
    for name in names:
        cells = [row.get(name) for row in rows]
        if name.endswith(".confidence"):
            floats = [None if cell in (None, "") else float(cell) for cell in cells]
            columns[name] = arrow.array(floats, type=arrow.float64())
        else:
            texts = [None if cell in (None, "") else str(cell) for cell in cells]
            columns[name] = arrow.array(texts, type=arrow.string())
    tmp = path.with_suffix(path.suffix + ".tmp")
    parquet.write_table(arrow.table(columns), tmp)
    tmp.replace(path)
