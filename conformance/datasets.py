"""Evaluation datasets: labelled records, loading and validating them, recognising NegEx and DRAGON.

Formats (`conformance.evaluate.DATASET_FORMATS` pairs each detector here with its evaluator):
- the NegEx annotation file (`Annotations-1-120.txt`, `rsAnnotations-1-120-random.txt`) or its
  folder (`is_negex`; read by `conformance.negex`);
- the DRAGON sample folder (`is_dragon`): converted by `conformance.dragon.load_dragon_set`
  (records in the JSONL form below, each task with its template imported from its
  llm_extractinator task file; the dataset carries those templates and notes on the tasks left
  out);
- otherwise JSONL in the form of docs/architecture.md 'Contracts': one report per line,
  `{"id", "text", "language", "template", "gold": {variable_id: value}}` with optional `_pairs`
  (lesion–location), `_episodes` (diagnosis–episode) and `_attributes` (finding instances with
  their attributes, checked against the template; their `size_mm` is scored as `sizes` when the
  template has that attribute) in `gold`, optional
  `patient`/`time`
  and `split` (`dev` or `test`: the half the record belongs to; `radbridge eval --split`);
- the Open-i chest X-ray set is read by `conformance.openi` (`is_openi`).

Every problem in a record is a `DatasetError` naming file and line.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from conformance.errors import ConverterUnavailable, DatasetError
from conformance.labels import (
    ATTRIBUTES_KEY,
    EPISODES_KEY,
    PAIRS_KEY,
    gold_grades,
    gold_label,
    gold_sides,
    gold_sizes,
    normalise_pairs,
    takes_grades,
    takes_sides,
    takes_sizes,
)
from conformance.metrics import Label, Pair
from mappings.errors import TemplateError
from mappings.template import Template

SPLITS = ("dev", "test")
"""The halves of a labelled set: rules are tuned on `dev`, accuracy is reported on `test`."""


@dataclass(frozen=True)
class LabelledReport:
    """One gold-labelled case: a report (or, for NegEx, one annotated sentence)."""

    id: str
    source: str
    text: str
    language: str | None
    template: str
    gold: dict[str, Label]
    pairs: frozenset[Pair] | None = None
    episodes: frozenset[Pair] | None = None
    sizes: frozenset[Pair] | None = None
    """(finding, dimensions in mm) of the gold `_attributes` (`conformance.labels.gold_sizes`)."""
    sides: frozenset[Pair] | None = None
    """(finding, side) of the gold `_attributes` (`conformance.labels.gold_sides`)."""
    grades: frozenset[Pair] | None = None
    """(finding, "attribute=grade") of the gold `_attributes` (`conformance.labels.gold_grades`)."""
    severities: frozenset[Pair] | None = None
    """(finding, "severity=option") of the gold `_attributes` (`gold_grades(severity=True)`)."""
    patient: str | None = None
    time: str | None = None
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its format and its cases."""

    path: Path
    format: str
    reports: tuple[LabelledReport, ...]
    templates: Mapping[str, Template] | None = None  # the dataset's own (DRAGON), else built-in
    notes: tuple[str, ...] = ()


def _pair_list(template: Template, raw: object, key: str) -> list[Pair]:
    if not isinstance(raw, list):
        raise ValueError(f"{key} must be a list of [variable_id, value] pairs")
    pairs: list[Pair] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not (item[1] is None or isinstance(item[1], str))
        ):
            raise ValueError(f"{key}: {item!r} is not a [variable_id, id-or-null] pair")
        variable_id, attribute = item
        try:
            variable = template.variable(variable_id)
        except KeyError:
            raise ValueError(f"{key}: unknown variable {variable_id!r}") from None
        if key == PAIRS_KEY and attribute is not None and attribute not in variable.locations:
            raise ValueError(f"{key}: {attribute!r} is not a location of {variable_id}")
        if key == EPISODES_KEY:
            if variable.qualifier is None:
                raise ValueError(f"{key}: {variable_id} has no qualifier (episode)")
            options = [o.id for o in variable.qualifier.options]
            if attribute is not None and attribute not in options:
                raise ValueError(f"{key}: {attribute!r} is not a qualifier option of {variable_id}")
        pairs.append((variable_id, attribute))
    return pairs


