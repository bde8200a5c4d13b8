"""Import llm_extractinator task files (DIAGNijmegen/llm_extractinator) as radbridge templates.

A task file names a `Parser_Format`: its output fields, as a JSON object of
`{type, description, optional, literals, items, properties}` per field (the older DRAGON task
files add `Task`, `Type`, `Label_Field`). Each field becomes one variable, so single- and
multi-label tasks map the same way; `reasoning` fields are dropped (the evidence quote replaces
them). The mapping keeps the evidence-first contract:

- `bool` -> **presence**: True = `present` (the model quotes where the report states it),
  False = `absent` or `not_mentioned`. An enum with options true/false would force a quote for
  "false" even when the report says nothing, which is what False usually means in these tasks.
- `int`/`str` with `literals` that are consecutive integers -> **ordinal** (`scale` min..max);
  other literals -> **enum** (option ids made safe, the literal kept as label and synonym, a
  `'x' for LABEL` phrase or a `LABEL: text` line of the description used as label/definition).
  A literal meaning "not mentioned" / "not applicable" is not an option: it is the variable's
  `not_mentioned` state.
- `float`/`int` without literals -> **number**; the UCUM unit is taken from the field's
  description (else the task's): mm, cm, cm3 (cubic centimetres, cc), mL, ng/mL, %, HU; else
  "1". A sentence "If not described, set to 0" is dropped from the definition: null
  (`not_mentioned`) says it, never a default value.
- Unsupported, with a `UnsupportedTask` naming the task and the reason: named-entity tasks
  (their output is a list of quoted spans or a rewritten text; a radbridge variable holds one
  value with one evidence quote), free-text `str` fields, `list` and `dict` fields.
- A `Parser_Format` naming a `.py` file is refused (`UnsafeParserFormat`): radbridge never
  executes task code.

The template (`origin: llm_extractinator`) has no codes: every variable and option is uncoded
with reason `UNCODED_REASON`. Its languages come from the caller (default nl, en); synonyms
are the task's own English words (field names, literals), so the loader does not require them
per language (`mappings.template`). The task text goes into the definitions the model sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mappings.errors import TemplateError
from mappings.template import Template, parse_template

ORIGIN = "llm_extractinator"
UNCODED_REASON = "user-defined task (llm_extractinator import)"
DEFAULT_LANGUAGES: tuple[str, ...] = ("nl", "en")
VERSION = "1.0.0"
FIELD_KEYS = frozenset({"type", "description", "optional", "literals", "items", "properties"})
IGNORED_FIELD_KEYS = frozenset({"examples"})
NOT_MENTIONED_WORDS = frozenset(
    {"not mentioned", "not applicable", "not stated", "not reported", "n/a", "none mentioned"}
)
NER_REASON = (
    "named entity recognition is not supported: its output is a list of quoted spans or a "
    "rewritten text, and a radbridge variable holds one value with one evidence quote"
)
FREE_TEXT_REASON = "free text (str without literals) has no typed value"
LIST_REASON = "a list of values or entities has no single typed value"
DICT_REASON = "a nested object has no single typed value"

_UNITS: tuple[tuple[str, str, str], ...] = (
    (r"cubic\s+centimet(?:er|re)s?|\bcm³|\bcm3\b|\bcc\b", "cm3", "cm³"),
    (r"\bng\s*/\s*ml\b|nanograms?\s+per\s+millilit(?:er|re)", "ng/mL", "ng/mL"),
    (r"millilit(?:er|re)s?|\bml\b", "mL", "mL"),
    (r"millimet(?:er|re)s?|\bmm\b", "mm", "mm"),
    (r"centimet(?:er|re)s?|\bcm\b", "cm", "cm"),
    (r"\bpercent(?:age)?\b|%", "%", "%"),
    (r"\bhounsfield\b|\bHU\b", "[hnsf'U]", "HU"),
)
_ZERO_DEFAULT = re.compile(r"[^.]*\bset (?:it |them )?to (?:0|zero)\b[^.]*\.?", re.IGNORECASE)
_BOILERPLATE = re.compile(r"^\s*The final classification\.\s*", re.IGNORECASE)
_TRUE_PHRASE = re.compile(
    r"True if (?:an? |the )?(?P<phrase>[\w -]{3,60}?) (?:is|are) "
    r"(?:present|mentioned|described|provided)",
    re.IGNORECASE,
)
_FOR_LABEL = re.compile(
    r"'(?P<literal>[^']{1,40})' for (?P<label>[a-z][a-z -]{1,40}?)(?=[,.;)]| or |$)"
)


class UnsupportedTask(TemplateError):
    """A task whose output radbridge cannot represent (NER, free text, lists, nested objects)."""


class UnsafeParserFormat(TemplateError):
    """A task's `Parser_Format` names Python code, which radbridge never executes."""


