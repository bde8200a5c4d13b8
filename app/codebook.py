"""The codebook beside a research table: `<table>.codebook.csv`, what every column and coded
value means (docs/research-table.md).

One line per column (`value` empty) and one per value a column can hold that has a meaning of
its own (a template, a status, an option, a location): `column`, `value`, `meaning`, `template`,
`template_version`, `variable`, `code_system`, `code`, `display`, `unit` (UCUM), `code_source`
(where the code was verified) and `note` (e.g. why a concept has no code). The codes are the
ones the Bundles carry: the template's codes, the SNOMED CT Present / Absent / Equivocal
qualifiers of a presence variable's `valueCodeableConcept` (`mappings.fhir_out`). A column
that several templates share (`pleural_effusion` from chest_findings and chest_ct) has lines
for each template the table's rows name. The insight columns (`app.insight_columns`) have one
line each. An attribute column (`VAR.side`, `VAR.kl_grade`, `VAR.severity` ...,
`attribute_columns`) has a line with the attribute's definition and one per
option (side and severity options with the codes the template cites).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.insight_columns import insight_column_meaning
from mappings import terminology as term
from mappings.fhir_out import presence_value_code
from mappings.report import FindingStatus
from mappings.template import Attribute, CodeRef, Template, Variable, VariableType
from workers.grades import grade_attributes

FIELDS = (
    "column", "value", "meaning", "template", "template_version", "variable", "code_system",
    "code", "display", "unit", "code_source", "note",
)  # fmt: skip
REPORT_COLUMN_MEANINGS = {
    "id": "report id: the record's id (CSV/JSONL), else the DiagnosticReport id or "
    "<MSH-10>-<OBR set id>",
    "template": "the template(s) the report was extracted with (';'-separated when several)",
    "template_version": "each template's version, in the order of `template`",
    "language": "the report's language (BCP-47 primary tag): given in the input or detected",
    "report_date": "the report's date (YYYY-MM-DD): the record's `date`, OBR-7 (else OBR-6, "
    "OBR-22), or DiagnosticReport.effective (else issued); empty when the input gives none",
    "stage": "the stage that extracted the values: rules, llm or hybrid",
    "model": "the model (name and version) that extracted the values; radbridge-rules for "
    "the rules stage",
}
STATUS_MEANINGS = {
    FindingStatus.PRESENT: "stated present",
    FindingStatus.ABSENT: "stated absent",
    FindingStatus.UNCERTAIN: "stated as uncertain or possible, or the evidence check "
    "downgraded the value",
    FindingStatus.NOT_MENTIONED: "not mentioned in the report (no Observation)",
}
SUFFIX_MEANINGS = {
    "status": "the assertion",
    "evidence": "the verbatim quote of the report the value rests on (report text)",
    "confidence": "the model's confidence, 0 to 1; empty when the stage gives none (rules, a "
    "server without log-probabilities)",
    "locations": "the stated location ids, ';'-separated",
}


SIDE_ATTRIBUTE = "side"


def attribute_columns(template: Template, variable: Variable) -> tuple[Attribute, ...]:
    """The attributes a variable has table columns for (`VAR.<id>`): its side, then its grade
    and severity attributes (`workers.grades`)."""
    sides = tuple(
        a for a in template.attributes if a.id == SIDE_ATTRIBUTE and a.id in variable.attributes
    )
    return (*sides, *grade_attributes(template, variable))


@dataclass(frozen=True)
class Line:
    """One line of the codebook."""

    column: str
    value: str = ""
    meaning: str = ""
    template: str = ""
    template_version: str = ""
    variable: str = ""
    code_system: str = ""
    code: str = ""
    display: str = ""
    unit: str = ""
    code_source: str = ""
    note: str = ""


def codebook_path(table: Path) -> Path:
    """Where a table's codebook goes: `out.csv` -> `out.codebook.csv` (also for `.parquet`)."""
    return table.with_name(f"{table.stem}.codebook.csv")


def _coded(code: CodeRef | None) -> dict[str, str]:
    if code is None:
        return {}
    return {"code_system": code.system, "code": code.code, "display": code.display,
            "code_source": code.source}  # fmt: skip


def _uncoded(code: CodeRef | None, reason: str | None) -> str:
    return "" if code is not None else f"no code: {reason}" if reason else "no code"


def _status_lines(column: str, base: dict[str, str], variable: Variable) -> Iterator[Line]:
    for status in FindingStatus:
        coded: dict[str, str] = {}
        qualifier = presence_value_code(status) if variable.type is VariableType.PRESENCE else None
        if qualifier is not None:
            entry = term.require(term.SNOMED, qualifier)
            coded = {"code_system": term.SNOMED, "code": qualifier, "display": entry.display,
                     "code_source": entry.source}  # fmt: skip
        meaning = STATUS_MEANINGS[status]
        if status is FindingStatus.PRESENT and variable.type is not VariableType.PRESENCE:
            meaning = "the value is stated"
        yield Line(column, status.value, meaning, **base, **coded)