def _check_instances(template: Template, raw: object) -> None:
    """`_attributes`: each instance names a variable of the template and only the attributes
    it declares (`site` = its locations); values are not scored yet, so not type-checked."""
    if not isinstance(raw, list):
        raise ValueError(f"{ATTRIBUTES_KEY} must be a list of [variable_id, {{...}}] items")
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], dict)):  # fmt: skip
            raise ValueError(f"{ATTRIBUTES_KEY}: {item!r} is not a [variable_id, {{...}}] item")
        try:
            variable = template.variable(item[0])
        except KeyError:
            raise ValueError(f"{ATTRIBUTES_KEY}: unknown variable {item[0]!r}") from None
        for key, value in item[1].items():
            if key == "site":
                sites = value if isinstance(value, list) else [value]
                wrong = [site for site in sites if site not in variable.locations]
                if wrong:
                    raise ValueError(f"{ATTRIBUTES_KEY}: {wrong!r} not a location of {item[0]}")
            elif template.attributes and key not in variable.attributes:
                raise ValueError(f"{ATTRIBUTES_KEY}: {item[0]} has no attribute {key!r}")


def parse_record(
    record: object,
    source: str,
    line: int,
    templates: Callable[[str], Template],
    forced_template: str | None = None,
) -> LabelledReport:
    """One dataset record (a parsed JSONL line) -> LabelledReport; DatasetError names file:line."""

    def bad(message: str) -> DatasetError:
        return DatasetError(source, line, message)

    if not isinstance(record, dict):
        raise bad("a line must be a JSON object")
    for key in ("id", "text", "gold"):
        if key not in record:
            raise bad(f"missing key {key!r}")
    template_id = record.get("template", forced_template)
    if not isinstance(template_id, str):
        raise bad("missing key 'template' (or give --template)")
    if not isinstance(record["id"], str | int) or isinstance(record["id"], bool):
        raise bad("'id' must be a string")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise bad("'text' must be a non-empty string")
    language = record.get("language")
    if language is not None and not isinstance(language, str):
        raise bad("'language' must be a string")
    gold_raw = record["gold"]
    if not isinstance(gold_raw, dict):
        raise bad("'gold' must be an object")
    try:
        template = templates(template_id)
    except TemplateError as exc:
        raise bad(f"template {template_id!r}: {exc}") from None
    known = {v.id for v in template.variables} | {PAIRS_KEY, EPISODES_KEY, ATTRIBUTES_KEY}
    unknown = sorted(set(gold_raw) - known)
    if unknown:
        raise bad(f"gold has unknown variable(s) for {template_id}: {', '.join(unknown)}")
    gold: dict[str, Label] = {}
    try:
        for variable in template.variables:
            if variable.id not in gold_raw:
                raise ValueError(f"gold lacks variable {variable.id!r} (use 'not_mentioned')")
            gold[variable.id] = gold_label(variable, gold_raw[variable.id])
        pairs = (
            normalise_pairs(template, _pair_list(template, gold_raw[PAIRS_KEY], PAIRS_KEY))
            if PAIRS_KEY in gold_raw
            else None
        )
        episodes = (
            frozenset(_pair_list(template, gold_raw[EPISODES_KEY], EPISODES_KEY))
            if EPISODES_KEY in gold_raw
            else None
        )
        sizes = None
        sides = None
        grades = None
        severities = None
        if ATTRIBUTES_KEY in gold_raw:
            _check_instances(template, gold_raw[ATTRIBUTES_KEY])
            if takes_sizes(template):
                sizes = gold_sizes(gold_raw[ATTRIBUTES_KEY])
            if takes_sides(template):
                sides = gold_sides(gold_raw[ATTRIBUTES_KEY])
            if takes_grades(template):
                grades = gold_grades(gold_raw[ATTRIBUTES_KEY], template)
            if takes_grades(template, severity=True):
                severities = gold_grades(gold_raw[ATTRIBUTES_KEY], template, severity=True)
    except ValueError as exc:
        raise bad(str(exc)) from None
    time_value = record.get("time")
    if time_value is not None:
        try:
            date.fromisoformat(str(time_value)[:10])
        except ValueError:
            raise bad("'time' must be an ISO date") from None
    patient = record.get("patient")
    return LabelledReport(
        id=str(record["id"]),
        source=f"{source}:{line}",
        text=record["text"],
        language=language,
        template=template_id,
        gold=gold,
        pairs=pairs,
        episodes=episodes,
        sizes=sizes,
        sides=sides,
        grades=grades,
        severities=severities,
        patient=None if patient is None else str(patient),
        time=None if time_value is None else str(time_value),
    )


