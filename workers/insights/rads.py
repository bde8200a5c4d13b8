"""RADS categories stated in a report: BI-RADS (and breast density), Lung-RADS, PI-RADS,
ACR TI-RADS, LI-RADS and O-RADS, one per system, category and side.

A category stated as a prior result (comparison or history section, "destijds BI-RADS 3",
"(Lung-RADS 3)" after a prior exam, "nach Screening (BI-RADS 0 links)") is not this report's.
The side is the side word nearest the category in its sentence, else in the sentence before
(the lesion named just before its category), else the one side of the exam title; a category
repeated without a side where the report also ties it to a side is that sided one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mappings.insights.model import RadsCategory
from workers.insights.text import ReportText, may_match, side_in, sides_in

_SEP = (
    r"[\s:®-]*(?:v?\d\.\d|v\d{1,4}|version\s+\S+)?[\s:-]*(?:US|MRI|MR)?[\s:-]*"
    r"(?:(?:assessment|final|risk)\s+)?(?:category|categorie|kategorie|cat\.?|kat\.?|score|level|"
    r"stufe|klasse|klassifikation|classificatie|classification)?[\s:-]*"
)
"""Between a system's name and its category: separators, a version ("v2.1", "2.1", "v2022"), the
O-RADS modality ("US", "MRI") and a category word ("category", "Kategorie", "score", "level")."""
_ROMAN = {"I": "1", "II": "2", "III": "3", "IV": "4", "V": "5", "VI": "6"}
"""BI-RADS categories in the 4th edition's Roman numerals ("BI-RADS IV")."""


def _birads(category: str, subcategory: str) -> str:
    return category + (subcategory.upper() if category == "4" else "")


def _density(value: str) -> str:
    """a-d, also from the 4th edition's numbers (ACR 1-4)."""
    return "abcd"["1234".index(value)] if value.isdigit() else value.lower()


_DENSITY_WORD = r"(?:typ(?:e)?|dichte|density|densiteit|categor(?:y|ie)|kategorie|klasse)"
"""Between "ACR" and a density letter ("ACR-Typ C", "ACR-categorie c")."""
SIDE_WORD = r"(?:right|left|rechts|links|re\.|li\.|rechter|linker)"
"""A side written between the system and its category ("BI-RADS rechts 2, links 4"; also
`workers.rules_stage`'s reading of the other side's category)."""
_NOT_POINTS = r"(?!\s*(?i:points?|pts?\b|punten|punt\b|punkt(?:e|en)?\b))"
"""A TI-RADS number followed by "points" is the points ("TI-RADS 5 points (TR4)"), not the level."""
_PATTERNS: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    (
        "BI-RADS",
        re.compile(
            rf"\bBI[- ]?RADS{_SEP}(?:{SIDE_WORD}[\s:]*)?(?:([0-6])|(?-i:(VI|IV|V|III|II|I)))"
            r"\s?([abc]?)(?![\w])",
            re.IGNORECASE,
        ),
        lambda m: _birads(m.group(1) or _ROMAN[m.group(2)], m.group(3)),
    ),
    (
        "BI-RADS",
        re.compile(
            r"\b(?:kategorie|categorie|category|klasse|cat\.)\s*([0-6])\s?([abc]?)\s+"
            r"(?:nach|volgens|according to|per)\s+(?:(?:dem|het|the)\s+)?(?:ACR[- ])?BI[- ]?RADS\b",
            re.IGNORECASE,
        ),
        lambda m: _birads(m.group(1), m.group(2)),
    ),
    (
        "Lung-RADS",
        re.compile(
            rf"\bLung[- ]?RADS{_SEP}([0-4])([ABX]?)(?:\s*/\s*|\s)?(S?)(?![\w])", re.IGNORECASE
        ),
        lambda m: m.group(1) + m.group(2).upper() + m.group(3).upper(),
    ),
    (
        "PI-RADS",
        re.compile(rf"\bPI[- ]?RADS{_SEP}([1-5])(?![\w])", re.IGNORECASE),
        lambda m: m.group(1),
    ),
    (
        "TI-RADS",
        re.compile(
            rf"(?:(?:(?<![\w-])|(?<=ACR-))TI-?RADS{_SEP}(?:TR[- ]?)?([1-5])|(?<![\w-])TR[- ]?([1-5]))"
            rf"(?![\w+]){_NOT_POINTS}"
        ),
        lambda m: "TR" + (m.group(1) or m.group(2)),
    ),
    (
        "LI-RADS",
        re.compile(rf"(?:\bLI-?RADS{_SEP}(?:LR[- ]?)?|(?<![\w-])LR[- ]?)(TIV|NC|M|[1-5])(?![\w])"),
        lambda m: "LR-" + m.group(1),
    ),
    (
        "O-RADS",
        re.compile(rf"\bO[- ]?RADS{_SEP}([0-5])(?![\w])", re.IGNORECASE),
        lambda m: m.group(1),
    ),
    (
        "BI-RADS density",
        re.compile(
            rf"(?:\bACR[\s-]*(?:{_DENSITY_WORD}\s*)?([a-d])(?![\w-])"
            r"|\bACR[\s-]*(?:typ(?:e)?|dichte|density)?[\s-]*([1-4])(?![\w,-]|\.\d)"
            r"|\b(?:dens\w*|dichte|fatty|fett\w*|vetrijk\w*|fibroglandular)\b[^.\n]{0,40}?\(([a-d])\)"
            r"|\b(?:densiteit|dichte|density)\b\s*:?\s*(?:categorie|kategorie|category)\s+([a-d])\b"
            r"|\b(?:parenchym|brust|mamma)?(?:densiteit|dichte|density)\s*:?\s*(?-i:([A-D]))(?![\w-])"
            r"|\b(?:breast\s+)?(?:composition|(?:parenchym|brust|mamma)?(?:densiteit|dichte|density))"
            r"\s*:\s*([a-d])(?![\w-]))",
            re.IGNORECASE,
        ),
        lambda m: _density(next(group for group in m.groups() if group)),
    ),
)
_PRIOR = re.compile(
    r"\b(?:prior|previous(?:ly)?|destijds|voorheen|eerder|vormals|damals|zuvor|nach\s+screening"
    r"|recall\s+from|compared|vergeleken|im\s+vergleich|voraufnahme|screening\s+\(|"
    r"indication|indicatie|fragestellung|voruntersuchung\w*|vorbefund\w*|vorbild\w*|vorunters\.|"
    r"vooronderzoek\w*|voorgaande?|vorige|earlier|last (?:exam|study|year)|outside)\b",
    re.IGNORECASE,
)
_NOW = re.compile(
    r"\)|\b(?:now|currently|today|jetzt|aktuell|heute|nu|thans|inmiddels|momenteel)\b", re.I
)
"""After a prior result, what makes the category that follows this report's."""
_ANY = re.compile(
    r"rads|tr[- ]?[1-5]|lr[- ]?(?:[1-5]|m|tiv|nc)|acr|dens|dichte|fatty|fett|vetrijk|fibroglandular"
)
"""What every category pattern holds (in `ReportText.folded`, lower case): a report without it
has no category."""
_HISTORY_SECTIONS = frozenset({"history", "comparison"})
_PRIOR_WINDOW = 40
_SIDELESS = frozenset({"BI-RADS density", "Lung-RADS", "LI-RADS"})
"""Systems of unpaired organs (and density): no side ("LR-TIV" of the right portal vein)."""
_CLAUSE_BREAK = re.compile(r",|;|\s(?:and|en|und)\s", re.IGNORECASE)
"""Where a category's clause ends: "TI-RADS 4 nodule of the right lobe and TI-RADS 2 ... left"."""
_LABEL_MAX = 30