FieldKind = Literal["presence", "ordinal", "number", "enum"]


@dataclass(frozen=True)
class ImportedField:
    """How one Parser_Format field became a variable (used to convert gold labels)."""

    name: str
    variable_id: str
    kind: FieldKind
    literals: Mapping[str, str | None] = field(default_factory=dict)  # casefolded -> option/None
    zero_is_not_mentioned: bool = False


@dataclass(frozen=True)
class ImportedTask:
    """A task imported as a template, with the field mapping."""

    template: Template
    yaml: str
    fields: tuple[ImportedField, ...]

    def field_named(self, name: str) -> ImportedField:
        """The field with this Parser_Format name (KeyError if none)."""
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)


def safe_id(text: str, fallback: str = "value") -> str:
    """`text` as a template id: lower case, `[a-z][a-z0-9_]*` (a leading digit gets a prefix)."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_")
    if not cleaned:
        return fallback
    return cleaned if cleaned[0].isalpha() else f"{fallback}_{cleaned}"


def _humanise(name: str) -> str:
    words = re.sub(r"[_\s]+", " ", name).strip()
    return words[:1].upper() + words[1:]


def _sentences(*parts: str | None) -> str:
    return " ".join(part.strip() for part in parts if part and part.strip())


def unit_for(*descriptions: str | None) -> tuple[str, str]:
    """(UCUM code, display) named by the first description that names one, else ("1", "1")."""
    for description in descriptions:
        if not description:
            continue
        for pattern, code, display in _UNITS:
            if re.search(pattern, description, re.IGNORECASE):
                return code, display
    return "1", "1"


def _literal_labels(*descriptions: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for description in descriptions:
        for match in _FOR_LABEL.finditer(description or ""):
            labels.setdefault(match["literal"], match["label"].strip())
    return labels


def _definition_lines(description: str) -> dict[str, str]:
    """`LABEL: text` lines of a description (bullets allowed), casefolded label -> text."""
    found: dict[str, str] = {}
    for line in description.splitlines():
        match = re.match(r"^\s*[•*-]?\s*(?P<key>[\w /-]{1,40}?)\s*:\s*(?P<text>\S.*)$", line)
        if match:
            found.setdefault(match["key"].casefold(), match["text"].strip())
    return found


def _is_int_literal(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _source_name(source: str) -> str:
    return Path(source).stem or source


class _Builder:
    """Turns one task dict into template data (a dict in the YAML form) and field mappings."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.task_name = str(data.get("Task") or "").strip()
        self.description = str(data.get("Description") or "").strip()
        self.used_lines: set[str] = set()

    def error(self, where: str, problem: str) -> TemplateError:
        return TemplateError(self.source, where, problem)

    def parser_format(self) -> dict[str, Any]:
        raw = self.data.get("Parser_Format")
        if raw is None:
            raise self.error("Parser_Format", "missing: a task needs its output fields")
        if isinstance(raw, str):
            if raw.strip().endswith(".py"):
                raise UnsafeParserFormat(
                    self.source,
                    "Parser_Format",
                    f"names a Python file ({raw.strip()}): radbridge never executes task code; "
                    "give Parser_Format as a JSON object of fields "
                    "({type, description, literals, ...})",
                )
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise self.error(
                    "Parser_Format", "must be a JSON object of fields (or a .py file name)"
                ) from None
        if not isinstance(raw, dict) or not raw:
            raise self.error("Parser_Format", "must be a non-empty object of fields")
        return raw

    def check_supported(self, fields: Mapping[str, Any]) -> None:
        kind = str(self.data.get("Type") or "")
        label_field = str(self.data.get("Label_Field") or "")
        if "named entity" in kind.casefold() or "named_entity" in label_field:
            raise UnsupportedTask(self.source, "Type", f"{self.display_name()}: {NER_REASON}")
        reasons = []
        for name, spec in fields.items():
            if self.is_reasoning(name, spec):
                continue
            reason = self.unsupported_reason(name, spec)
            if reason is not None:
                reasons.append(f"{name!r}: {reason}")
        if reasons:
            raise UnsupportedTask(
                self.source,
                "Parser_Format",
                f"{self.display_name()}: unsupported field(s): {'; '.join(reasons)}",
            )

    def display_name(self) -> str:
        return self.task_name or _source_name(self.source)

    @staticmethod
    def is_reasoning(name: str, spec: object) -> bool:
        return (
            name.casefold() == "reasoning" and isinstance(spec, dict) and spec.get("type") == "str"
        )

    def unsupported_reason(self, name: str, spec: object) -> str | None:
        if not isinstance(spec, dict):
            raise self.error(f"Parser_Format.{name}", "a field must be an object {type, ...}")
        unknown = sorted(set(spec) - FIELD_KEYS - IGNORED_FIELD_KEYS)
        if unknown:
            raise self.error(f"Parser_Format.{name}", f"unknown key(s): {', '.join(unknown)}")
        kind = spec.get("type")
        if kind == "list":
            return LIST_REASON
        if kind == "dict":
            return DICT_REASON
        if kind == "str" and not spec.get("literals"):
            return FREE_TEXT_REASON
        if kind not in ("str", "int", "float", "bool"):
            raise self.error(
                f"Parser_Format.{name}.type",
                f"unknown type {kind!r} (str, int, float, bool, list, dict)",
            )
        return None

    def variable_id(self, name: str, single: bool) -> str:
        if single and name.casefold() == "label" and self.task_name:
            return safe_id(self.task_name)
        return safe_id(name)

    def label(self, name: str, single: bool) -> str:
        if single and name.casefold() == "label":
            return self.task_name or _humanise(_source_name(self.source))
        return f"{self.task_name}: {_humanise(name)}" if self.task_name else _humanise(name)

    def context(self) -> str:
        """The task description minus lines used as option definitions and zero defaults."""
        lines = [
            line.strip()
            for line in self.description.splitlines()
            if line.strip() and line.strip() not in self.used_lines
        ]
        text = _ZERO_DEFAULT.sub("", " ".join(lines)).strip()
        return f"Task: {text}" if text else ""

    def variable(
        self, name: str, spec: Mapping[str, Any], single: bool
    ) -> tuple[dict[str, Any], ImportedField]:
        variable_id = self.variable_id(name, single)
        description = _BOILERPLATE.sub("", str(spec.get("description") or "")).strip()
        variable: dict[str, Any] = {
            "id": variable_id,
            "label": self.label(name, single),
            "type": "",
            "definition": "",
            "uncoded_reason": UNCODED_REASON,
        }
        words = [] if name.casefold() == "label" else [_humanise(name).casefold()]
        kind = spec["type"]
        literals = spec.get("literals") or []
        mapping: dict[str, str | None] = {}
        zero = False
        if kind == "bool":
            variable["type"] = "presence"
            phrase = _TRUE_PHRASE.search(description)
            if phrase:
                words.append(phrase["phrase"].strip().casefold())
            description += " (Imported boolean: True = present, False = absent or not mentioned.)"
        elif literals:
            variable, mapping = self.literal_variable(variable, name, description, literals)
        else:
            zero = bool(_ZERO_DEFAULT.search(description) or _ZERO_DEFAULT.search(self.description))
            description = _ZERO_DEFAULT.sub("", description).strip()
            code, display = unit_for(description, self.description)
            variable["type"] = "number"
            variable["unit"] = {"code": code, "display": display}
        variable["definition"] = description
        words = [w for w in dict.fromkeys(words) if len(w) >= 3]
        if words:
            variable["synonyms"] = {"en": words}
        imported = ImportedField(name, variable_id, variable["type"], mapping, zero)
        return variable, imported

    def literal_variable(
        self, variable: dict[str, Any], name: str, description: str, literals: Sequence[Any]
    ) -> tuple[dict[str, Any], dict[str, str | None]]:
        labels = _literal_labels(description, self.description)
        lines = _definition_lines(self.description)
        mapping: dict[str, str | None] = {}
        kept: list[tuple[str, str]] = []
        for literal in literals:
            text = str(literal)
            label = labels.get(text, text)
            if label.casefold() in NOT_MENTIONED_WORDS or text.casefold() in NOT_MENTIONED_WORDS:
                mapping[text.casefold()] = None
                self.mark_used(lines, label)
                continue
            kept.append((text, label))
        if not kept:
            raise self.error(f"Parser_Format.{name}.literals", "no value besides 'not mentioned'")
        if all(_is_int_literal(text) for text, _ in kept):
            numbers = sorted({int(text) for text, _ in kept})
            if len(numbers) >= 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
                variable["type"] = "ordinal"
                variable["scale"] = {"min": numbers[0], "max": numbers[-1]}
                for text, _ in kept:
                    mapping[text.casefold()] = str(int(text))
                return variable, mapping
        options: list[dict[str, Any]] = []
        for text, label in kept:
            option_id = safe_id(label if label != text else text)
            if any(option["id"] == option_id for option in options):
                raise self.error(
                    f"Parser_Format.{name}.literals", f"two literals give {option_id!r}"
                )
            option: dict[str, Any] = {"id": option_id, "label": label}
            definition = lines.get(text.casefold()) or lines.get(label.casefold())
            if definition:
                option["definition"] = definition
                self.mark_used(lines, text)
                self.mark_used(lines, label)
            option["uncoded_reason"] = UNCODED_REASON
            synonyms = [w for w in dict.fromkeys([text, label]) if len(w) >= 3 and not w.isdigit()]
            if synonyms:
                option["synonyms"] = {"en": synonyms}
            options.append(option)
            mapping[text.casefold()] = option_id
        variable["type"] = "enum"
        variable["options"] = options
        return variable, mapping

    def mark_used(self, lines: Mapping[str, str], key: str) -> None:
        text = lines.get(key.casefold())
        if text is None:
            return
        for line in self.description.splitlines():
            stripped = line.strip()
            if stripped.endswith(text) and re.match(
                rf"^[•*-]?\s*{re.escape(key)}\s*:", stripped, re.IGNORECASE
            ):
                self.used_lines.add(stripped)

    def build(self, languages: Sequence[str]) -> tuple[dict[str, Any], tuple[ImportedField, ...]]:
        fields = self.parser_format()
        self.check_supported(fields)
        kept = {name: spec for name, spec in fields.items() if not self.is_reasoning(name, spec)}
        if not kept:
            raise self.error("Parser_Format", "no field besides reasoning")
        single = len(kept) == 1
        built = [self.variable(name, spec, single) for name, spec in kept.items()]
        context = self.context()
        variables = []
        for variable, _ in built:
            definition = _sentences(variable["definition"], context)
            if len(definition) < 10:
                definition = f"Imported llm_extractinator field {variable['label']}."
            variable["definition"] = definition
            variables.append(variable)
        first = re.split(r"(?<=\.)\s", self.description, maxsplit=1)[0].rstrip(".")
        title = self.task_name or first[:80] or _source_name(self.source)
        data = {
            "id": safe_id(_source_name(self.source), fallback="task"),
            "version": VERSION,
            "title": title,
            "origin": ORIGIN,
            "languages": list(languages),
            "variables": variables,
        }
        return data, tuple(imported for _, imported in built)


