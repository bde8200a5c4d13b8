"""The DRAGON sample reports as an evaluation set, each task with its imported template.

`../shared/data/dragon-samples/<language>/TaskNNN_<name>.md` (DIAGNijmegen/dragon_sample_reports,
CC BY-NC-SA: read in place, never copied) pairs with the llm_extractinator task file
`../shared/data/llm-extractinator-tasks/dragon-2024/TaskNNN_<name>.json`, imported by
`mappings.extractinator`. One sample gives one record in the Contracts JSONL form
(`{"id", "text", "language", "template", "gold"}`), id `TaskNNN_<name>-<en|nl>`.

- Text: the fenced block after "Anonymous sample report"; a `text_parts` task's block is a JSON
  list, joined with line breaks; the sample repository's anonymisation DISCLAIMER banner is
  removed (it is not part of the reports the tasks were made for).
- Gold: the `Label:` line (`Label left:` / `Label right:` name a field); several fields share
  one line comma-separated in Parser_Format order, or DRAGON's where it differs (`LABEL_ORDER`).
  bool True -> `present`, False -> `absent` (DRAGON's False also covers "not mentioned": the
  presence metrics count both as negative, only the 4-class accuracy tells them apart); an
  integer class -> the ordinal value; a literal -> its option id, a "not mentioned" literal ->
  `not_mentioned`; a number -> float, 0 -> `not_mentioned` where the task says "set to 0".
- Named-entity tasks (T25-T28) are unsupported (`mappings.extractinator.UnsupportedTask`):
  listed in `DragonSet.unsupported`, no records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import DatasetError
from mappings.errors import TemplateError
from mappings.extractinator import (
    ImportedField,
    ImportedTask,
    UnsupportedTask,
    import_task,
    read_task,
)
from mappings.template import Template

LANGUAGES: dict[str, str] = {"english": "en", "dutch": "nl"}
TASKS_FOLDER = ("llm-extractinator-tasks", "dragon-2024")
NOT_MENTIONED = "not_mentioned"

_LABEL = re.compile(r"^Label(?: (?P<name>[A-Za-z_]+))?:[ \t]*(?P<value>\S.*?)\s*$", re.MULTILINE)
_SAMPLE_BLOCK = re.compile(
    r"^Anonymous sample report[^\n]*\n```[^\n]*\n(?P<body>.*?)\n```", re.S | re.M
)
_DISCLAIMER = re.compile(r"#{10,}\s*DISCLAIMER:.*?#{10,}[ \t]*\n?", re.S)
_TASK_NAME = re.compile(r"^Task(?P<number>\d{3})_[A-Za-z0-9_]+$")
# DRAGON's label order where it is not the Parser_Format order: llm_extractinator's post-processing
# writes T15 alphabetically (DIAGNijmegen/llm_extractinator,
# data_extractor/post_processing/DRAGON_post_processing.py, task "015"); the T15 sample's notes
# agree (a non-informative biopsy: True at positions 1 and 6).
LABEL_ORDER: dict[str, tuple[str, ...]] = {
    "Task015_colon_pathology_clf": (
        "biopsy",
        "cancer",
        "high_grade_dysplasia",
        "hyperplastic_polyps",
        "low_grade_dysplasia",
        "non_informative",
        "serrated_polyps",
    ),
}


@dataclass(frozen=True)
class DragonSample:
    """One sample report: task, language, text and the raw gold labels (field name or "")."""

    task: str
    language: str
    path: Path
    text: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DragonSet:
    """The converted samples: records, their templates, and the tasks left out with why."""

    records: tuple[dict[str, Any], ...]
    templates: dict[str, Template]
    tasks: dict[str, ImportedTask] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)


def tasks_folder(samples: Path) -> Path:
    """The dragon-2024 task files beside the sample folder (`../llm-extractinator-tasks/...`)."""
    return samples.parent.joinpath(*TASKS_FOLDER)


def sample_text(markdown: str, parts: bool, source: str) -> str:
    """The report of a sample file (see module docstring)."""
    match = _SAMPLE_BLOCK.search(markdown)
    if match is None:
        raise DatasetError(source, None, "no 'Anonymous sample report' block")
    body = match["body"]
    if parts:
        try:
            items = json.loads(body)
        except json.JSONDecodeError as exc:
            raise DatasetError(source, None, f"text_parts block is not JSON: {exc.msg}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise DatasetError(source, None, "text_parts block must be a list of strings")
        body = "\n".join(items)
    text = _DISCLAIMER.sub("", body).strip()
    if not text:
        raise DatasetError(source, None, "empty sample report")
    return text


def read_sample(path: Path, language: str, parts: bool) -> DragonSample:
    """One sample file (its `Label` lines before the report block)."""
    try:
        markdown = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), None, f"cannot read: {exc}") from None
    head = markdown.split("Anonymous sample report", 1)[0]
    labels = tuple((m["name"] or "", m["value"]) for m in _LABEL.finditer(head))
    text = sample_text(markdown, parts, str(path))
    return DragonSample(path.stem, language, path, text, labels)


def _field_value(item: ImportedField, raw: str, where: str) -> str | int | float:
    value = raw.strip()
    if item.kind == "presence":
        verdicts = {"true": "present", "false": "absent"}
        if value.casefold() not in verdicts:
            raise DatasetError(where, None, f"{item.name}: {value!r} is not True or False")
        return verdicts[value.casefold()]
    if item.kind in ("ordinal", "enum"):
        if value.casefold() not in item.literals:
            raise DatasetError(where, None, f"{item.name}: {value!r} is not one of the literals")
        mapped = item.literals[value.casefold()]
        if mapped is None:
            return NOT_MENTIONED
        return int(mapped) if item.kind == "ordinal" else mapped
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(where, None, f"{item.name}: {value!r} is not a number") from None
    if number == 0 and item.zero_is_not_mentioned:
        return NOT_MENTIONED
    return number


def gold_values(
    task: ImportedTask,
    labels: Sequence[tuple[str, str]],
    where: str,
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The gold of one sample: variable id -> value in the Contracts form.

    `order`: the field names in the order of a comma-separated label (default: Parser_Format).
    """
    try:
        fields = task.fields if order is None else tuple(task.field_named(n) for n in order)
    except KeyError as exc:
        raise DatasetError(where, None, f"label order names no task field {exc}") from None
    if len(fields) != len(task.fields):
        raise DatasetError(where, None, "label order must name every task field")
    named = {name: value for name, value in labels if name}
    plain = [value for name, value in labels if not name]
    raw: dict[str, str] = {}
    if named:
        for name, value in named.items():
            try:
                raw[task.field_named(name).name] = value
            except KeyError:
                raise DatasetError(where, None, f"'Label {name}' names no task field") from None
    elif len(plain) == 1:
        values = [plain[0]] if len(fields) == 1 else [v.strip() for v in plain[0].split(",")]
        if len(values) != len(fields):
            raise DatasetError(
                where, None, f"{len(values)} label value(s) for {len(fields)} task field(s)"
            )
        raw = {item.name: value for item, value in zip(fields, values, strict=True)}
    else:
        raise DatasetError(where, None, "expected one 'Label:' line")
    missing = [item.name for item in fields if item.name not in raw]
    if missing:
        raise DatasetError(where, None, f"no label for field(s) {', '.join(missing)}")
    return {item.variable_id: _field_value(item, raw[item.name], where) for item in fields}


