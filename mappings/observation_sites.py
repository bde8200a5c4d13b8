"""Which Observations a Bundle emits for an extraction: one per finding and stated site.

- A value gives one Observation per single site it is stated at (`mappings.stated_sites`: a
  side that contains a stated lobe is dropped), or one without `bodySite`; an absent finding
  has no site; `not_mentioned` and a typed value without a value give none.
- A general finding (`Variable.includes`: chest_findings' lung opacity includes ground-glass
  opacity and infiltrate) gives no Observation where an included finding with the same status
  is emitted for the same statement (overlapping evidence) at the same site or a site within it:
  "ground-glass opacity in both lower lobes" is one finding, not also a lung opacity. Its
  Observations at other sites, or for another statement, stay.
- A finding's stated sides (`FindingValue.sides`) are its sites' laterality (`observation_places`):
  a site that carries its own side (right lung) gets none; bilateral is right and left, one
  Observation each, as the bilateral location gives one per lung; no site and a side: one
  Observation per side without a site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mappings.report import FindingStatus, FindingValue
from mappings.stated_sites import containers, single_sites
from mappings.template import Location, Option, Template, Variable, VariableType


def emitted(value: FindingValue, variable: Variable) -> bool:
    """Whether a value becomes an Observation (typed values need a value)."""
    if value.status is FindingStatus.NOT_MENTIONED:
        return False
    return variable.type is VariableType.PRESENCE or value.value is not None


def value_sites(value: FindingValue, template: Template) -> list[Location | None]:
    """The sites of one value's Observations (None: one Observation without `bodySite`)."""
    if value.status is FindingStatus.ABSENT or not value.locations:
        return [None]
    return list(single_sites(template, value.locations)) or [None]


def _same_statement(general: FindingValue, specific: FindingValue) -> bool:
    first, second = general.evidence, specific.evidence
    if first is None or second is None:
        return False
    if first.start is None or first.end is None or second.start is None or second.end is None:
        return first.quote == second.quote
    return first.start < second.end and second.start < first.end


def _covered(template: Template, site: Location | None, specific: list[Location | None]) -> bool:
    """Whether the specific finding's sites state this site (it, or a site within it)."""
    if site is None:
        return True
    return any(
        other is not None and (other.id == site.id or site.id in containers(template, other.id))
        for other in specific
    )


def observation_sites(
    template: Template, values: Sequence[FindingValue]
) -> dict[str, list[Location | None]]:
    """Variable id -> the sites of its Observations, for every value that gives any."""
    shown = {v.variable_id: v for v in values if emitted(v, template.variable(v.variable_id))}
    sites = {variable_id: value_sites(v, template) for variable_id, v in shown.items()}
    result: dict[str, list[Location | None]] = {}
    for variable_id, value in shown.items():
        own = sites[variable_id]
        for included in template.variable(variable_id).includes:
            specific = shown.get(included)
            if (
                specific is None
                or specific.status is not value.status
                or not _same_statement(value, specific)
            ):
                continue
            own = [site for site in own if not _covered(template, site, sites[included])]
        if own:
            result[variable_id] = own
    return result


_SIDE_WORDS = frozenset({"right", "left", "both", "bilateral"})
_BILATERAL = ("right", "left")


@dataclass(frozen=True)
class Place:
    """Where one Observation is: its site (None: no `bodySite` site) and its stated side (None:
    none); `split`: the finding has one Observation per side there, so the side names it."""

    site: Location | None
    side: Option | None = None
    split: bool = False


def carries_side(site: Location) -> bool:
    """Whether a site names its own side (right_lung, both_lower_lobes)."""
    return bool(_SIDE_WORDS & set(site.id.split("_")))


def stated_sides(template: Template, value: FindingValue) -> tuple[Option, ...]:
    """The value's sides as the template's side options, bilateral as right and left."""
    if value.status is FindingStatus.ABSENT or not value.sides:
        return ()
    try:
        attribute = template.attribute("side")
    except KeyError:
        return ()
    ids: list[str] = []
    for side in value.sides:
        for one in _BILATERAL if side == "bilateral" else (side,):
            if one not in ids:
                ids.append(one)
    known = {option.id: option for option in attribute.options}
    return tuple(known[side] for side in ids if side in known)


def observation_places(
    template: Template, values: Sequence[FindingValue]
) -> dict[str, list[Place]]:
    """Variable id -> the places of its Observations: `observation_sites`, each site (or no
    site) once per stated side unless the site carries its own side."""
    by_id = {value.variable_id: value for value in values}
    result: dict[str, list[Place]] = {}
    for variable_id, sites in observation_sites(template, values).items():
        sides = stated_sides(template, by_id[variable_id])
        places: list[Place] = []
        for site in sites:
            if not sides or (site is not None and carries_side(site)):
                places.append(Place(site))
            else:
                places.extend(Place(site, side, len(sides) > 1) for side in sides)
        result[variable_id] = places
    return result
