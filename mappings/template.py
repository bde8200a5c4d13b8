"""Extraction templates: YAML -> validated `Template` (loading and checks).

The format is documented in `mappings/templates/README.md`. Variables are `presence` (with
optional `locations`, one `qualifier` and finding `attributes` declared once per template), `ordinal` (integer `scale`), `number` (UCUM `unit`,
optional `range`) or `enum` (`options`). Loading checks structure (unknown keys, types),
meaning (unique ids, declared locations, fields consistent with the type, regex `patterns` with
a `value` group, synonyms for every declared language, also for options, UCUM units, DICOM
modality codes) and codes (`mappings.terminology_tables`: in the installed SNOMED CT / LOINC
table with its display, or cited in the YAML; none on the do-not-use list; an uncoded concept
says why). Every problem of a file is collected and raised at once (`TemplateProblems`), each
naming the file and the field by key name (`variables.pleural_effusion.code`). A template
imported from an
llm_extractinator task (`origin: llm_extractinator`, see `mappings.extractinator`) needs no
synonyms: its words are the task file's (English) labels.

What the model answers for a template (output model, JSON schema, prompt definitions) is
`mappings.template_output`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mappings.dicom import modality_problem
from mappings.errors import TemplateError, TemplateProblems
from mappings.headings import HEADINGS
from mappings.terminology_tables import code_problems
from mappings.ucum import ucum_problem


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
    ORDINAL = "ordinal"
    NUMBER = "number"
    ENUM = "enum"


class Scale(BaseModel):
    """The integer range of an ordinal variable (both ends included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int
    max: int


class Range(BaseModel):
    """The plausible range of a number variable (both ends included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float
    max: float


class Unit(BaseModel):
    """The UCUM unit of a number variable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1, pattern=r"^\S+$", description="UCUM code, e.g. % or mL")
    display: str = Field(min_length=1)


class Option(BaseModel):
    """One value of an enum variable or of a qualifier; coded, or text-only with a reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    definition: str | None = None
    code: CodeRef | None = None
    uncoded_reason: str | None = None
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Qualifier(BaseModel):
    """One attribute of a present finding (e.g. the episode of a tumour)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    code: CodeRef | None = None
    uncoded_reason: str | None = None
    options: tuple[Option, ...] = Field(min_length=1)

    def option(self, option_id: str) -> Option:
        """The option with this id (KeyError if none)."""
        for option in self.options:
            if option.id == option_id:
                return option
        raise KeyError(option_id)


class Location(BaseModel):
    """A body site a finding can be stated at; `expands_to` splits a multi-site location."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    code: CodeRef | None = None
    uncoded_reason: str | None = None
    """Why a single site has no code (it is then emitted as `bodySite.text` only)."""
    expands_to: tuple[str, ...] = ()
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    part_of: str | None = None
    """The larger location this one lies in (a lobe in its lung): a finding stated at both gets
    the smaller one, and a finding with only the larger among its locations gets that."""
    modifiers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Words that name this location only right before a finding ("right" in "small right
    effusion"), never on their own elsewhere in the clause."""


class AttributeType(StrEnum):
    """The kinds of finding attribute (`Attribute`)."""

    ENUM = "enum"
    NUMBER = "number"
    NUMBER_LIST = "number_list"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    OPTION = "option"