def _value_lines(column: str, base: dict[str, str], variable: Variable) -> Iterator[Line]:
    """The values a `VAR` cell holds besides the statuses: qualifier or enum options."""
    options = variable.qualifier.options if variable.qualifier else variable.options
    what = f"{variable.qualifier.label}: " if variable.qualifier else ""
    for option in options:
        note = _uncoded(option.code, option.uncoded_reason)
        yield Line(column, option.id, what + option.label, **base, **_coded(option.code), note=note)


def _variable_lines(
    column: str, suffix: str, template: Template, variable: Variable
) -> Iterator[Line]:
    base = {"template": template.id, "template_version": template.version,
            "variable": variable.id}  # fmt: skip
    if suffix == "":
        unit = variable.unit.code if variable.unit else ""
        kind = f"{variable.label} ({variable.type.value}"
        if variable.scale is not None:
            kind += f", {variable.scale.min} to {variable.scale.max}"
        meaning = kind + "): the value, or the status when no value is stated"
        note = _uncoded(variable.code, variable.uncoded_reason)
        yield Line(column, "", meaning, **base, **_coded(variable.code), unit=unit, note=note)
        yield from _value_lines(column, base, variable)
        yield from _status_lines(column, base, variable)
    elif suffix == "status":
        yield Line(column, "", f"{variable.label}: {SUFFIX_MEANINGS[suffix]}", **base)
        yield from _status_lines(column, base, variable)
    elif suffix == "locations":
        yield Line(column, "", f"{variable.label}: {SUFFIX_MEANINGS[suffix]}", **base)
        sites = {location.id: location for location in template.locations}
        for location_id in variable.locations:
            site = sites[location_id]
            note = (
                "expands to " + ", ".join(site.expands_to)
                if site.expands_to
                else _uncoded(site.code, site.uncoded_reason)
            )
            yield Line(column, site.id, site.label, **base, **_coded(site.code), note=note)
    elif suffix in SUFFIX_MEANINGS:
        yield Line(column, "", f"{variable.label}: {SUFFIX_MEANINGS[suffix]}", **base)
    else:
        yield from _attribute_lines(column, template, variable, template.attribute(suffix))


def _attribute_lines(
    column: str, template: Template, variable: Variable, attribute: Attribute
) -> Iterator[Line]:
    """A `VAR.<attribute>` column: the attribute's meaning, then its options (codes as cited)."""
    base = {"template": template.id, "template_version": template.version,
            "variable": variable.id}  # fmt: skip
    kind = attribute.type.value
    if attribute.scale is not None:
        kind += f", {attribute.scale.min} to {attribute.scale.max}"
    meaning = (
        f"{variable.label}: {attribute.label} ({kind}) as stated, ';'-separated when several; "
        f"empty when none is stated. {attribute.definition}"
    )
    note = _uncoded(attribute.code, attribute.uncoded_reason)
    yield Line(column, "", meaning, **base, **_coded(attribute.code), note=note)
    for option in attribute.options:
        note = _uncoded(option.code, option.uncoded_reason)
        yield Line(column, option.id, option.label, **base, **_coded(option.code), note=note)


def _sources(templates: Mapping[str, Template]) -> dict[str, list[tuple[Template, Variable, str]]]:
    """Every column name a template's variables can give -> (template, variable, suffix)."""
    sources: dict[str, list[tuple[Template, Variable, str]]] = {}
    for template in templates.values():
        for variable in template.variables:
            attributes = tuple(a.id for a in attribute_columns(template, variable))
            for suffix in ("", *SUFFIX_MEANINGS, *attributes):
                name = variable.id + (f".{suffix}" if suffix else "")
                for column in (name, f"{template.id}.{name}"):
                    sources.setdefault(column, []).append((template, variable, suffix))
    return sources


def _named_templates(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    return {name for row in rows for name in str(row.get("template") or "").split(";") if name}


def codebook(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], templates: Mapping[str, Template]
) -> list[Line]:
    """The codebook of a table: its `columns`, for the templates its `rows` name."""
    named = _named_templates(rows)
    used = {key: template for key, template in templates.items() if key in named}
    sources = _sources(used)
    lines: list[Line] = []
    for column in columns:
        if column in REPORT_COLUMN_MEANINGS:
            lines.append(Line(column, meaning=REPORT_COLUMN_MEANINGS[column]))
            if column == "template":
                lines.extend(
                    Line(column, key, t.title, template=key, template_version=t.version)
                    for key, t in sorted(used.items())
                )
            continue
        insight = insight_column_meaning(column)
        if insight is not None:
            lines.append(Line(column, meaning=insight))
            continue
        found = sources.get(column)
        if not found:
            lines.append(Line(column, note="template not loaded: no codebook entry"))
            continue
        for template, variable, suffix in found:
            lines.extend(_variable_lines(column, suffix, template, variable))
    return lines


def write_codebook(
    path: Path,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    templates: Mapping[str, Template],
) -> None:
    """Write the codebook of a table as CSV (a temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(asdict(line) for line in codebook(columns, rows, templates))
    tmp.replace(path)
