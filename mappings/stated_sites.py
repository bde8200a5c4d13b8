"""One site per place a finding is stated at: the rule shared by stage 1 and the Bundle.

A finding's locations are expanded to single sites (`Template.sites`: "both lower lobes" -> the
right and the left lower lobe); a site that contains another stated site (`part_of`,
transitively) is dropped, so "bilateral ground-glass opacity in both lower lobes" is stated at
the two lower lobes, not also at both whole lungs. Sites that are not `part_of` one another
(chest_findings' lung zones and sides) are separate sites and all stay.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from mappings.template import Location, Template


def containers(template: Template, location_id: str) -> list[str]:
    """The locations that contain this one, nearest first (`part_of`, transitively)."""
    found: list[str] = []
    current = template.location(location_id).part_of
    while current is not None and current not in found:
        found.append(current)
        current = template.location(current).part_of
    return found


def single_sites(template: Template, location_ids: Sequence[str]) -> tuple[Location, ...]:
    """The single sites the locations state, each once, without a site containing another."""
    sites: dict[str, Location] = {}
    for location_id in location_ids:
        for site in template.sites(location_id):
            sites.setdefault(site.id, site)
    inner = {outer for site_id in sites for outer in containers(template, site_id)}
    return tuple(site for site_id, site in sites.items() if site_id not in inner)


def stated(
    template: Template, location_ids: Sequence[str], listed: Collection[str] | None = None
) -> tuple[str, ...]:
    """The locations as stated once each: `single_sites`, named by the given locations.

    A multi-site location whose sites all stay is kept as named ("both lower lobes"); one that
    lost a site to a smaller stated site gives its remaining sites, when the variable lists them
    (`listed`; None: any), else it stays whole. A location whose sites an earlier kept location
    already states is dropped ("right lung" beside "bilateral").
    """
    kept = {site.id for site in single_sites(template, location_ids)}
    found: list[str] = []
    covered: set[str] = set()
    for location_id in location_ids:
        own = [site.id for site in template.sites(location_id)]
        remaining = [site_id for site_id in own if site_id in kept]
        if len(remaining) == len(own) or (
            listed is not None and not all(site_id in listed for site_id in remaining)
        ):
            group = [location_id]
        else:
            group = remaining
        for name in group:
            sites = {site.id for site in template.sites(name)}
            if name not in found and not sites <= covered:
                found.append(name)
                covered |= sites
    return tuple(found)
