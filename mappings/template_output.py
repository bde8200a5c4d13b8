"""The LLM output contract of a template: pydantic answer models, the JSON schema, the prompt text.

One key per variable, each an object that starts with `evidence` (the verbatim quote, BEFORE the
verdict). Presence: then `status`, `locations` and, with a qualifier, a key named by the
qualifier id (an option id or null). Ordinal, number, enum: then `value` (an integer within the
scale, a number within the range, an option id) and `locations` only when the variable declares
locations. The two shapes are exclusive: a string quote with a verdict/value, or a null quote
with `not_mentioned`/null (so once the model writes null, the grammar forces the rest).
Every field is required and nullable instead of optional (optional fields make the grammar
branch combinatorially), strings carry `maxLength`, no additional properties.

`output_json_schema` constrains decoding, `output_model` validates what was decoded, and
`prompt_definitions` describes the variables to the model (the same text for every report).
The template itself (YAML, loading, checks) is `mappings.template`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from mappings.report import FindingStatus
from mappings.template import Option, Template, Variable, VariableType

EVIDENCE_MAX_CHARS = 160
MAX_LOCATIONS = 3


class VariableAnswer(BaseModel):
    """What the model answers for a presence variable (field order = decoding order).

    A presence variable with a qualifier gets a subclass with one more field named by the
    qualifier id (`output_model`).
    """

    model_config = ConfigDict(extra="forbid")

    evidence: str | None = Field(max_length=EVIDENCE_MAX_CHARS)
    status: FindingStatus
    locations: list[str] | None = Field(max_length=MAX_LOCATIONS)


class TypedAnswer(BaseModel):
    """What the model answers for an ordinal, number or enum variable.

    `output_model` narrows `value` per variable (scale, range, option ids); `locations` is only
    in the output when the variable declares locations.
    """

    model_config = ConfigDict(extra="forbid")

    evidence: str | None = Field(max_length=EVIDENCE_MAX_CHARS)
    value: int | float | str | None
    locations: list[str] | None = Field(default=None, max_length=MAX_LOCATIONS)


Answer = VariableAnswer | TypedAnswer

_OUTPUT_MODELS: dict[tuple[str, str, int], type[BaseModel]] = {}


def _class_name(identifier: str, suffix: str) -> str:
    return identifier.title().replace("_", "") + suffix


def _answer_model(variable: Variable) -> type[BaseModel]:
    name = _class_name(variable.id, "Answer")
    if variable.type is VariableType.PRESENCE:
        if variable.qualifier is None:
            return VariableAnswer
        option_ids = tuple(option.id for option in variable.qualifier.options)
        qualifier_field: Any = (Literal[option_ids] | None, ...)
        model: type[BaseModel] = create_model(
            name, __base__=VariableAnswer, **{variable.qualifier.id: qualifier_field}
        )
        return model
    value_type: Any
    if variable.type is VariableType.ORDINAL:
        assert variable.scale is not None
        value_type = Annotated[
            int, Field(strict=True, ge=variable.scale.min, le=variable.scale.max)
        ]
    elif variable.type is VariableType.NUMBER:
        bounds: dict[str, float] = {}
        if variable.range is not None:
            bounds = {"ge": variable.range.min, "le": variable.range.max}
        value_type = Annotated[float, Field(**bounds)]  # type: ignore[call-overload]
    else:
        value_type = Literal[tuple(option.id for option in variable.options)]
    fields: dict[str, Any] = {"value": (value_type | None, ...)}
    if variable.locations:
        fields["locations"] = (list[str] | None, Field(max_length=MAX_LOCATIONS))
    typed: type[BaseModel] = create_model(name, __base__=TypedAnswer, **fields)
    return typed


def output_model(template: Template) -> type[BaseModel]:
    """A pydantic model with one required answer field per variable (cached per template)."""
    key = (template.id, template.version, hash(template.model_dump_json()))
    if key in _OUTPUT_MODELS:
        return _OUTPUT_MODELS[key]
    fields: dict[str, Any] = {
        variable.id: (_answer_model(variable), ...) for variable in template.variables
    }
    model: type[BaseModel] = create_model(
        _class_name(template.id, "Output"),
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    _OUTPUT_MODELS[key] = model
    return model


def _locations_schema(variable: Variable) -> dict[str, Any]:
    if not variable.locations:
        return {"type": "null"}
    return {
        "anyOf": [
            {
                "type": "array",
                "items": {"enum": list(variable.locations)},
                "maxItems": MAX_LOCATIONS,
            },
            {"type": "null"},
        ]
    }


def value_schema(variable: Variable) -> dict[str, Any]:
    """The JSON schema of a stated typed value (integer in scale, bounded number, option id)."""
    if variable.type is VariableType.ORDINAL:
        assert variable.scale is not None
        return {"type": "integer", "minimum": variable.scale.min, "maximum": variable.scale.max}
    if variable.type is VariableType.NUMBER:
        schema: dict[str, Any] = {"type": "number"}
        if variable.range is not None:
            schema.update(minimum=variable.range.min, maximum=variable.range.max)
        return schema
    if variable.type is VariableType.ENUM:
        return {"enum": [option.id for option in variable.options]}
    raise ValueError(f"{variable.id} is a presence variable: it has no typed value")


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_QUOTE = {"type": "string", "minLength": 1, "maxLength": EVIDENCE_MAX_CHARS}
_NULL = {"type": "null"}


def _variable_schema(template: Template, variable: Variable) -> dict[str, Any]:
    if variable.type is not VariableType.PRESENCE:
        mentioned: dict[str, Any] = {"evidence": _QUOTE, "value": value_schema(variable)}
        silent: dict[str, Any] = {"evidence": _NULL, "value": _NULL}
        if variable.locations:
            mentioned["locations"] = _locations_schema(variable)
            silent["locations"] = _NULL
        # as for presence: a quote forces a value, a null quote forces null
        return {"anyOf": [_object(mentioned), _object(silent)]}
    mentioned = {
        "evidence": _QUOTE,
        "status": {
            "enum": [s.value for s in FindingStatus if s is not FindingStatus.NOT_MENTIONED]
        },
        "locations": _locations_schema(variable),
    }
    silent = {
        "evidence": _NULL,
        "status": {"const": FindingStatus.NOT_MENTIONED.value},
        "locations": _NULL,
    }
    if variable.qualifier is not None:
        options = [option.id for option in variable.qualifier.options]
        mentioned[variable.qualifier.id] = {"anyOf": [{"enum": options}, _NULL]}
        silent[variable.qualifier.id] = _NULL
    # A quote decides the branch: a null quote forces not_mentioned, a quote forces a verdict.
    return {"anyOf": [_object(mentioned), _object(silent)]}


def output_json_schema(template: Template) -> dict[str, Any]:
    """The JSON schema that constrains decoding."""
    return {
        "type": "object",
        "properties": {v.id: _variable_schema(template, v) for v in template.variables},
        "required": [v.id for v in template.variables],
        "additionalProperties": False,
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _option_text(option: Option, languages: tuple[str, ...]) -> str:
    words = [word for lang in languages for word in option.synonyms.get(lang, ())]
    words = list(dict.fromkeys(words))
    text = f"{option.id} = {option.label}"
    if option.definition:
        text += f": {option.definition.strip()}"
    return text + (f" ({', '.join(words)})" if words else "")


def value_description(variable: Variable, languages: tuple[str, ...]) -> str | None:
    """One line saying what the variable's value may be (None for plain presence)."""
    if variable.type is VariableType.ORDINAL and variable.scale is not None:
        return f"value: integer {variable.scale.min} to {variable.scale.max}"
    if variable.type is VariableType.NUMBER and variable.unit is not None:
        text = f"value: number in {variable.unit.display}"
        if variable.range is not None:
            text += f", {_number(variable.range.min)} to {_number(variable.range.max)}"
        return text
    if variable.type is VariableType.ENUM:
        options = "; ".join(_option_text(option, languages) for option in variable.options)
        return f"value: one of {options}"
    if variable.qualifier is not None:
        qualifier = variable.qualifier
        options = "; ".join(_option_text(option, languages) for option in qualifier.options)
        return f"{qualifier.id} ({qualifier.label}, when present): one of {options}, or null"
    return None


def prompt_definitions(template: Template) -> str:
    """The variables described for the prompt; identical text for every report (shared prefix)."""
    lines = [f"Template: {template.title} (id {template.id}, version {template.version})", ""]
    for variable in template.variables:
        synonyms = "; ".join(
            f"{lang}: {', '.join(variable.synonyms.get(lang, ()))}"
            for lang in template.languages
            if variable.synonyms.get(lang)
        )
        kind = "" if variable.type is VariableType.PRESENCE else f" [{variable.type.value}]"
        lines.append(f"- {variable.id}{kind}: {variable.label}. {variable.definition.strip()}")
        if synonyms:
            lines.append(f"  synonyms: {synonyms}")
        described = value_description(variable, template.languages)
        if described:
            lines.append(f"  {described}")
        if variable.locations:
            lines.append(f"  locations: {', '.join(variable.locations)}")
    return "\n".join(lines)
