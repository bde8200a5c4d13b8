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


def _breadth(template: Template, location_id: str) -> tuple[int, int]:
    location = template.location(location_id)
    return -len(template.sites(location_id)), 0 if location.expands_to else 1


def stated(
    template: Template, location_ids: Sequence[str], listed: Collection[str] | None = None
) -> tuple[str, ...]:
    """The locations as stated once each: `single_sites`, named by the given locations.

    A multi-site location whose sites all stay is kept as named ("both lower lobes"); one that
    lost a site to a smaller stated site gives its remaining sites, when the variable lists them
    (`listed`; None: any), else it stays whole. A location whose sites a wider kept location
    already states is dropped ("right lung" beside "bilateral", in either order).
    """
    kept = {site.id for site in single_sites(template, location_ids)}
    groups: list[str] = []
    for location_id in location_ids:
        own = [site.id for site in template.sites(location_id)]
        remaining = [site_id for site_id in own if site_id in kept]
        if len(remaining) == len(own) or (
            listed is not None and not all(site_id in listed for site_id in remaining)
        ):
            groups.extend(name for name in [location_id] if name not in groups)
        else:
            groups.extend(name for name in remaining if name not in groups)
    # the widest first, a location named for its sites before them ("lingula" -> upper lobe), so
    # "right lung" beside "bilateral" is dropped in either order
    covered: set[str] = set()
    chosen: set[str] = set()
    for name in sorted(groups, key=lambda name: _breadth(template, name)):
        sites = {site.id for site in template.sites(name)}
        if not sites <= covered:
            chosen.add(name)
            covered |= sites
    return tuple(name for name in groups if name in chosen)