def _task_files(folder: Path) -> dict[str, Path]:
    files = {path.stem: path for path in sorted(folder.glob("Task*.json"))}
    if not files:
        raise DatasetError(str(folder), None, "no DRAGON task files (Task*.json)")
    return files


def load_dragon_set(
    samples: Path,
    tasks: Path | None = None,
    languages: Sequence[str] = ("english", "dutch"),
) -> DragonSet:
    """Every sample of the given language folders, paired with its task file and converted."""
    task_files = _task_files(tasks or tasks_folder(samples))
    imported: dict[str, ImportedTask] = {}
    unsupported: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    for folder in languages:
        if folder not in LANGUAGES:
            raise DatasetError(str(samples), None, f"unknown language folder {folder!r}")
        for path in sorted((samples / folder).glob("Task*.md")):
            if _TASK_NAME.match(path.stem) is None:
                continue
            if path.stem not in task_files:
                raise DatasetError(str(path), None, "no task file with this name")
            if path.stem in unsupported:
                continue
            data = read_task(task_files[path.stem])
            if path.stem not in imported:
                try:
                    imported[path.stem] = import_task(
                        data, str(task_files[path.stem]), tuple(LANGUAGES.values())
                    )
                except UnsupportedTask as exc:
                    unsupported[path.stem] = exc.problem
                    continue
                except TemplateError as exc:
                    raise DatasetError(str(task_files[path.stem]), None, str(exc)) from None
            task = imported[path.stem]
            sample = read_sample(path, LANGUAGES[folder], data.get("Input_Field") == "text_parts")
            records.append(
                {
                    "id": f"{path.stem}-{sample.language}",
                    "text": sample.text,
                    "language": sample.language,
                    "template": task.template.id,
                    "gold": gold_values(task, sample.labels, str(path), LABEL_ORDER.get(path.stem)),
                }
            )
    if not records and not unsupported:
        raise DatasetError(str(samples), None, "no DRAGON samples (english/ or dutch/Task*.md)")
    return DragonSet(
        records=tuple(records),
        templates={task.template.id: task.template for task in imported.values()},
        tasks=imported,
        unsupported=unsupported,
    )