def builtin_template(template_id: str) -> Template:
    """A built-in template by id (the default template lookup)."""
    from mappings.template import get_template

    return get_template(template_id)


def read_records(
    records: Iterable[tuple[int, object]],
    source: str,
    *,
    template_id: str | None = None,
    templates: Callable[[str], Template] = builtin_template,
    split: str | None = None,
) -> tuple[LabelledReport, ...]:
    """Parse (line number, record) pairs; with `template_id` only that template's records, with
    `split` (`dev` or `test`) only the records of that half (each record must name its half)."""
    if split is not None and split not in SPLITS:
        raise DatasetError(source, None, f"split must be one of {', '.join(SPLITS)}")
    reports: list[LabelledReport] = []
    seen: set[tuple[str, str]] = set()
    for line, record in records:
        if template_id is not None and isinstance(record, dict):
            own = record.get("template", template_id)
            if own != template_id:
                continue
        if isinstance(record, dict) and "split" in record and record["split"] not in SPLITS:
            raise DatasetError(source, line, f"'split' must be one of {', '.join(SPLITS)}")
        if split is not None and isinstance(record, dict):
            if "split" not in record:
                raise DatasetError(source, line, "no 'split' (dev or test): cannot select a half")
            if record["split"] != split:
                continue
        report = parse_record(record, source, line, templates, template_id)
        key = (report.template, report.id)
        if key in seen:
            raise DatasetError(source, line, f"duplicate id {report.id!r}")
        seen.add(key)
        reports.append(report)
    return tuple(reports)


def jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) per non-empty line; DatasetError names file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), None, f"cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(str(path), number, f"invalid JSON: {exc.msg}") from None


def load_jsonl(
    path: Path,
    template_id: str | None = None,
    split: str | None = None,
    templates: Callable[[str], Template] = builtin_template,
) -> Dataset:
    """A JSONL dataset in the Contracts form (with `split`, only that half)."""
    reports = read_records(
        jsonl_records(path), str(path), template_id=template_id, templates=templates, split=split
    )
    return Dataset(path, "jsonl", reports)


NEGEX_FILES = ("rsAnnotations-1-120-random.txt", "Annotations-1-120.txt")


def is_negex(path: Path) -> bool:
    """The NegEx annotation file, or a folder holding one."""
    if path.is_dir():
        return any((path / name).is_file() for name in NEGEX_FILES)
    return path.name in NEGEX_FILES


def is_dragon(path: Path) -> bool:
    """The DRAGON sample folder (Task*.md files under english/ or dutch/)."""
    if not path.is_dir():
        return False
    return any(
        next((path / lang).glob("Task*.md"), None) is not None
        for lang in ("english", "dutch")
        if (path / lang).is_dir()
    )


DRAGON_NEEDS = (
    "DRAGON conversion needs the llm_extractinator task import (mappings/extractinator.py)"
)


def template_lookup(templates: Mapping[str, Template]) -> Callable[[str], Template]:
    """A template lookup over a dataset's own templates (TemplateError for any other id)."""

    def lookup(template_id: str) -> Template:
        if template_id not in templates:
            raise TemplateError(template_id, "id", "not a template of this dataset")
        return templates[template_id]

    return lookup


def load_dragon(path: Path, template_id: str | None = None) -> Dataset:
    """The DRAGON samples converted by `conformance.dragon` (each task its imported template).

    Named-entity tasks are unsupported: they give no records and one line each in `notes`.
    """
    try:
        dragon = importlib.import_module("conformance.dragon")
    except ModuleNotFoundError as exc:
        if exc.name not in ("conformance.dragon", "mappings.extractinator"):
            raise
        raise ConverterUnavailable(DRAGON_NEEDS) from None
    converted = dragon.load_dragon_set(path)
    records = enumerate(converted.records, start=1)
    reports = read_records(
        records,
        str(path),
        template_id=template_id,
        templates=template_lookup(converted.templates),
    )
    notes = tuple(f"{task}: unsupported: {why}" for task, why in converted.unsupported.items())
    return Dataset(path, "dragon", reports, converted.templates, notes)