def _header(source: str) -> str:
    return (
        f"# Imported from the llm_extractinator task {Path(source).name} "
        "(DIAGNijmegen/llm_extractinator task format, Apache-2.0)\n"
        "# by `radbridge templates import`. Uncoded: add verified codes and synonyms per\n"
        "# language here (mappings/templates/README.md); `radbridge templates check` checks it.\n"
    )


def import_task(
    data: Mapping[str, Any], source: str, languages: Sequence[str] = DEFAULT_LANGUAGES
) -> ImportedTask:
    """A task dict -> the template, its YAML text and the field mapping (TemplateError if not).

    `source` names the task (its file name gives the template id) in errors.
    """
    if not isinstance(data, Mapping):
        raise TemplateError(source, "(root)", "a task file must be a JSON object")
    if not languages:
        raise TemplateError(source, "languages", "at least one language is needed")
    template_data, fields = _Builder(data, source).build(languages)
    text = _header(source) + yaml.safe_dump(
        template_data, sort_keys=False, allow_unicode=True, width=100
    )
    template = parse_template(text, source)
    return ImportedTask(template, text, fields)


def template_from_task(
    data: Mapping[str, Any], source: str, languages: Sequence[str] = DEFAULT_LANGUAGES
) -> Template:
    """An llm_extractinator task (its parsed JSON) as a validated radbridge Template."""
    return import_task(data, source, languages).template


def read_task(path: Path) -> dict[str, Any]:
    """A task file's JSON object (TemplateError when unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), "(file)", f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(str(path), f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise TemplateError(str(path), "(root)", "a task file must be a JSON object")
    return data


def load_task(path: Path, languages: Sequence[str] = DEFAULT_LANGUAGES) -> ImportedTask:
    """Import one task file."""
    return import_task(read_task(path), str(path), languages)