_CONTINUED = re.compile(rf"\s*[,;/]\s*({SIDE_WORD})[\s:]*([0-6])([abc]?)(?![\w])", re.IGNORECASE)
"""The other side's category after a sided one: "BI-RADS rechts 2, links 4"."""


_STRUCTURED = re.compile(
    r"^[ \t]*(?:(?:assessment|final|overall|eind)\s*)?(?:category|categorie|kategorie|"
    r"classification|classificatie|klassifikation|einstufung)[ \t]*:[ \t]*([0-6])([abc]?)(?![\w])",
    re.IGNORECASE | re.MULTILINE,
)
"""A category on a line of its own under a heading that names the system ("ACR BI-RADS
ASSESSMENT" ... "Assessment category: 4B")."""
_HEADING_SYSTEMS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("BI-RADS", re.compile(r"\bBI[- ]?RADS\b", re.IGNORECASE), "0123456"),
    ("Lung-RADS", re.compile(r"\bLung[- ]?RADS\b", re.IGNORECASE), "01234"),
    ("PI-RADS", re.compile(r"\bPI[- ]?RADS\b", re.IGNORECASE), "12345"),
    ("O-RADS", re.compile(r"\bO[- ]?RADS\b", re.IGNORECASE), "012345"),
)
"""The systems a heading may name, with the numbers their categories take."""
_HEADING_LINES = 3


def _heading_system(text: str, line_start: int) -> str | None:
    """The one system named by the lines just above `line_start` that state no category."""
    above = text[:line_start].rstrip("\n").split("\n")[-_HEADING_LINES:]
    for line in reversed(above):
        named = [system for system, pattern, _ in _HEADING_SYSTEMS if pattern.search(line)]
        if named:
            return named[0] if len(named) == 1 and not re.search(r"\d", line) else None
    return None


def _structured(text: str) -> list[tuple[int, int, str, str]]:
    hits = []
    for match in _STRUCTURED.finditer(text):
        system = _heading_system(text, match.start())
        numbers = next((n for s, _, n in _HEADING_SYSTEMS if s == system), "")
        if system is None or match.group(1) not in numbers:
            continue
        letter = match.group(2).upper() if system == "BI-RADS" and match.group(1) == "4" else ""
        hits.append((match.start(1), match.end(), system, match.group(1) + letter))
    return hits


