"""What every insight rule reads: the flowed text, its sentences, sections and sides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from mappings.insights.model import Span
from mappings.report import Report, Section
from mappings.sections import find_sections
from mappings.units import flowed, unit_spans
from workers.insights.quick import anchors, holds

_LEFT = re.compile(r"(?<!\w)(?:left|links|linke[rns]?|linker|li\.|LI(?!-))(?!\w)", re.IGNORECASE)
_RIGHT = re.compile(
    r"(?<!\w)(?:right|rechts|rechte[rns]?|rechter|re\.|RE(?!-))(?!\w)", re.IGNORECASE
)
"""Side words; "LI"/"RE" but not the "LI-" of "LI-RADS"."""
_TITLE_WORDS = 12
"""At most this many words in a first line that is the exam's title."""
_TITLE_END = re.compile(r"(?<!\w)(?:Prof|Dr|dr|Mr|Mrs|Ms|PD)$")
_TITLE_REACH = 6
"""How far back from a unit's end `_TITLE_END` is looked for (its longest title is 4 letters; the
look-behind still sees the letter before): not from the report's start for every unit."""
INLINE_LABEL = re.compile(
    r"(?<!\w)(?:advies|advice|empfehlung|empf\.|recommendations?|rec\.?|aanbeveling)\s*:",
    re.IGNORECASE,
)


_FOLD = str.maketrans({"İ": "i", "ı": "i", "ſ": "s", "\u212a": "k"})
"""Letters a case-insensitive pattern matches to i, s or k (İ also keeps `lower` one letter)."""


@dataclass(frozen=True)
class ReportText:
    """One report as the insight rules read it (offsets are offsets into `raw`)."""

    raw: str
    language: str | None
    found_sections: tuple[Section, ...] = field(default=(), compare=False)
    """The sections the parser already found in `raw` (`Report.sections`); found again when
    empty."""

    @classmethod
    def of(cls, report: Report) -> ReportText:
        """The report's text and language, with the sections its parser found."""
        return cls(report.text, report.language, report.sections)

    @cached_property
    def text(self) -> str:
        """Soft line breaks read as spaces: same length and offsets as `raw`."""
        return flowed(self.raw)

    @cached_property
    def folded(self) -> str:
        """`text` in lower case, same length and offsets, with the letters a case-insensitive
        pattern also takes for i, k and s made those letters: for quick tests of which words
        a report (or one of its sentences) holds."""
        return self.text.translate(_FOLD).lower()

    @cached_property
    def quick(self) -> dict[int, tuple[re.Pattern[str], bool]]:
        """`may_match` of whole reports, remembered per pattern (by its id, with the pattern)."""
        return {}

    @cached_property
    def sentences(self) -> tuple[tuple[int, int], ...]:
        """(start, end) of each unit (`mappings.units`); a unit cut after a title ("Prof.",
        "Dr.") goes on in the next one."""
        merged: list[tuple[int, int]] = []
        for start, end in unit_spans(self.raw):
            if (
                merged
                and _TITLE_END.search(self.raw, max(0, merged[-1][1] - _TITLE_REACH), merged[-1][1])
                and self.raw[merged[-1][1] : start].strip() in (".", "")
            ):
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return tuple(merged)

    @cached_property
    def title_end(self) -> int:
        """The end of the report's first line when that line is the exam's title ("LOW-DOSE CT
        LUNG CANCER SCREENING, ANNUAL"): more lines follow, and it is short, without a label
        (":") or a full stop; else 0."""
        stripped = self.raw.lstrip()
        lead = len(self.raw) - len(stripped)
        line_end = self.raw.find("\n", lead)
        if line_end < 0 or not self.raw[line_end:].strip():
            return 0
        line = self.raw[lead:line_end].strip()
        if not line or ":" in line or line.endswith(".") or len(line.split()) > _TITLE_WORDS:
            return 0
        return line_end

    @cached_property
    def _sections(self) -> tuple[tuple[str, int, int], ...]:
        found = self.found_sections or find_sections(self.raw)
        return tuple((s.name, s.start, s.end) for s in found)

    def section_at(self, position: int) -> str | None:
        """The name of the section holding `position`, or None."""
        for name, start, end in self._sections:
            if start <= position < end:
                return name
        return None

    def in_sections(self, position: int, names: frozenset[str]) -> bool:
        """Whether `position` lies in the first line of text of a section called one of `names`
        (a history or comparison section runs to the end of its first line of text: sections
        are found by their headings only, and the labels that follow ("Composition:",
        "Right:") are not headings)."""
        for name, start, end in self._sections:
            if name not in names or not start <= position < end:
                continue
            colon = self.text.find(":", start, end)
            body = colon + 1 if colon >= 0 else start
            while body < end and self.text[body].isspace():
                body += 1
            line_end = self.text.find("\n", body, end)
            return position < (end if line_end < 0 else line_end)
        return False

    def sentence_at(self, position: int) -> tuple[int, int]:
        """The unit holding `position` (or the nearest following one)."""
        for start, end in self.sentences:
            if start <= position <= end:
                return start, end
            if start > position:
                return start, end
        return position, len(self.raw)

    def span(self, start: int, end: int) -> Span:
        """Evidence for `raw[start:end]`, trimmed of surrounding whitespace."""
        while start < end and self.raw[start].isspace():
            start += 1
        while end > start and self.raw[end - 1].isspace():
            end -= 1
        return Span(quote=self.raw[start:end], start=start, end=end)

    def after_label(self, start: int) -> int:
        """Past an inline label ("Advies:", "Empfehlung:") that opens the sentence at `start`."""
        match = INLINE_LABEL.match(self.text, start)
        return match.end() if match else start


