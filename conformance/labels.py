"""Labels in the gold form: gold values checked against a template, extractions turned into labels.

The form is docs/architecture.md 'Contracts' (`{variable_id: value}`, `not_mentioned` …), read by the metric
core (`conformance.metrics`) through `variable_specs`. `predicted_labels` turns an `Extraction`
into the same form, with `_pairs` (lesion–location) and `_episodes` (diagnosis–episode).

Scoring choices (beyond `conformance.metrics`):
- locations are compared as single sites: `bilateral`, `both_lower_lobes` … are expanded with
  `Template.sites` on both sides; lesion–location pairs count only for variables that declare
  locations (a `[variable, null]` pair means present without a stated location);
- diagnosis–episode pairs: one per present finding of a variable with a qualifier, the
  episode or null when none is stated (as lesion–location pairs);
- a typed value (ordinal/number/enum) is scored by its value even when the evidence check made
  it `uncertain`: it is still emitted, as a preliminary value;
- sizes (`gold_sizes`, `predicted_sizes`): (variable, dimensions in mm in the order written,
  "16x11x13") pairs, one per gold instance with `size_mm` and per `FindingValue.sizes` item of
  a present or uncertain finding; a size is right when its finding and every dimension match;
- sides (`gold_sides`, `predicted_sides`): (variable, side) pairs, one per side a gold instance
  states and per `FindingValue.sides` item of a present or uncertain finding (each once per
  report: two right-sided stones are one pair);
- grades and severities (`gold_grades`, `predicted_grades`, `workers.grades`): (variable,
  "attribute=value") pairs, e.g. ("osteoarthritis", "kl_grade=3"), ("hydronephrosis",
  "severity=mild"), one per value a gold instance states and per `FindingValue.grades` item of a
  present or uncertain finding (each once per report); integer grades and severity words are
  scored apart (`severity=True`). A grade's recall is its accuracy where the gold has one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from conformance.metrics import (
    NOT_MENTIONED,
    PRESENCE_CLASSES,
    Kind,
    Label,
    Pair,
    VariableSpec,
)
from mappings.report import Extraction, FindingStatus
from mappings.template import Template, Variable, VariableType
from workers.grades import is_grade, is_severity

PAIRS_KEY = "_pairs"
EPISODES_KEY = "_episodes"
ATTRIBUTES_KEY = "_attributes"
"""Gold finding instances `[[variable_id, {attribute: value}], ...]` (issue 21 sets): checked
against the template's attributes on load; their `size_mm` is scored (`gold_sizes`)."""
SIZE_ATTRIBUTE = "size_mm"
SIDE_ATTRIBUTE = "side"


KINDS: dict[VariableType, Kind] = {
    VariableType.PRESENCE: "presence",
    VariableType.ORDINAL: "ordinal",
    VariableType.NUMBER: "number",
    VariableType.ENUM: "enum",
}


def _spec(variable: Variable) -> VariableSpec:
    kind = KINDS[variable.type]
    if variable.type is VariableType.ORDINAL and variable.scale is not None:
        return VariableSpec(
            variable.id, kind, tuple(range(variable.scale.min, variable.scale.max + 1))
        )
    if variable.type is VariableType.ENUM:
        return VariableSpec(variable.id, kind, tuple(option.id for option in variable.options))
    return VariableSpec(variable.id, kind)


