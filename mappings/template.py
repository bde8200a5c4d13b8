"""Extraction templates: YAML -> validated `Template` -> pydantic output model + JSON schema.

The format is documented in `mappings/templates/README.md`. Loading checks structure (unknown
keys, types), meaning (unique ids, declared locations, synonyms for every declared language)
and codes (every code in `mappings.terminology`, none on the do-not-use list); each problem is
a `TemplateError` naming the file and the field.

The LLM output contract (`output_json_schema`): one key per variable, each an object with, in
this order, `evidence` (the verbatim quote, BEFORE the verdict), `status` and `locations`. The
two shapes are exclusive: a string quote with present/absent/uncertain, or a null quote with
`not_mentioned` (so once the model writes null, the grammar forces not_mentioned).
Every field is required and nullable instead of optional (optional fields make the grammar
branch combinatorially), strings carry `maxLength`, no additional properties.
"""

from __future__ import annotations

import functools
import importlib.resources
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mappings import terminology
from mappings.errors import TemplateError
from mappings.report import FindingStatus

EVIDENCE_MAX_CHARS = 160
MAX_LOCATIONS = 3


class CodeRef(BaseModel):
    """A clinical code used by a template; `source` says where it was verified."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(description="FHIR code system URI, e.g. http://snomed.info/sct")
    code: str
    display: str
    source: str = Field(min_length=1)


class VariableType(StrEnum):
    """The kinds of variable a template can declare."""

    PRESENCE = "presence"


class Location(BaseModel):
    """A body site a finding can be stated at; `expands_to` splits a multi-site location."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    code: CodeRef | None = None
    expands_to: tuple[str, ...] = ()
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Variable(BaseModel):
    """One thing to extract from a report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    type: VariableType
    definition: str = Field(min_length=10)
    code: CodeRef | None = None
    uncoded_reason: str | None = None
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    locations: tuple[str, ...] = ()


class AppliesTo(BaseModel):
    """Which reports a template is for (used by `mappings.routing`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    procedure_codes: tuple[CodeRef, ...] = ()
    keywords: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Template(BaseModel):
    """A validated extraction template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str
    title: str
    languages: tuple[str, ...] = Field(min_length=1)
    applies_to: AppliesTo = AppliesTo()
    variables: tuple[Variable, ...] = Field(min_length=1)
    locations: tuple[Location, ...] = ()

    def variable(self, variable_id: str) -> Variable:
        """The variable with this id (KeyError if none)."""
        for variable in self.variables:
            if variable.id == variable_id:
                return variable
        raise KeyError(variable_id)

    def location(self, location_id: str) -> Location:
        """The location with this id (KeyError if none)."""
        for location in self.locations:
            if location.id == location_id:
                return location
        raise KeyError(location_id)

    def sites(self, location_id: str) -> tuple[Location, ...]:
        """The single sites a location stands for (itself, or what it expands to)."""
        location = self.location(location_id)
        if not location.expands_to:
            return (location,)
        return tuple(site for child in location.expands_to for site in self.sites(child))


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(root)"


def _check_code(source: str, field: str, code: CodeRef | None) -> None:
    if code is None:
        return
    if (code.system, code.code) in terminology.DO_NOT_USE:
        raise TemplateError(source, field, f"{code.code} is on the do-not-use list")
    if not terminology.is_known(code.system, code.code):
        raise TemplateError(
            source, field, f"{code.system}|{code.code} is not in mappings/terminology.py"
        )


def _check_synonyms(
    source: str, field: str, synonyms: dict[str, tuple[str, ...]], languages: tuple[str, ...]
) -> None:
    for language in languages:
        if not synonyms.get(language):
            raise TemplateError(
                source, f"{field}.synonyms.{language}", "no synonyms for a declared language"
            )


def _check_meaning(template: Template, source: str) -> None:
    location_ids = [loc.id for loc in template.locations]
    for index, location in enumerate(template.locations):
        field = f"locations[{index}]"
        if location.id in location_ids[:index]:
            raise TemplateError(source, f"{field}.id", f"duplicate location id {location.id!r}")
        for child in location.expands_to:
            if child not in location_ids or child == location.id:
                raise TemplateError(source, f"{field}.expands_to", f"unknown location {child!r}")
        if location.code is None and not location.expands_to:
            raise TemplateError(source, f"{field}.code", "a single site needs a code")
        _check_code(source, f"{field}.code", location.code)
        _check_synonyms(source, field, location.synonyms, template.languages)
    variable_ids = [var.id for var in template.variables]
    for index, variable in enumerate(template.variables):
        field = f"variables[{index}]"
        if variable.id in variable_ids[:index]:
            raise TemplateError(source, f"{field}.id", f"duplicate variable id {variable.id!r}")
        for loc_index, location_id in enumerate(variable.locations):
            if location_id not in location_ids:
                raise TemplateError(
                    source,
                    f"{field}.locations[{loc_index}]",
                    f"undeclared location {location_id!r}",
                )
        if variable.code is None and not variable.uncoded_reason:
            raise TemplateError(
                source, f"{field}.uncoded_reason", "an uncoded variable must say why"
            )
        _check_code(source, f"{field}.code", variable.code)
        _check_synonyms(source, field, variable.synonyms, template.languages)
    for index, code in enumerate(template.applies_to.procedure_codes):
        _check_code(source, f"applies_to.procedure_codes[{index}]", code)


def parse_template(text: str, source: str) -> Template:
    """Validate template YAML text; `source` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(yaml)"
        raise TemplateError(
            source, where, f"invalid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(source, "(root)", "a template must be a mapping")
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TemplateError(source, _field_path(tuple(first["loc"])), first["msg"]) from None
    _check_meaning(template, source)
    return template


def load_template(path: Path) -> Template:
    """Load and validate one template file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), "(file)", f"cannot read: {exc}") from None
    return parse_template(text, str(path))


@functools.cache
def load_builtin_templates() -> dict[str, Template]:
    """The templates shipped in `mappings/templates/`, by id."""
    templates: dict[str, Template] = {}
    folder = importlib.resources.files("mappings") / "templates"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        template = parse_template(
            entry.read_text(encoding="utf-8"), f"mappings/templates/{entry.name}"
        )
        if template.id in templates:
            raise TemplateError(entry.name, "id", f"duplicate template id {template.id!r}")
        templates[template.id] = template
    return templates


def get_template(template_id: str) -> Template:
    """A built-in template by id (TemplateError if unknown)."""
    templates = load_builtin_templates()
    if template_id not in templates:
        known = ", ".join(sorted(templates))
        raise TemplateError(template_id, "id", f"unknown template (known: {known})")
    return templates[template_id]


class VariableAnswer(BaseModel):
    """What the model answers for one variable (field order = decoding order)."""

    model_config = ConfigDict(extra="forbid")

    evidence: str | None = Field(max_length=EVIDENCE_MAX_CHARS)
    status: FindingStatus
    locations: list[str] | None = Field(max_length=MAX_LOCATIONS)


_OUTPUT_MODELS: dict[tuple[str, str], type[BaseModel]] = {}


def output_model(template: Template) -> type[BaseModel]:
    """A pydantic model with one required `VariableAnswer` field per variable (cached per id+version)."""
    key = (template.id, template.version)
    if key in _OUTPUT_MODELS:
        return _OUTPUT_MODELS[key]
    fields: dict[str, Any] = {variable.id: (VariableAnswer, ...) for variable in template.variables}
    model: type[BaseModel] = create_model(
        f"{template.id.title().replace('_', '')}Output",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    _OUTPUT_MODELS[key] = model
    return model


def _variable_schema(template: Template, variable: Variable) -> dict[str, Any]:
    locations: dict[str, Any]
    if variable.locations:
        locations = {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"enum": list(variable.locations)},
                    "maxItems": MAX_LOCATIONS,
                },
                {"type": "null"},
            ]
        }
    else:
        locations = {"type": "null"}
    mentioned = {
        "type": "object",
        "properties": {
            "evidence": {"type": "string", "minLength": 1, "maxLength": EVIDENCE_MAX_CHARS},
            "status": {
                "enum": [s.value for s in FindingStatus if s is not FindingStatus.NOT_MENTIONED]
            },
            "locations": locations,
        },
        "required": ["evidence", "status", "locations"],
        "additionalProperties": False,
    }
    not_mentioned = {
        "type": "object",
        "properties": {
            "evidence": {"type": "null"},
            "status": {"const": FindingStatus.NOT_MENTIONED.value},
            "locations": {"type": "null"},
        },
        "required": ["evidence", "status", "locations"],
        "additionalProperties": False,
    }
    # A quote decides the branch: a null quote forces not_mentioned, a quote forces a verdict.
    return {"anyOf": [mentioned, not_mentioned]}


def output_json_schema(template: Template) -> dict[str, Any]:
    """The JSON schema that constrains decoding."""
    return {
        "type": "object",
        "properties": {v.id: _variable_schema(template, v) for v in template.variables},
        "required": [v.id for v in template.variables],
        "additionalProperties": False,
    }


def prompt_definitions(template: Template) -> str:
    """The variables described for the prompt; identical text for every report (shared prefix)."""
    lines = [f"Template: {template.title} (id {template.id}, version {template.version})", ""]
    for variable in template.variables:
        synonyms = "; ".join(
            f"{lang}: {', '.join(variable.synonyms.get(lang, ()))}" for lang in template.languages
        )
        lines.append(f"- {variable.id}: {variable.label}. {variable.definition.strip()}")
        lines.append(f"  synonyms: {synonyms}")
        if variable.locations:
            lines.append(f"  locations: {', '.join(variable.locations)}")
    return "\n".join(lines)
