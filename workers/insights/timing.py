"""Time frames of a recommendation: "in 3 months", "over 10 à 14 dagen", "in sechs Wochen",
"halbjährlich", "tomorrow" -> ISO 8601 durations, and due dates from the report's date.

Months and years are calendar months (a year is 12; a day past the month's end is clamped to
its last day), weeks are 7 days. A series ("in 6 months, then annually", "na 1, 3 en 5 jaar")
is its first occurrence.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from workers.insights.quick import holds
from workers.insights.text import quick_anchors

_NUMBER_WORDS = {
    "one": 1, "een": 1, "één": 1, "ein": 1, "einem": 1, "einer": 1, "eine": 1, "a": 1, "an": 1,
    "two": 2, "twee": 2, "zwei": 2, "three": 3, "drie": 3, "drei": 3, "four": 4, "vier": 4,
    "five": 5, "vijf": 5, "fünf": 5, "six": 6, "zes": 6, "sechs": 6, "eight": 8, "acht": 8,
    "seven": 7, "zeven": 7, "sieben": 7, "nine": 9, "negen": 9, "neun": 9,
    "fifteen": 15, "vijftien": 15, "fünfzehn": 15,
    "ten": 10, "tien": 10, "zehn": 10, "twelve": 12, "twaalf": 12, "zwölf": 12,
    "eighteen": 18, "achttien": 18, "achtzehn": 18, "twenty-four": 24,
}  # fmt: skip
_UNITS = {
    "day": "D", "days": "D", "dag": "D", "dagen": "D", "tag": "D", "tage": "D", "tagen": "D",
    "week": "W", "weeks": "W", "weken": "W", "woche": "W", "wochen": "W", "wk": "W", "wks": "W",
    "month": "M", "months": "M", "maand": "M", "maanden": "M", "monat": "M", "monate": "M",
    "monaten": "M", "mo": "M", "mos": "M", "mon": "M", "mth": "M", "mths": "M", "mnd": "M",
    "mndn": "M", "wo": "W", "wkn": "W", "jr": "Y",
    "year": "Y", "years": "Y", "jaar": "Y", "jaren": "Y", "jahr": "Y", "jahre": "Y",
    "jahren": "Y", "yr": "Y", "yrs": "Y",
}  # fmt: skip
_NUM = r"(\d{1,2}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"
_UNIT = r"(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")"
_LEAD = r"(?:in|over|na|nach|within|binnen|innerhalb(?:\s+von)?|after|at|about|ca\.|circa|approximately|ongeveer|etwa|(?:interval|intervall|termijn|zeitraum) (?:of|van|von)|every|each|alle|jede[nmrs]?|iedere?|elke?|om de)"
_RANGE = re.compile(
    rf"(?<!\w){_LEAD}\s+(?:{_LEAD}\s+)?{_NUM}\s*(?:-|–|to|tot|à|a|bis|or|of|oder)\s*{_NUM}\s*{_UNIT}(?!\w)",
    re.IGNORECASE,
)
_BETWEEN = re.compile(
    rf"(?<!\w)(?:between|tussen|zwischen)\s+{_NUM}\s*(?:and|en|und|-|–)\s*{_NUM}\s*{_UNIT}(?!\w)",
    re.IGNORECASE,
)
"""A range said with "between": "between 6 and 12 months", "tussen 6 en 12 maanden"."""
_SINGLE = re.compile(
    rf"(?<!\w){_LEAD}\s+(?:{_LEAD}\s+)?(?:(?:een|ein(?:em)?)\s+)?(half|halben|{_NUM[1:-1]})\s*"
    rf"(?:(?:,\s*\d+\s*)*(?:en|und|and)\s*\d+\s*)?{_UNIT}(?!\w)",
    re.IGNORECASE,
)
_BEFORE_FOLLOWUP = (
    r"(?=[- ]?(?:follow|surveillance|interval|repeat|re-?imaging|check|controle|kontroll|verlaufs))"
)
_ADJECTIVE_RANGE = re.compile(
    rf"(?<![\w-]){_NUM}\s*(?:-|–|to)\s*{_NUM}[- ]{_UNIT}s?{_BEFORE_FOLLOWUP}", re.IGNORECASE
)
_ADJECTIVE = re.compile(
    rf"(?<![\w-]){_NUM}[- ]{_UNIT}s?{_BEFORE_FOLLOWUP}"
    r"|(?<![\w-])(\d{1,2})-?(monatig|wöchig|maandelijks|wekelijks|monthly|weekly|monatlich|"
    r"wöchentlich)\w*",
    re.IGNORECASE,
)
"""Time frames as adjectives before the follow-up: "a 6-12 month follow-up CT", "3-month
follow-up", "6-monatige Kontrolle"."""
_ADJECTIVE_UNITS = {
    "monatig": "M", "wöchig": "W", "maandelijks": "M", "wekelijks": "W", "monthly": "M",
    "weekly": "W", "monatlich": "M", "wöchentlich": "W",
}  # fmt: skip
_WORDS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"(?<!\w)(?:in|over|na|nach)\s+(?:een|ein(?:em)?)\s+half\s*(?:jaar|jahr)", re.I), ("P6M",)),
    (re.compile(r"(?<!\w)(?:(?:in|within|after|every)\s+half\s+a\s+year|(?:elk|ieder|om het)\s+half\s+jaar)(?!\w)", re.I), ("P6M",)),
    (re.compile(r"(?<!\w)(?:halbjährlich\w*|halfjaarlijks\w*|semiannual\w*|six-monthly)(?!\w)", re.I), ("P6M",)),
    (re.compile(r"(?<!\w)(?:annual(?:ly)?|yearly|jaarlijks\w*|jährlich\w*)(?!\w)", re.I), ("P1Y",)),
    (re.compile(r"(?<!\w)(?:tomorrow|morgen(?:früh)?|am folgetag|folgetag|next day|de volgende dag)(?!\w)", re.I), ("P1D",)),
)  # fmt: skip


