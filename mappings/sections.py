"""Section detection: report headings (English, Dutch, German, Korean) -> named sections.

A heading is one of HEADINGS' aliases at the start of a line (after optional `#`, `*`, `-`
decoration), alone on its line or followed by a colon. Before the colon it may carry a joined
second heading ("Impression and recommendation:", "Beurteilung und Empfehlung:") or a date
("Vergeleken met 2022:", "Voruntersuchung vom 03.01.2024:"). An UPPER-CASE alias followed by a
colon also counts in the middle of a line ("... normal. IMPRESSION: ..."), for reports that
arrive as one line. Each section runs from its heading to the next heading (or the end).

A line start counts only where a unit starts (`mappings.units`): a word that an RIS wrapped onto
the next line ("... compared with the previous\nstudy") is no heading. The aliases and section
names live in `mappings.headings` (HEADINGS is re-exported here).
"""

from __future__ import annotations

import re

from mappings.headings import ALIASES, ALTERNATIVES, HEADINGS
from mappings.report import Section
from mappings.units import flowed

__all__ = ["HEADINGS", "find_sections"]

_JOINED = r"(?:[ \t]*(?:and|und|en|&|/|,)[ \t]*[^\W\d_]+(?:[ \t]+[^\W\d_]+)?)"
_DATED = r"(?:[ \t]+(?:vom|van|from|of|dated|met|mit|with|d\.d\.)?[ \t]*\d[\d./-]*)"
_PATTERN = re.compile(
    rf"^[ \t#*\-]*(?P<head>{ALIASES})\**[ \t]*(?::|$)"
    rf"|^[ \t#*\-]*(?P<long>{ALIASES}){_JOINED}?{_DATED}?\**[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
_INLINE = re.compile(
    r"(?<=\s)(?P<head>"
    + "|".join(re.escape(alias.upper()) for alias, _ in ALTERNATIVES if alias.isascii())
    + r"):"
)
_NAME = {re.sub(r"\s+", " ", alias): name for alias, name in ALTERNATIVES}


def _name(heading: str) -> str:
    return _NAME[re.sub(r"\s+", " ", heading.lower())]


def find_sections(text: str) -> tuple[Section, ...]:
    """Sections in text order; each runs from its heading to the next heading (or the end)."""
    hits: dict[int, str] = {}
    headings: list[tuple[int, int]] = []
    lines = flowed(text)  # a soft line break is a space: no line starts there
    for match in _PATTERN.finditer(lines):
        hits[match.start()] = _name(match.group("head") or match.group("long"))
        headings.append(match.span())
    for match in _INLINE.finditer(lines):
        line_start = lines.rfind("\n", 0, match.start()) + 1
        inside = any(start <= match.start() < end for start, end in headings)  # CLINICAL HISTORY:
        if lines[line_start : match.start()].strip() and not inside:
            hits[match.start()] = _name(match.group("head"))
    ordered = sorted(hits.items())
    sections: list[Section] = []
    for index, (start, name) in enumerate(ordered):
        end = ordered[index + 1][0] if index + 1 < len(ordered) else len(text)
        sections.append(Section(name=name, start=start, end=end))
    return tuple(sections)
