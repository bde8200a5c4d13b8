"""The text primitives of stage 1, shared by `workers.rules_stage` and its helpers.

`terms_pattern` turns lexicon terms into one whole-word regex (longest first; a trailing `*` marks
a stem; any run of spaces or tabs between its words), `clauses` splits a report into clauses (the
units of `mappings.units`, cut at contrast words: "but", "maar", "aber"; the rules stage reads
the text as `mappings.units.flowed` gives it: a line wrapped inside a sentence reads as one
line, same offsets), and `mention_status` is the ConText assertion of one
mention (`workers.context.assess`). `workers.anatomy`, `workers.organs`, `workers.states` and
`workers.rules_stage` import them from here; this module imports none of them.
"""

from __future__ import annotations

import functools
import re

from mappings.report import FindingStatus
from mappings.units import flowed, unit_spans

_CONTRAST = re.compile(r"\b(?:but|however|although|maar|echter|aber|jedoch)\b", re.IGNORECASE)

_RIGHT_BOUNDARY = r"(?![0-9A-Za-zÀ-ÖØ-öø-ÿ_])"


def _alternative(term: str) -> str:
    """A term as a regex: a trailing `*` makes it a stem ("atelecta*": atelectasis, -tic)."""
    if term.endswith("*"):
        return _spaced(term[:-1]) + r"\w*"
    return _spaced(term)


def _spaced(term: str) -> str:
    """A term as a regex whose spaces match any run of spaces or tabs: a line wrapped inside the
    term reads as a space, indentation and trailing blanks included ("pleural \\n  effusion")."""
    return r"[ \t]+".join(re.escape(word) for word in term.split(" "))


@functools.lru_cache(maxsize=4096)
def terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for any of `terms` as whole words (longest first; `*` marks a stem)."""
    alternatives = sorted({t.lower() for t in terms if t}, key=len, reverse=True)
    if not alternatives:
        return re.compile(r"(?!x)x")  # matches nothing
    # The right boundary only refuses Latin letters and digits: Korean particles attach to the
    # term ("RLL에", "nodule이나", "결절이나") and must not hide it.
    return re.compile(
        r"(?<!\w)(?:" + "|".join(_alternative(a) for a in alternatives) + r")" + _RIGHT_BOUNDARY,
        re.IGNORECASE,
    )


@functools.lru_cache(maxsize=256)
def _clauses(text: str) -> tuple[tuple[int, int], ...]:
    flow = flowed(text)
    spans: list[tuple[int, int]] = []
    for unit_start, unit_end in unit_spans(text):
        position = unit_start
        for match in [*_CONTRAST.finditer(flow, unit_start, unit_end), None]:
            end = match.start() if match else unit_end
            segment = flow[position:end]
            stripped = segment.strip()
            if stripped:
                start = position + (len(segment) - len(segment.lstrip()))
                spans.append((start, start + len(stripped)))
            position = match.end() if match else unit_end
    return tuple(spans)


def clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) of each clause of the report text `text` (as received, not `mappings.units.flowed`): its
    units (`mappings.units.unit_spans`) cut at contrast words, whitespace excluded."""
    return list(_clauses(text))


def mention_status(
    clause: str, mention_start: int, mention_end: int, probable_present: bool = False
) -> FindingStatus | None:
    """The ConText assertion of a span of a clause; None when it is about someone else (it does
    not vote). With `probable_present` (the template's `probable_existence: present`) a strongly
    hedged, not hypothetical mention is present."""
    from workers.context import assess

    result = assess(clause, mention_start, mention_end)
    if result.other_experiencer:
        return None
    if result.negated:
        return FindingStatus.ABSENT
    if probable_present and result.probable and not result.hypothetical:
        return FindingStatus.PRESENT
    if result.uncertain or result.hypothetical:
        return FindingStatus.UNCERTAIN
    return FindingStatus.PRESENT
