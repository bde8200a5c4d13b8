"""Where a finding is: the template locations a mention is stated at.

Within the mention's clause (`sites`):
- the synonyms of every template location are matched; a match inside a longer match of another
  location is dropped ("right" in "right upper lobe", "left lung" in "left lung base");
- a location's `modifiers` count only right before the mention, at most two words apart ("small
  right effusion", "left apical pneumothorax");
- a location the variable does not list becomes the listed location it is `part_of` ("right lower
  lobe" -> right lung, for a pneumothorax located by side only);
- the smaller location wins over the larger one it is part of ("left pleural effusion with
  atelectasis of the left lower lobe": the atelectasis is in the left lower lobe, not also the
  left lung; "bilateral GGO in both lower lobes": the two lower lobes, not also both lungs), and
  a multi-site location replaces the sites it expands to (`mappings.stated_sites`).

Across clauses (`share`): a finding named without a site takes the sites of the next sentence
when that sentence refers back to it ("A 7 mm nodule. It is located in the left upper lobe."),
and every present (or uncertain) statement of a finding carries the sites of all such statements
of it in the report ("9 mm nodule ... Impression: 9 mm LLL nodule"; "4 mm RUL nodule. 3 mm nodule
at the right base."), as one finding with several sites.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mappings import stated_sites
from mappings.report import FindingStatus
from mappings.template import Template, Variable
from workers.lexicon_text import terms_pattern

_MODIFIER_GAP = re.compile(r"(?:[\s-]+[\w.-]+){0,2}?[\s-]+$")
"""Between a modifier word and the mention: at most two words, no punctuation."""
_ANAPHOR = re.compile(
    r"(?:it|this|these|they|which|the\s+(?:nodule|nodules|lesion|lesions|mass|finding|"
    r"findings|opacity|opacities|abnormality|consolidation|collapse))\b"
    r"|(?:located|situated|seen|found)\s+(?:in|at|within)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Located:
    """One mention for `share`: its variable, status, clause and the sites found in it."""

    variable_id: str
    status: FindingStatus
    clause_start: int
    clause_end: int
    locations: tuple[str, ...]
    counts: bool = True
    """False for a mention that lends no sites (history section)."""


def _words(phrases: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(word for words in phrases.values() for word in words)


def _matches(
    template: Template, clause: str, mention: tuple[int, int] | None
) -> dict[str, list[tuple[int, int]]]:
    matches: dict[str, list[tuple[int, int]]] = {}
    for location in template.locations:
        spans = [m.span() for m in terms_pattern(_words(location.synonyms)).finditer(clause)]
        if mention is not None and location.modifiers:
            for match in terms_pattern(_words(location.modifiers)).finditer(clause, 0, mention[0]):
                if _MODIFIER_GAP.fullmatch(clause, match.end(), mention[0]) or (
                    match.end() == mention[0]
                ):
                    spans.append(match.span())
        if spans:
            matches[location.id] = spans
    return matches


def _named(matches: dict[str, list[tuple[int, int]]]) -> list[str]:
    """The locations with at least one match that is not inside a longer match of another."""

    def inside_longer(location_id: str, span: tuple[int, int]) -> bool:
        return any(
            start <= span[0] and span[1] <= end and end - start > span[1] - span[0]
            for other, spans in matches.items()
            if other != location_id
            for start, end in spans
        )

    return [
        location_id
        for location_id, spans in matches.items()
        if not all(inside_longer(location_id, span) for span in spans)
    ]


def _as_listed(template: Template, variable: Variable, location_id: str) -> list[str]:
    """The variable's own locations for a named one: itself, its sites, or what contains it."""
    if location_id in variable.locations:
        return [location_id]
    for container in stated_sites.containers(template, location_id):
        if container in variable.locations:
            return [container]
    expands = template.location(location_id).expands_to
    if expands:
        return [site for child in expands for site in _as_listed(template, variable, child)]
    return []


def sites(
    template: Template, variable: Variable, clause: str, mention: tuple[int, int] | None = None
) -> tuple[str, ...]:
    """The variable's locations stated in the clause (for the mention at `mention`, if given)."""
    if not variable.locations:
        return ()
    found: list[str] = []
    for named in _named(_matches(template, clause, mention)):
        for location_id in _as_listed(template, variable, named):
            if location_id not in found:
                found.append(location_id)
    return stated_sites.stated(template, found, variable.locations)


def _refers_back(text: str, clause: tuple[int, int]) -> bool:
    return _ANAPHOR.match(text, clause[0]) is not None


def share(
    template: Template, text: str, clauses: Sequence[tuple[int, int]], mentions: Sequence[Located]
) -> list[tuple[str, ...]]:
    """The sites of each mention after sharing them across the report (same order as given)."""
    next_clause = {clauses[i]: clauses[i + 1] for i in range(len(clauses) - 1)}
    own: list[tuple[str, ...]] = []
    for mention in mentions:
        locations = mention.locations
        following = next_clause.get((mention.clause_start, mention.clause_end))
        if (
            not locations
            and mention.status is not FindingStatus.ABSENT
            and following is not None
            and _refers_back(text, following)
        ):
            variable = template.variable(mention.variable_id)
            locations = sites(template, variable, text[following[0] : following[1]])
        own.append(locations)
    pooled: dict[tuple[str, FindingStatus], list[str]] = {}
    for mention, locations in zip(mentions, own, strict=True):
        if mention.counts and mention.status is not FindingStatus.ABSENT:
            bucket = pooled.setdefault((mention.variable_id, mention.status), [])
            bucket.extend(loc for loc in locations if loc not in bucket)
    shared: list[tuple[str, ...]] = []
    for mention, locations in zip(mentions, own, strict=True):
        if mention.status is FindingStatus.ABSENT:
            shared.append(locations)
            continue
        pool = pooled.get((mention.variable_id, mention.status), list(locations))
        listed = template.variable(mention.variable_id).locations
        shared.append(stated_sites.stated(template, pool, listed))
    return shared