def variable_specs(template: Template, tolerance: float = 0.0) -> tuple[VariableSpec, ...]:
    """The metric core's view of a template's variables."""
    specs = []
    for variable in template.variables:
        spec = _spec(variable)
        if spec.kind == "number":
            spec = VariableSpec(spec.id, spec.kind, spec.classes, tolerance)
        specs.append(spec)
    return tuple(specs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def gold_label(variable: Variable, value: object) -> Label:
    """A gold value checked against the variable (ValueError says what is wrong)."""
    if value == NOT_MENTIONED:
        return NOT_MENTIONED
    kind = variable.type
    if kind is VariableType.PRESENCE:
        if value not in PRESENCE_CLASSES:
            raise ValueError(
                f"{variable.id}: {value!r} is not one of {', '.join(PRESENCE_CLASSES)}"
            )
        return str(value)
    if kind is VariableType.ORDINAL:
        if not _is_int(value):
            raise ValueError(f"{variable.id}: ordinal gold must be an integer or 'not_mentioned'")
        assert isinstance(value, int)
        scale = variable.scale
        if scale is not None and not scale.min <= value <= scale.max:
            raise ValueError(
                f"{variable.id}: {value} is outside the scale {scale.min}..{scale.max}"
            )
        return value
    if kind is VariableType.NUMBER:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{variable.id}: number gold must be a number or 'not_mentioned'")
        return float(value)
    options = [option.id for option in variable.options]
    if value not in options:
        raise ValueError(f"{variable.id}: {value!r} is not an option ({', '.join(options)})")
    return str(value)


def predicted_label(variable: Variable, value_status: FindingStatus, value: object) -> Label:
    """One extracted value as a label in the gold form."""
    if value_status is FindingStatus.NOT_MENTIONED:
        return NOT_MENTIONED
    kind = variable.type
    if kind is VariableType.PRESENCE:
        return value_status.value
    if value is None or isinstance(value, bool):
        return NOT_MENTIONED
    if kind is VariableType.ORDINAL:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return NOT_MENTIONED
        return int(number) if number.is_integer() else number
    if kind is VariableType.NUMBER:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return NOT_MENTIONED
    return str(value)


def _sites(template: Template, location_id: str | None) -> list[str | None]:
    if location_id is None:
        return [None]
    try:
        return [site.id for site in template.sites(location_id)]
    except KeyError:
        return [location_id]


def _has_locations(template: Template, variable_id: str) -> bool:
    try:
        return bool(template.variable(variable_id).locations)
    except KeyError:
        return False


def normalise_pairs(template: Template, pairs: Iterable[Pair]) -> frozenset[Pair]:
    """Lesion–location pairs as single sites, for variables that declare locations."""
    return frozenset(
        (variable_id, site)
        for variable_id, location in pairs
        if _has_locations(template, variable_id)
        for site in _sites(template, location)
    )


def predicted_pairs(extraction: Extraction, template: Template) -> frozenset[Pair]:
    """(variable, location) for every present finding of a variable with locations."""
    pairs: list[Pair] = []
    for value in extraction.values:
        if value.status is not FindingStatus.PRESENT:
            continue
        if value.locations:
            pairs += [(value.variable_id, location) for location in value.locations]
        else:
            pairs.append((value.variable_id, None))
    return normalise_pairs(template, pairs)


def predicted_episodes(extraction: Extraction, template: Template) -> frozenset[Pair]:
    """(variable, qualifier option or None) for every present finding with a qualifier."""
    episodes: set[Pair] = set()
    for value in extraction.values:
        try:
            variable = template.variable(value.variable_id)
        except KeyError:
            continue
        if variable.qualifier is not None and value.status is FindingStatus.PRESENT:
            episodes.add((variable.id, value.value if isinstance(value.value, str) else None))
    return frozenset(episodes)


def size_pair(variable_id: str, dims_mm: Iterable[float]) -> Pair:
    """A size as a scored pair: (variable, "16x11x13"), millimetres to 0.01 in written order."""
    return (variable_id, "x".join(f"{round(float(d), 2):g}" for d in dims_mm))


def gold_sizes(instances: Iterable[tuple[str, dict[str, Any]]]) -> frozenset[Pair]:
    """The size pairs of gold `_attributes` instances that state `size_mm` (a list of positive
    numbers, else ValueError)."""
    pairs: set[Pair] = set()
    for variable_id, attributes in instances:
        dims = attributes.get(SIZE_ATTRIBUTE)
        if dims is None:
            continue
        if (
            not isinstance(dims, list)
            or not dims
            or not all(
                isinstance(d, int | float) and not isinstance(d, bool) and d > 0 for d in dims
            )
        ):
            raise ValueError(
                f"{ATTRIBUTES_KEY}: {variable_id} {SIZE_ATTRIBUTE} must list positive numbers"
            )
        pairs.add(size_pair(variable_id, dims))
    return frozenset(pairs)


def predicted_sizes(extraction: Extraction) -> frozenset[Pair]:
    """The size pairs of the present or uncertain findings of an extraction."""
    return frozenset(
        size_pair(value.variable_id, size.dims_mm)
        for value in extraction.values
        if value.status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
        for size in value.sizes
    )


def gold_sides(instances: Iterable[tuple[str, dict[str, Any]]]) -> frozenset[Pair]:
    """The (variable, side) pairs of gold `_attributes` instances that state `side` (a string,
    else ValueError)."""
    pairs: set[Pair] = set()
    for variable_id, attributes in instances:
        side = attributes.get(SIDE_ATTRIBUTE)
        if side is None:
            continue
        if not isinstance(side, str):
            raise ValueError(f"{ATTRIBUTES_KEY}: {variable_id} {SIDE_ATTRIBUTE} must be a string")
        pairs.add((variable_id, side))
    return frozenset(pairs)


def predicted_sides(extraction: Extraction) -> frozenset[Pair]:
    """The (variable, side) pairs of the present or uncertain findings of an extraction."""
    return frozenset(
        (value.variable_id, side)
        for value in extraction.values
        if value.status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
        for side in value.sides
    )


def grade_pair(variable_id: str, attribute: str, value: object) -> Pair:
    """The scored form of one grade: (variable, "attribute=value")."""
    return (variable_id, f"{attribute}={value}")


def _grade_ids(template: Template, severity: bool) -> set[str]:
    kind = is_severity if severity else is_grade
    return {a.id for a in template.attributes if kind(a)}


def gold_grades(
    instances: Iterable[tuple[str, dict[str, Any]]], template: Template, *, severity: bool = False
) -> frozenset[Pair]:
    """The grade pairs (severity pairs with `severity`) of gold `_attributes` instances."""
    ids = _grade_ids(template, severity)
    return frozenset(
        grade_pair(variable_id, key, value)
        for variable_id, attributes in instances
        for key, value in attributes.items()
        if key in ids
    )


def predicted_grades(
    extraction: Extraction, template: Template, *, severity: bool = False
) -> frozenset[Pair]:
    """The grade pairs (severity pairs with `severity`) of the present or uncertain findings."""
    ids = _grade_ids(template, severity)
    return frozenset(
        grade_pair(value.variable_id, grade.attribute, grade.value)
        for value in extraction.values
        if value.status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
        for grade in value.grades
        if grade.attribute in ids
    )


def takes_grades(template: Template, *, severity: bool = False) -> bool:
    """True when some variable of the template carries a grade (severity) attribute."""
    ids = _grade_ids(template, severity)
    return any(ids & set(variable.attributes) for variable in template.variables)


def takes_sides(template: Template) -> bool:
    """True when some variable of the template carries the `side` attribute."""
    return any(SIDE_ATTRIBUTE in variable.attributes for variable in template.variables)


def takes_sizes(template: Template) -> bool:
    """True when some variable of the template carries the `size_mm` attribute."""
    return any(SIZE_ATTRIBUTE in variable.attributes for variable in template.variables)


def predicted_labels(extraction: Extraction, template: Template) -> dict[str, Any]:
    """An Extraction in the gold form: variable labels plus `_pairs` and `_episodes`."""
    labels: dict[str, Any] = {}
    for variable in template.variables:
        value = extraction.value_of(variable.id)
        labels[variable.id] = (
            NOT_MENTIONED if value is None else predicted_label(variable, value.status, value.value)
        )
    labels[PAIRS_KEY] = predicted_pairs(extraction, template)
    labels[EPISODES_KEY] = predicted_episodes(extraction, template)
    return labels