def _block_side(doc: ReportText, start: int) -> str | None:
    """The one side stated on the lines just above a structured category line (its block)."""
    line_start = doc.text.rfind("\n", 0, start) + 1
    above = doc.text[:line_start].rstrip("\n").split("\n")[-_HEADING_LINES:]
    sides = sides_in("\n".join(above))
    return sides.pop() if len(sides) == 1 else None


def _continued(text: str, hits: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    more = []
    for _, end, system, _ in hits:
        match = _CONTINUED.match(text, end) if system == "BI-RADS" else None
        if match is not None:
            category = match.group(2) + (match.group(3).upper() if match.group(2) == "4" else "")
            more.append((match.start(1), match.end(), system, category))
    return more


def _prior(doc: ReportText, start: int) -> bool:
    if doc.in_sections(start, _HISTORY_SECTIONS):
        return True
    sentence_start, _ = doc.sentence_at(start)
    before = doc.text[max(sentence_start, start - _PRIOR_WINDOW) : start]
    prior = max(_PRIOR.finditer(before), key=lambda m: m.start(), default=None)
    # "Im Vergleich zur Voruntersuchung (PI-RADS 3) jetzt PI-RADS 4": the prior result is closed
    return prior is not None and not _NOW.search(before, prior.end())


def _title_side(doc: ReportText) -> str | None:
    if not doc.title_end:  # the first line is no title ("INDICATION: ... left breast.")
        return None
    sides = sides_in(doc.text[: doc.title_end])
    return sides.pop() if len(sides) == 1 else None


def _side(doc: ReportText, system: str, start: int, end: int) -> str | None:
    if system in _SIDELESS:
        return None
    sentence_start, sentence_end = doc.sentence_at(start)
    before = [m.end() for m in _CLAUSE_BREAK.finditer(doc.text, sentence_start, start)]
    clause_start = before[-1] if before else sentence_start
    after = _CLAUSE_BREAK.search(doc.text, end, sentence_end)
    clause_end = after.start() if after else sentence_end
    side = side_in(doc.text[clause_start:clause_end], start - clause_start)
    if side is None:
        side = side_in(doc.text[sentence_start:sentence_end], start - sentence_start)
    if side is None:
        line_start = doc.text.rfind("\n", 0, start) + 1
        label = doc.text[line_start : doc.text.find(":", line_start, start) + 1]
        side = side_in(label, 0) if label and len(label) < _LABEL_MAX else None
    if side is None and sentence_start > 0:
        previous_start, previous_end = doc.sentence_at(max(0, sentence_start - 2))
        if previous_end <= sentence_start and "\n" not in doc.raw[previous_end:sentence_start]:
            side = side_in(doc.text[previous_start:previous_end], previous_end - previous_start)
    if side is None and doc.text[sentence_end : sentence_end + 1] == ";":
        # "BIRADS 0 - incomplete; a focal asymmetry in the left breast ...": the clause after
        next_start, next_end = doc.sentence_at(sentence_end + 1)
        if "\n" not in doc.raw[sentence_end:next_start]:
            side = side_in(doc.text[next_start:next_end], 0)
    return side if side is not None else _title_side(doc)


def _hits(doc: ReportText) -> list[tuple[int, int, str, str]]:
    """Every category stated in the text, prior or not: (start, end, system, category)."""
    hits: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []
    for system, pattern, category_of in _PATTERNS:
        if not may_match(doc, pattern):
            continue
        for match in pattern.finditer(doc.text):
            if any(s <= match.start() < e for s, e in taken):
                continue
            category = category_of(match)
            if category is None:
                continue
            hits.append((match.start(), match.end(), system, category))
            taken.append(match.span())
    hits.extend(_continued(doc.text, hits))
    hits.extend(_structured(doc.text))
    return sorted(hits)


def prior_spans(doc: ReportText) -> tuple[tuple[int, int], ...]:
    """(start, end) of each category stated as a prior result (the rule `find_rads` skips):
    a template's score variable does not read these as this exam's either."""
    if not _ANY.search(doc.folded):
        return ()
    return tuple((start, end) for start, end, _, _ in _hits(doc) if _prior(doc, start))


def find_rads(doc: ReportText) -> tuple[RadsCategory, ...]:
    """The RADS categories of this report, in text order, one per (system, category, side)."""
    if not _ANY.search(doc.folded):
        return ()
    found: dict[tuple[str, str, str | None], RadsCategory] = {}
    structured = {hit[0] for hit in _structured(doc.text)}
    for start, end, system, category in _hits(doc):
        if _prior(doc, start):
            continue
        side = _block_side(doc, start) if start in structured and system not in _SIDELESS else None
        side = side or _side(doc, system, start, end)
        key = (system, category, side)
        if key not in found:
            found[key] = RadsCategory(
                system=system, category=category, side=side, evidence=doc.span(start, end)
            )
    sided = {(system, category) for system, category, side in found if side is not None}
    # a category repeated without a side ("Beurteilung: PI-RADS 3.") is the sided one again
    return tuple(
        rads
        for (system, category, side), rads in found.items()
        if side is not None or (system, category) not in sided
    )
