"""Section detection: headings at line starts (English, Dutch, German) -> named sections."""

from __future__ import annotations

import re

from mappings.report import Section

HEADINGS: dict[str, tuple[str, ...]] = {
    "exam": ("examination", "exam", "procedure", "onderzoek", "untersuchung"),
    "history": (
        "clinical history", "history", "indication", "clinical information", "reason for exam",
        "indicatie", "vraagstelling", "klinische gegevens", "anamnese", "fragestellung",
        "indikation", "klinische angaben",
    ),
    "technique": ("technique", "techniek", "technik"),
    "comparison": ("comparison", "vergelijking", "vergleich", "voorgaand onderzoek", "voruntersuchung"),
    "findings": ("findings", "report", "bevindingen", "verslag", "befund", "befunde"),
    "impression": (
        "impression", "conclusion", "conclusions", "summary", "conclusie", "beoordeling",
        "beurteilung", "zusammenfassung",
    ),
}  # fmt: skip

_ALTERNATIVES = sorted(
    ((alias, name) for name, aliases in HEADINGS.items() for alias in aliases),
    key=lambda pair: -len(pair[0]),
)
_PATTERN = re.compile(
    r"^[ \t]*(?P<head>"
    + "|".join(re.escape(alias) for alias, _ in _ALTERNATIVES)
    + r")[ \t]*(?::|$)",
    re.IGNORECASE | re.MULTILINE,
)
_NAME = {alias: name for alias, name in _ALTERNATIVES}


def find_sections(text: str) -> tuple[Section, ...]:
    """Sections in text order; each runs from its heading to the next heading (or the end)."""
    hits = [(m.start(), _NAME[m.group("head").lower()]) for m in _PATTERN.finditer(text)]
    sections: list[Section] = []
    for index, (start, name) in enumerate(hits):
        end = hits[index + 1][0] if index + 1 < len(hits) else len(text)
        sections.append(Section(name=name, start=start, end=end))
    return tuple(sections)