@dataclass(frozen=True)
class Interval:
    """A stated time frame: one duration, or two for a range; its offsets in the text."""

    durations: tuple[str, ...]
    start: int
    end: int


def _amount(word: str) -> int | None:
    word = word.lower()
    if word.isdigit():
        return int(word)
    if word in ("half", "halben"):
        return None
    return _NUMBER_WORDS.get(word)


_ANY_UNIT = re.compile(
    "|".join(
        re.escape(word)
        for word in sorted(
            [*_UNITS, "half", "halben", "annual", "yearly", "jährlich", "jaarlijks", "tomorrow",
             "morgen", "folgetag", "next day", "volgende dag", "monatig", "wöchig", "maandelijks",
             "wekelijks", "monthly", "weekly", "monatlich", "wöchentlich"],
            key=len,
            reverse=True,
        )
    ),
    re.IGNORECASE,
)  # fmt: skip
"""Every time frame holds one of these: a text without any has none (a quick test)."""


def _scan(
    pattern: re.Pattern[str], text: str, start: int, end: int, lowered: str
) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text, start, end)`, skipped when a quick test on the lower-cased
    `lowered` (= `text[start:end]`) shows it cannot match."""
    if not holds(quick_anchors(pattern), lowered, 0, len(lowered)):
        return iter(())
    return pattern.finditer(text, start, end)


def _overlaps(taken: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in taken)


def find_intervals(text: str, start: int = 0, end: int | None = None) -> list[Interval]:
    """The time frames stated in `text[start:end]`, in text order (ranges first where both)."""
    end = len(text) if end is None else end
    if not _ANY_UNIT.search(text, start, end):
        return []
    lowered = text[start:end].lower()
    found: list[Interval] = []
    taken: list[tuple[int, int]] = []
    for ranged in (_RANGE, _BETWEEN, _ADJECTIVE_RANGE):  # (low, high, unit); the first wins
        for match in _scan(ranged, text, start, end, lowered):
            low, high = _amount(match.group(1)), _amount(match.group(2))
            if low is None or high is None or _overlaps(taken, *match.span()):
                continue
            unit = _UNITS[match.group(3).lower()]
            found.append(Interval((f"P{low}{unit}", f"P{high}{unit}"), *match.span()))
            taken.append(match.span())
    for match in _scan(_ADJECTIVE, text, start, end, lowered):
        if _overlaps(taken, *match.span()):
            continue
        if match.group(1) is not None:
            amount, unit = _amount(match.group(1)), _UNITS[match.group(2).lower()]
        else:
            amount, unit = int(match.group(3)), _ADJECTIVE_UNITS[match.group(4).lower()]
        if amount is None:
            continue
        found.append(Interval((f"P{amount}{unit}",), *match.span()))
        taken.append(match.span())
    for pattern, durations in _WORDS:
        for match in _scan(pattern, text, start, end, lowered):
            if not _overlaps(taken, *match.span()):
                found.append(Interval(durations, *match.span()))
                taken.append(match.span())
    for match in _scan(_SINGLE, text, start, end, lowered):
        if _overlaps(taken, *match.span()):
            continue
        unit = _UNITS[match.group(2).lower()]
        amount = _amount(match.group(1))
        if amount is None:  # "half a year"
            if unit != "Y":
                continue
            amount, unit = 6, "M"
        found.append(Interval((f"P{amount}{unit}",), *match.span()))
        taken.append(match.span())
    return sorted(found, key=lambda i: i.start)


def add_duration(start: date, duration: str) -> date:
    """`start` + an ISO 8601 duration of one unit (P3M, P1Y, P6W, P10D)."""
    match = re.fullmatch(r"P(\d+)([YMWD])", duration)
    if match is None:
        raise ValueError(f"not a one-unit duration: {duration!r}")
    amount, unit = int(match.group(1)), match.group(2)
    if unit == "D":
        return start + timedelta(days=amount)
    if unit == "W":
        return start + timedelta(weeks=amount)
    months = amount * 12 if unit == "Y" else amount
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))
