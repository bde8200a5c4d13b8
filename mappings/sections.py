"""Section detection: report headings (English, Dutch, German, Korean) -> named sections.

A heading is one of HEADINGS' aliases at the start of a line (after optional `#`, `*`, `-`
decoration), alone on its line or followed by a colon. Before the colon it may carry a joined
second heading ("Impression and recommendation:", "Beurteilung und Empfehlung:") or a date
("Vergeleken met 2022:", "Voruntersuchung vom 03.01.2024:"). An UPPER-CASE alias followed by a
colon also counts in the middle of a line ("... normal. IMPRESSION: ..."), for reports that
arrive as one line. Each section runs from its heading to the next heading (or the end).

Section names: exam, history (indication, clinical question), technique, comparison, findings,
quantitative (the measured part of a cardiac MRI: volumes, EF, mapping), impression.
"""

from __future__ import annotations

import re

from mappings.report import Section

HEADINGS: dict[str, tuple[str, ...]] = {
    "exam": ("examination", "exam", "procedure", "study", "onderzoek", "untersuchung"),
    "history": (
        "clinical history", "history", "indication", "indications", "clinical indication",
        "clinical information", "clinical info", "clinical details", "clinical question",
        "clinical data", "reason for exam", "reason for examination", "reason for study",
        "indicatie", "vraagstelling", "klinische vraagstelling", "klinische gegevens",
        "klinische informatie", "reden van onderzoek", "reden van verwijzing", "anamnese",
        "fragestellung", "klinische fragestellung", "indikation", "rechtfertigende indikation",
        "klinische angaben", "klinik", "임상 정보", "임상정보",
    ),
    "technique": (
        "technique", "protocol", "methods", "techniek", "scanprotocol", "technik", "protokoll",
        "sequenzen",
    ),
    "comparison": (
        "comparison", "comparisons", "prior studies", "vergelijking", "vergeleken met",
        "voorgaand onderzoek", "vergleich", "voruntersuchung", "voruntersuchungen",
        "voraufnahmen", "vorbefund", "비교",
    ),
    "findings": (
        "findings", "report", "bevindingen", "verslag", "beschrijving", "befund", "befunde",
        "befundbeschreibung", "소견", "판독 소견", "판독소견",
    ),
    "quantitative": (
        "quantitative analyse", "quantitative auswertung", "quantitative analysis",
        "quantification", "messwerte", "messungen", "volumetrie", "measurements", "metingen",
        "kwantitatieve analyse", "kwantificatie",
    ),
    "impression": (
        "impression", "conclusion", "conclusions", "summary", "opinion", "interpretation",
        "conclusie", "beoordeling", "samenvatting", "beurteilung", "zusammenfassung", "fazit",
        "결론", "판독 결과", "판독결과",
    ),
}  # fmt: skip

_ALTERNATIVES = sorted(
    ((alias, name) for name, aliases in HEADINGS.items() for alias in aliases),
    key=lambda pair: -len(pair[0]),
)
_ALIASES = "|".join(re.escape(alias).replace(r"\ ", r"[ \t]+") for alias, _ in _ALTERNATIVES)
_JOINED = r"(?:[ \t]*(?:and|und|en|&|/|,)[ \t]*[^\W\d_]+(?:[ \t]+[^\W\d_]+)?)"
_DATED = r"(?:[ \t]+(?:vom|van|from|of|dated|met|mit|with|d\.d\.)?[ \t]*\d[\d./-]*)"
_PATTERN = re.compile(
    rf"^[ \t#*\-]*(?P<head>{_ALIASES})\**[ \t]*(?::|$)"
    rf"|^[ \t#*\-]*(?P<long>{_ALIASES}){_JOINED}?{_DATED}?\**[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
_INLINE = re.compile(
    r"(?<=\s)(?P<head>"
    + "|".join(re.escape(alias.upper()) for alias, _ in _ALTERNATIVES if alias.isascii())
    + r"):"
)
_NAME = {re.sub(r"\s+", " ", alias): name for alias, name in _ALTERNATIVES}


def _name(heading: str) -> str:
    return _NAME[re.sub(r"\s+", " ", heading.lower())]


def find_sections(text: str) -> tuple[Section, ...]:
    """Sections in text order; each runs from its heading to the next heading (or the end)."""
    hits: dict[int, str] = {}
    for match in _PATTERN.finditer(text):
        hits[match.start()] = _name(match.group("head") or match.group("long"))
    for match in _INLINE.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if text[line_start : match.start()].strip():
            hits[match.start()] = _name(match.group("head"))
    ordered = sorted(hits.items())
    sections: list[Section] = []
    for index, (start, name) in enumerate(ordered):
        end = ordered[index + 1][0] if index + 1 < len(ordered) else len(text)
        sections.append(Section(name=name, start=start, end=end))
    return tuple(sections)
