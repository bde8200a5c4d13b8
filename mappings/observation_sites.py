"""Which Observations a Bundle emits for an extraction: one per finding and stated site.

- A value gives one Observation per single site it is stated at (`mappings.stated_sites`: a
  side that contains a stated lobe is dropped), or one without `bodySite`; an absent finding
  has no site; `not_mentioned` and a typed value without a value give none.
- A general finding (`Variable.includes`: chest_findings' lung opacity includes ground-glass
  opacity and infiltrate) gives no Observation where an included finding with the same status
  is emitted for the same statement (overlapping evidence) at the same site or a site within it:
  "ground-glass opacity in both lower lobes" is one finding, not also a lung opacity. Its
  Observations at other sites, or for another statement, stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from mappings.report import FindingStatus, FindingValue
from mappings.stated_sites import containers, single_sites
from mappings.template import Location, Template, Variable, VariableType


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