class Attribute(BaseModel):
    """One attribute of a finding instance (its side, size in mm, grade, a category), declared
    once per template and named by the presence variables that carry it (`attributes`).

    `enum`: one of `options`; `number` / `number_list`: a value or the stated dimensions in the
    UCUM `unit`, within `range`; `integer`: within `scale`; `boolean`: true/false; `option`: an
    option id of the enum variable `of` (the per-side BI-RADS category). A finding's site is not
    an attribute: it is the variable's `locations`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    type: AttributeType
    definition: str = Field(min_length=10)
    code: CodeRef | None = None
    uncoded_reason: str | None = None
    options: tuple[Option, ...] = ()
    unit: Unit | None = None
    range: Range | None = None
    scale: Scale | None = None
    of: str | None = None

    def option(self, option_id: str) -> Option:
        """The enum option with this id (KeyError if none)."""
        for option in self.options:
            if option.id == option_id:
                return option
        raise KeyError(option_id)


class NormalStatement(BaseModel):
    """A normal statement ("No acute intracranial abnormality", "Geen afwijkingen",
    "Unauffälliger Befund") and the presence variables it makes absent, with the statement as
    evidence (a finding stated present elsewhere in the report still wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    covers: tuple[str, ...] | Literal["all"] = Field(
        description="the presence variables it makes absent, or `all`"
    )
    phrases: dict[str, tuple[str, ...]] = Field(min_length=1)
    """The statement's words, whole (negation included): "no acute intracranial abnormality"."""


class OrganQualifiers(BaseModel):
    """Words that put a finding in another organ ("thyroid nodule", "mass in the chest wall"): a
    mention of one of `variables` qualified by an `other` word and by no `own` word does not
    count (`workers.organs`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variables: tuple[str, ...] = Field(min_length=1)
    other: dict[str, tuple[str, ...]] = Field(min_length=1)
    own: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class StatePhrases(BaseModel):
    """A finding stated as a subject and its state ("heart size is mildly enlarged" -> present,
    "heart size normal" -> absent): a subject and a state word in one clause, close together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subjects: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    abnormal: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    normal: dict[str, tuple[str, ...]] = Field(default_factory=dict)


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
    includes: tuple[str, ...] = ()
    """A general finding: the more specific presence variables it includes (chest_findings'
    lung opacity includes ground-glass opacity). Where one of them is emitted for the same
    statement and site, this one gives no Observation there (`mappings.fhir_out`)."""
    scale: Scale | None = None
    unit: Unit | None = None
    range: Range | None = None
    options: tuple[Option, ...] = ()
    qualifier: Qualifier | None = None
    patterns: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    section: str | None = None
    excludes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Longer phrases that contain a synonym but name something else ("pericardial effusion"
    for pleural effusion): a mention inside one of them does not count."""
    states: StatePhrases | None = None
    attributes: tuple[str, ...] = ()
    """The template's finding attributes a present finding of this variable may carry."""
    aggregate: Literal["first", "highest"] = "first"
    """A value stated several times: the first statement's (default) or the highest stated ("the
    highest TI-RADS level of any nodule", "the largest diameter"; for an enum the option listed
    last, so options in ascending order: BI-RADS by the ACR hierarchy)."""

    def option(self, option_id: str) -> Option:
        """The enum option with this id (KeyError if none)."""
        for option in self.options:
            if option.id == option_id:
                return option
        raise KeyError(option_id)

    def terms(self) -> tuple[str, ...]:
        """Every word that names this variable: label and synonyms (all languages), and for an
        enum its options' labels and synonyms."""
        words = [self.label, *(w for words in self.synonyms.values() for w in words)]
        for option in self.options:
            words.extend([option.label, *(w for ws in option.synonyms.values() for w in ws)])
        return tuple(dict.fromkeys(word for word in words if word.strip()))


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
    attributes: tuple[Attribute, ...] = ()
    """Finding attributes (side, size, grade ...) shared by the variables that name them."""
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    probable_existence: Literal["present", "uncertain"] = "uncertain"
    """What a strongly hedged finding ("probable", "likely", "suggestive of") is: `uncertain`
    (the default), or `present` where the template's labelling convention says so."""
    normal_statements: tuple[NormalStatement, ...] = ()
    """Normal statements and the findings each makes absent (`workers.normals`)."""
    organ_qualifiers: OrganQualifiers | None = None
    """Findings of another organ that must never become findings of this template's organ."""
    origin: Literal["llm_extractinator"] | None = Field(
        default=None, description="set on templates imported by mappings.extractinator"
    )

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

    def attribute(self, attribute_id: str) -> Attribute:
        """The attribute with this id (KeyError if none)."""
        for attribute in self.attributes:
            if attribute.id == attribute_id:
                return attribute
        raise KeyError(attribute_id)

    def covered(self, statement: NormalStatement) -> tuple[str, ...]:
        """The presence variables a normal statement makes absent."""
        if statement.covers == "all":
            return tuple(v.id for v in self.variables if v.type is VariableType.PRESENCE)
        return statement.covers

    def sites(self, location_id: str) -> tuple[Location, ...]:
        """The single sites a location stands for (itself, or what it expands to)."""
        location = self.location(location_id)
        if not location.expands_to:
            return (location,)
        return tuple(site for child in location.expands_to for site in self.sites(child))


class _Problems:
    """Every problem of one template file, collected (never only the first)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[TemplateError] = []

    def add(self, field: str, problem: str) -> None:
        self.items.append(TemplateError(self.source, field, problem))

    def raise_any(self) -> None:
        if self.items:
            raise TemplateProblems(self.items)


def _field_path(loc: tuple[int | str, ...], data: object) -> str:
    """A pydantic error location as key names: a list item by its `id` where it has one
    (`variables.pleural_effusion.unit.code`), else by index (`variables[3]`)."""
    path, node = "", data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            path += f".{ident}" if isinstance(ident, str) and ident else f"[{part}]"
            node = item
        else:
            path += f".{part}" if path else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return path or "(root)"


def _check_code(problems: _Problems, field: str, code: CodeRef | None) -> None:
    if code is None:
        return
    for problem in code_problems(code.system, code.code, code.display, code.source):
        problems.add(field, problem)


def _check_synonyms(
    problems: _Problems,
    field: str,
    synonyms: dict[str, tuple[str, ...]],
    languages: tuple[str, ...],
) -> None:
    for language in languages:
        if not synonyms.get(language):
            problems.add(f"{field}.synonyms.{language}", "no synonyms for a declared language")


RESERVED_ANSWER_KEYS = frozenset({"evidence", "status", "locations", "value"})
_TYPE_FIELDS: dict[VariableType, frozenset[str]] = {
    VariableType.PRESENCE: frozenset({"qualifier"}),
    VariableType.ORDINAL: frozenset({"scale", "patterns"}),
    VariableType.NUMBER: frozenset({"unit", "range", "patterns"}),
    VariableType.ENUM: frozenset({"options"}),
}
_TYPED_FIELDS = frozenset().union(*_TYPE_FIELDS.values())
_REQUIRED_FIELDS: dict[VariableType, tuple[str, ...]] = {
    VariableType.PRESENCE: (),
    VariableType.ORDINAL: ("scale",),
    VariableType.NUMBER: ("unit",),
    VariableType.ENUM: ("options",),
}


def _is_set(variable: Variable, name: str) -> bool:
    value = getattr(variable, name)
    return bool(value) if isinstance(value, (tuple, dict)) else value is not None


def _check_coded(
    problems: _Problems, field: str, code: CodeRef | None, uncoded_reason: str | None, what: str
) -> None:
    if code is None and not (uncoded_reason and uncoded_reason.strip()):
        problems.add(f"{field}.uncoded_reason", f"an uncoded {what} must say why")
    _check_code(problems, f"{field}.code", code)


def _check_options(
    problems: _Problems, field: str, options: tuple[Option, ...], languages: tuple[str, ...]
) -> None:
    if not options:
        problems.add(field, "at least one option is needed")
    seen: set[str] = set()
    for option in options:
        where = f"{field}.{option.id}"
        if option.id in seen:
            problems.add(f"{where}.id", f"duplicate option id {option.id!r}")
        if option.id == "not_mentioned":
            problems.add(f"{where}.id", "'not_mentioned' is reserved")
        seen.add(option.id)
        _check_coded(problems, where, option.code, option.uncoded_reason, "option")
        _check_synonyms(problems, where, option.synonyms, languages)


def _check_patterns(
    problems: _Problems,
    field: str,
    patterns: dict[str, tuple[str, ...]],
    languages: tuple[str, ...],
) -> None:
    for language, regexes in patterns.items():
        if language not in languages:
            problems.add(f"{field}.{language}", "patterns for an undeclared language")
        for index, regex in enumerate(regexes):
            where = f"{field}.{language}[{index}]"
            try:
                compiled = re.compile(regex, re.IGNORECASE)
            except re.error as exc:
                problems.add(where, f"invalid regular expression: {exc}")
                continue
            if "value" not in compiled.groupindex:
                problems.add(where, "a pattern needs a named group (?P<value>...)")


def _synonym_languages(template: Template) -> tuple[str, ...]:
    """The languages that need synonyms: none for a template imported from an llm_extractinator
    task (`origin`), whose only words are the task file's English ones (the label is a term)."""
    return () if template.origin is not None else template.languages


def _check_variable_type(
    problems: _Problems, template: Template, variable: Variable, field: str
) -> None:
    kind = variable.type
    for name in sorted(_TYPED_FIELDS - _TYPE_FIELDS[kind]):
        if _is_set(variable, name):
            problems.add(f"{field}.{name}", f"not allowed for type {kind}")
    for name in _REQUIRED_FIELDS[kind]:
        if not _is_set(variable, name):
            problems.add(f"{field}.{name}", f"type {kind} needs {name}")
    if variable.scale is not None and variable.scale.min >= variable.scale.max:
        problems.add(f"{field}.scale", "min must be below max")
    if variable.range is not None and not variable.range.min < variable.range.max:
        problems.add(f"{field}.range", "min must be below max")
    if variable.unit is not None and (unit_problem := ucum_problem(variable.unit.code)):
        problems.add(f"{field}.unit.code", unit_problem)
    if kind is VariableType.ENUM and variable.options:
        _check_options(problems, f"{field}.options", variable.options, _synonym_languages(template))
    if variable.qualifier is not None:
        qualifier = variable.qualifier
        where = f"{field}.qualifier"
        if qualifier.id in RESERVED_ANSWER_KEYS or qualifier.id.startswith("model_"):
            problems.add(f"{where}.id", f"{qualifier.id!r} is a reserved key")
        _check_coded(problems, where, qualifier.code, qualifier.uncoded_reason, "qualifier")
        _check_options(
            problems, f"{where}.options", qualifier.options, _synonym_languages(template)
        )
    _check_patterns(problems, f"{field}.patterns", variable.patterns, template.languages)
    if variable.aggregate != "first" and kind is VariableType.PRESENCE:
        problems.add(f"{field}.aggregate", f"not allowed for type {kind}")
    if variable.section is not None and variable.section not in HEADINGS:
        known = ", ".join(sorted(HEADINGS))
        problems.add(f"{field}.section", f"unknown section {variable.section!r} (known: {known})")


def _check_locations(problems: _Problems, template: Template) -> None:
    location_ids = [loc.id for loc in template.locations]
    for index, location in enumerate(template.locations):
        field = f"locations.{location.id}"
        if location.id in location_ids[:index]:
            problems.add(f"{field}.id", f"duplicate location id {location.id!r}")
        for child in location.expands_to:
            if child not in location_ids or child == location.id:
                problems.add(f"{field}.expands_to", f"unknown location {child!r}")
        if location.code is None and not location.expands_to and not location.uncoded_reason:
            problems.add(
                f"{field}.code", "a single site needs a code, or an uncoded_reason saying why"
            )
        if location.part_of is not None and (
            location.part_of not in location_ids or location.part_of == location.id
        ):
            problems.add(f"{field}.part_of", f"unknown location {location.part_of!r}")
        _check_code(problems, f"{field}.code", location.code)
        _check_synonyms(problems, field, location.synonyms, _synonym_languages(template))


def _check_includes(
    problems: _Problems, template: Template, variable: Variable, field: str
) -> None:
    """`includes` names other presence variables, and only a presence variable has it."""
    if variable.includes and variable.type is not VariableType.PRESENCE:
        problems.add(f"{field}.includes", f"not allowed for type {variable.type}")
    presence = {v.id for v in template.variables if v.type is VariableType.PRESENCE}
    for included in variable.includes:
        if included == variable.id or included not in presence:
            problems.add(f"{field}.includes", f"not another presence variable: {included!r}")


_ATTRIBUTE_FIELDS: dict[AttributeType, frozenset[str]] = {
    AttributeType.ENUM: frozenset({"options"}),
    AttributeType.NUMBER: frozenset({"unit", "range"}),
    AttributeType.NUMBER_LIST: frozenset({"unit", "range"}),
    AttributeType.INTEGER: frozenset({"scale"}),
    AttributeType.BOOLEAN: frozenset(),
    AttributeType.OPTION: frozenset({"of"}),
}
_ATTRIBUTE_REQUIRED: dict[AttributeType, tuple[str, ...]] = {
    AttributeType.ENUM: ("options",),
    AttributeType.NUMBER: ("unit",),
    AttributeType.NUMBER_LIST: ("unit",),
    AttributeType.INTEGER: ("scale",),
    AttributeType.BOOLEAN: (),
    AttributeType.OPTION: ("of",),
}


def _check_attribute(problems: _Problems, template: Template, attribute: Attribute) -> None:
    field = f"attributes.{attribute.id}"
    if attribute.id in RESERVED_ANSWER_KEYS or attribute.id.startswith("model_"):
        problems.add(f"{field}.id", f"{attribute.id!r} is a reserved key")
    _check_coded(problems, field, attribute.code, attribute.uncoded_reason, "attribute")
    allowed = _ATTRIBUTE_FIELDS[attribute.type]
    for name in ("options", "unit", "range", "scale", "of"):
        value = getattr(attribute, name)
        is_set = bool(value) if isinstance(value, tuple) else value is not None
        if is_set and name not in allowed:
            problems.add(f"{field}.{name}", f"not allowed for type {attribute.type}")
        if not is_set and name in _ATTRIBUTE_REQUIRED[attribute.type]:
            problems.add(f"{field}.{name}", f"type {attribute.type} needs {name}")
    if attribute.options:
        # attribute options are read by the model stage; synonyms are optional
        _check_options(problems, f"{field}.options", attribute.options, ())
    if attribute.unit is not None and (unit_problem := ucum_problem(attribute.unit.code)):
        problems.add(f"{field}.unit.code", unit_problem)
    for bounds, name in ((attribute.range, "range"), (attribute.scale, "scale")):
        if bounds is not None and not bounds.min < bounds.max:
            problems.add(f"{field}.{name}", "min must be below max")
    if attribute.of is not None:
        try:
            target = template.variable(attribute.of)
        except KeyError:
            problems.add(f"{field}.of", f"undeclared variable {attribute.of!r}")
        else:
            if target.type is not VariableType.ENUM:
                problems.add(f"{field}.of", f"{attribute.of!r} is not an enum variable")


def _check_attributes(problems: _Problems, template: Template) -> None:
    ids = [attribute.id for attribute in template.attributes]
    for index, attribute in enumerate(template.attributes):
        if attribute.id in ids[:index]:
            problems.add(
                f"attributes.{attribute.id}.id", f"duplicate attribute id {attribute.id!r}"
            )
        _check_attribute(problems, template, attribute)
    for variable in template.variables:
        field = f"variables.{variable.id}.attributes"
        if variable.attributes and variable.type not in (VariableType.PRESENCE, VariableType.ENUM):
            problems.add(field, f"not allowed for type {variable.type}")
        for attribute_id in variable.attributes:
            if attribute_id not in ids:
                problems.add(field, f"undeclared attribute {attribute_id!r}")
        if variable.qualifier is not None and variable.qualifier.id in variable.attributes:
            problems.add(field, f"{variable.qualifier.id!r} is also the qualifier's id")


def _check_normal_statements(problems: _Problems, template: Template) -> None:
    ids = [statement.id for statement in template.normal_statements]
    presence = {v.id for v in template.variables if v.type is VariableType.PRESENCE}
    for index, statement in enumerate(template.normal_statements):
        field = f"normal_statements.{statement.id}"
        if statement.id in ids[:index]:
            problems.add(f"{field}.id", f"duplicate normal statement id {statement.id!r}")
        if statement.covers != "all":
            for variable_id in statement.covers:
                if variable_id not in presence:
                    problems.add(f"{field}.covers", f"{variable_id!r} is no presence variable")
        for language in statement.phrases:
            if language not in template.languages:
                problems.add(f"{field}.phrases.{language}", "phrases for an undeclared language")
        for language in template.languages:
            if not statement.phrases.get(language):
                problems.add(f"{field}.phrases.{language}", "no phrases for a declared language")


def _check_meaning(template: Template, problems: _Problems) -> None:
    _check_locations(problems, template)
    _check_attributes(problems, template)
    _check_normal_statements(problems, template)
    location_ids = {loc.id for loc in template.locations}
    variable_ids = [var.id for var in template.variables]
    for index, variable in enumerate(template.variables):
        field = f"variables.{variable.id}"
        if variable.id in variable_ids[:index]:
            problems.add(f"{field}.id", f"duplicate variable id {variable.id!r}")
        for location_id in variable.locations:
            if location_id not in location_ids:
                problems.add(f"{field}.locations", f"undeclared location {location_id!r}")
        _check_includes(problems, template, variable, field)
        if variable.code is None and not variable.uncoded_reason:
            problems.add(f"{field}.uncoded_reason", "an uncoded variable must say why")
        _check_code(problems, f"{field}.code", variable.code)
        _check_variable_type(problems, template, variable, field)
        if variable.type is not VariableType.ENUM or variable.synonyms:
            # an enum is found by its options' synonyms; its own are optional
            _check_synonyms(problems, field, variable.synonyms, _synonym_languages(template))
    organs = template.organ_qualifiers
    for variable_id in organs.variables if organs else ():
        if variable_id not in variable_ids:
            problems.add("organ_qualifiers.variables", f"undeclared variable {variable_id!r}")
    for index, code in enumerate(template.applies_to.procedure_codes):
        _check_code(problems, f"applies_to.procedure_codes[{index}]", code)
    for modality in template.applies_to.modalities:
        if (problem := modality_problem(modality)) is not None:
            problems.add("applies_to.modalities", problem)


def template_codes(template: Template) -> list[tuple[str, CodeRef]]:
    """Every code a template uses, with its field path (key names)."""
    found: list[tuple[str, CodeRef | None]] = [
        (f"applies_to.procedure_codes[{i}]", code)
        for i, code in enumerate(template.applies_to.procedure_codes)
    ]
    found += [(f"locations.{loc.id}.code", loc.code) for loc in template.locations]
    for variable in template.variables:
        field = f"variables.{variable.id}"
        found.append((f"{field}.code", variable.code))
        found += [(f"{field}.options.{o.id}.code", o.code) for o in variable.options]
        if variable.qualifier is not None:
            found.append((f"{field}.qualifier.code", variable.qualifier.code))
            found += [
                (f"{field}.qualifier.options.{o.id}.code", o.code)
                for o in variable.qualifier.options
            ]
    for attribute in template.attributes:
        found.append((f"attributes.{attribute.id}.code", attribute.code))
        found += [
            (f"attributes.{attribute.id}.options.{o.id}.code", o.code) for o in attribute.options
        ]
    return [(field, code) for field, code in found if code is not None]


def check_template_set(items: list[tuple[str, Template]]) -> list[TemplateError]:
    """Checks across loaded templates (each already valid on its own): template ids unique.
    Returns the problems found."""
    problems: list[TemplateError] = []
    seen: dict[str, str] = {}
    for source, template in items:
        if template.id in seen:
            problems.append(
                TemplateError(
                    source,
                    "id",
                    f"duplicate template id {template.id!r} (also {seen[template.id]})",
                )
            )
        seen.setdefault(template.id, source)
    return problems


def parse_template(text: str, source: str) -> Template:
    """Validate template YAML text; `source` names it in errors. TemplateProblems lists every
    problem found (by key name), not only the first."""
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
    problems = _Problems(source)
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problems.add(_field_path(tuple(error["loc"]), data), error["msg"])
        problems.raise_any()
        raise  # unreachable: a ValidationError has at least one error
    _check_meaning(template, problems)
    problems.raise_any()
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


def template_files(folder: Path) -> list[Path]:
    """The template files of a folder (`*.yaml`, `*.yml`), sorted."""
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def builtin_id_clashes(items: list[tuple[str, Template]]) -> list[TemplateError]:
    """A problem for each template of the user's files that takes a built-in template's id (the
    built-in files themselves excepted): a template is added, never silently replaced."""
    builtin = load_builtin_templates()
    folder = Path(str(importlib.resources.files("mappings") / "templates")).resolve()
    return [
        TemplateError(source, "id", f"template id {template.id!r} is a built-in template's id")
        for source, template in items
        if template.id in builtin and Path(source).resolve().parent != folder
    ]


def check_template_files(
    paths: list[Path],
) -> tuple[list[tuple[str, Template]], list[TemplateError]]:
    """Load template files: (source, template) for each good one, and every problem of every
    file, across files too (an id used twice, a user's file taking a built-in's id)."""
    loaded: list[tuple[str, Template]] = []
    problems: list[TemplateError] = []
    for path in paths:
        try:
            loaded.append((str(path), load_template(path)))
        except TemplateProblems as exc:
            problems.extend(exc.problems)
        except TemplateError as exc:
            problems.append(exc)
    return loaded, problems + builtin_id_clashes(loaded) + check_template_set(loaded)


@functools.cache
def _folder_templates(folder: Path) -> tuple[tuple[str, Template], ...]:
    if not folder.is_dir():
        raise TemplateError(str(folder), "RADBRIDGE_TEMPLATES_DIR", "no such folder")
    loaded, problems = check_template_files(template_files(folder))
    if problems:
        raise TemplateProblems(problems)
    return tuple(loaded)


def load_templates(folder: Path | None = None) -> dict[str, Template]:
    """The built-in templates plus those of `folder` (RADBRIDGE_TEMPLATES_DIR), by id.
    TemplateProblems lists every problem of the folder at once; an id that is a built-in's or
    another file's is refused (never silently replaced)."""
    templates = dict(load_builtin_templates())
    if folder is not None:
        templates.update(
            (template.id, template) for _, template in _folder_templates(folder.resolve())
        )
    return templates


def get_template(template_id: str, folder: Path | None = None) -> Template:
    """A template by id, built-in or from `folder` (TemplateError if unknown)."""
    templates = load_templates(folder)
    if template_id not in templates:
        known = ", ".join(sorted(templates))
        raise TemplateError(template_id, "id", f"unknown template (known: {known})")
    return templates[template_id]