def sides_in(text: str) -> set[str]:
    """The sides `text` names (left, right)."""
    found = set()
    if _LEFT.search(text):
        found.add("left")
    if _RIGHT.search(text):
        found.add("right")
    return found


def side_in(text: str, position: int) -> str | None:
    """The side word nearest to `position` in `text` (left/right), or None."""
    best: tuple[int, str] | None = None
    for pattern, side in ((_LEFT, "left"), (_RIGHT, "right")):
        for match in pattern.finditer(text):
            distance = abs(match.start() - position)
            if best is None or distance < best[0]:
                best = (distance, side)
    return best[1] if best else None


Anchors = tuple[tuple[str, ...], ...] | None
_ANCHORS: dict[int, tuple[re.Pattern[str], Anchors]] = {}
"""`anchors` per pattern, found by the pattern's id: hashing a compiled pattern hashes its whole
code (about 20 µs for a critical finding's), which a lookup per report and pattern would repeat.
Each entry keeps its pattern alive, so an id is not reused while it is here."""
_MAX_ANCHORED = 4096


def _minimal(group: tuple[str, ...]) -> tuple[str, ...]:
    """The strings of `group` that hold no other one: a text holds one of `group` exactly when
    it holds one of these ("pneu" for "pneumothorax", "pneumothora", "pneu")."""
    return tuple(s for s in group if not any(t != s and t in s for t in group))


def quick_anchors(pattern: re.Pattern[str]) -> Anchors:
    """`workers.insights.quick.anchors(pattern)` with each group reduced to its `_minimal`
    strings, remembered by the pattern's identity."""
    known = _ANCHORS.get(id(pattern))
    if known is None or known[0] is not pattern:
        if len(_ANCHORS) >= _MAX_ANCHORED:
            _ANCHORS.clear()  # patterns made at run time (many critical lists): start again
        groups = anchors(pattern)
        reduced = None if groups is None else tuple(_minimal(group) for group in groups)
        known = _ANCHORS[id(pattern)] = (pattern, reduced)
    return known[1]


def may_match(
    doc: ReportText, pattern: re.Pattern[str], start: int = 0, end: int | None = None
) -> bool:
    """False only when `pattern` cannot match in `text[start:end]` (a quick literal test
    before a slow scan; never changes what the scan finds)."""
    if start or end is not None:
        return holds(
            quick_anchors(pattern), doc.folded, start, len(doc.folded) if end is None else end
        )
    known = doc.quick.get(id(pattern))
    if known is None or known[0] is not pattern:
        found = holds(quick_anchors(pattern), doc.folded, 0, len(doc.folded))
        known = doc.quick[id(pattern)] = (pattern, found)
    return known[1]
