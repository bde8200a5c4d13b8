"""RADS categories stated in a report: BI-RADS (and breast density), Lung-RADS, PI-RADS,
ACR TI-RADS, LI-RADS and O-RADS, one per system, category and side.

A category stated as a prior result (comparison or history section, "destijds BI-RADS 3",
"(Lung-RADS 3)" after a prior exam, "nach Screening (BI-RADS 0 links)") is not this report's.
The side is the side word nearest the category in its sentence, else in the sentence before
(the lesion named just before its category), else the one side of the exam title.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mappings.insights.model import RadsCategory
from workers.insights.text import ReportText, side_in, sides_in

_SEP = r"[\s:®]*(?:category|categorie|kategorie|score|v2\.1|US)?[\s:]*"
_PATTERNS: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    (
        "BI-RADS",
        re.compile(rf"\bBI-?RADS{_SEP}([0-6])([abc]?)(?![\w])", re.IGNORECASE),
        lambda m: m.group(1) + (m.group(2).upper() if m.group(1) == "4" else ""),
    ),
    (
        "Lung-RADS",
        re.compile(rf"\bLung-?RADS{_SEP}([0-4])([ABX]?)(S?)(?![\w])", re.IGNORECASE),
        lambda m: m.group(1) + m.group(2).upper() + m.group(3).upper(),
    ),
    (
        "PI-RADS",
        re.compile(rf"\bPI-?RADS{_SEP}([1-5])(?![\w])", re.IGNORECASE),
        lambda m: m.group(1),
    ),
    (
        "TI-RADS",
        re.compile(rf"(?:\bTI-?RADS{_SEP}(?:TR)?([1-5])|(?<![\w-])TR[- ]?([1-5]))(?![\w+])"),
        lambda m: "TR" + (m.group(1) or m.group(2)),
    ),
    (
        "LI-RADS",
        re.compile(r"(?:\bLI-?RADS[\s:]*(?:LR-?)?|(?<![\w-])LR-)(TIV|NC|M|[1-5])(?![\w])"),
        lambda m: "LR-" + m.group(1),
    ),
    (
        "O-RADS",
        re.compile(rf"\bO-?RADS{_SEP}([0-5])(?![\w])", re.IGNORECASE),
        lambda m: m.group(1),
    ),
    (
        "BI-RADS density",
        re.compile(
            r"(?:\bACR[\s-]*(?:typ(?:e)?\s*|dichte\s*)?([a-d])(?![\w-])"
            r"|\b(?:dens\w*|dichte)\b[^.\n]{0,40}?\(([a-d])\)"
            r"|\b(?:densiteit|dichte|density)\b\s*:?\s*(?:categorie|kategorie|category)\s+([a-d])\b)",
            re.IGNORECASE,
        ),
        lambda m: (m.group(1) or m.group(2) or m.group(3)).lower(),
    ),
)
_PRIOR = re.compile(
    r"\b(?:prior|previous(?:ly)?|destijds|voorheen|eerder|vormals|damals|zuvor|nach\s+screening"
    r"|recall\s+from|compared|vergeleken|im\s+vergleich|voraufnahme|screening\s+\(|"
    r"indication|indicatie|fragestellung)\b",
    re.IGNORECASE,
)
_ANY = re.compile(r"RADS|TR[- ]?[1-5]|LR-|ACR|dens|dichte", re.IGNORECASE)
"""What every category pattern holds: a report without it has no category."""
_HISTORY_SECTIONS = frozenset({"history", "comparison"})
_PRIOR_WINDOW = 40
_SIDELESS = frozenset({"BI-RADS density", "Lung-RADS"})
_TITLE_LINES = 1
_LABEL_MAX = 30


def _prior(doc: ReportText, start: int) -> bool:
    if doc.in_sections(start, _HISTORY_SECTIONS):
        return True
    sentence_start, _ = doc.sentence_at(start)
    before = doc.text[max(sentence_start, start - _PRIOR_WINDOW) : start]
    return bool(_PRIOR.search(before))


def _title_side(doc: ReportText) -> str | None:
    sides = sides_in(doc.text.split("\n", _TITLE_LINES)[0])
    return sides.pop() if len(sides) == 1 else None


def _side(doc: ReportText, system: str, start: int, end: int) -> str | None:
    if system in _SIDELESS:
        return None
    sentence_start, sentence_end = doc.sentence_at(start)
    clause_start = max(doc.text.rfind(",", sentence_start, start) + 1, sentence_start)
    clause_end = doc.text.find(",", end, sentence_end)
    clause_end = sentence_end if clause_end < 0 else clause_end
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
    return side if side is not None else _title_side(doc)


def find_rads(doc: ReportText) -> tuple[RadsCategory, ...]:
    """The RADS categories of this report, in text order, one per (system, category, side)."""
    if not _ANY.search(doc.text):
        return ()
    found: dict[tuple[str, str, str | None], RadsCategory] = {}
    hits: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []
    for system, pattern, category_of in _PATTERNS:
        for match in pattern.finditer(doc.text):
            if any(s <= match.start() < e for s, e in taken):
                continue
            category = category_of(match)
            if category is None:
                continue
            hits.append((match.start(), match.end(), system, category))
            taken.append(match.span())
    for start, end, system, category in sorted(hits):
        if _prior(doc, start):
            continue
        side = _side(doc, system, start, end)
        key = (system, category, side)
        if key not in found:
            found[key] = RadsCategory(
                system=system, category=category, side=side, evidence=doc.span(start, end)
            )
    return tuple(found.values())
