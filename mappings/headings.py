"""The section headings radbridge knows (English, Dutch, German, Korean), by section name.

Read by `mappings.sections` (which sections a report has) and by `mappings.units` (a heading
alone on its line ends a unit). Section names: exam, history (indication, clinical question),
technique, comparison, findings, quantitative (the measured part of a cardiac MRI: volumes, EF,
mapping), impression.
"""

from __future__ import annotations

import re

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

ALTERNATIVES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((alias, name) for name, aliases in HEADINGS.items() for alias in aliases),
        key=lambda pair: -len(pair[0]),
    )
)
"""(alias, section name), longest alias first."""
ALIASES = "|".join(re.escape(alias).replace(r"\ ", r"[ \t]+") for alias, _ in ALTERNATIVES)
"""A regex alternation of every alias (any run of spaces or tabs between its words)."""
HEADING_ALONE = re.compile(rf"[ \t#*\-]*(?:{ALIASES})\**[ \t]*:?[ \t]*", re.IGNORECASE)
"""A line that is only a heading ("FINDINGS", "Beurteilung:", "## Conclusie"): fullmatch it."""
