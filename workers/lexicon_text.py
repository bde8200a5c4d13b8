"""The text primitives of stage 1, shared by `workers.lexical` and its helpers.

`terms_pattern` turns lexicon terms into one whole-word regex (longest first; a trailing `*` marks
a stem), `clauses` splits a report into clauses (sentence ends, semicolons, line breaks and
contrast words: "but", "maar", "aber"), and `mention_status` is the ConText assertion of one
mention (`workers.context.assess`). `workers.anatomy`, `workers.organs`, `workers.states` and
`workers.lexical` import them from here; this module imports none of them.
"""

from __future__ import annotations

import functools
import re

from mappings.report import FindingStatus

_CLAUSE_BREAK = re.compile(
    r"(?<!\b[Cc]a)(?<!\bz\.B)(?<!\b[RrLl]t)(?<!\b[Vv]\.a)\.(?=\s|$)|[;\n]|\b(?:but|however|although|maar|echter|aber|jedoch)\b",
    re.IGNORECASE,
)

_RIGHT_BOUNDARY = r"(?![0-9A-Za-zÀ-ÖØ-öø-ÿ_])"


def _alternative(term: str) -> str:
    """A term as a regex: a trailing `*` makes it a stem ("atelecta*": atelectasis, -tic)."""
    if term.endswith("*"):
        return re.escape(term[:-1]) + r"\w*"
    return re.escape(term)


@functools.lru_cache(maxsize=4096)
def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = sorted({t.lower() for t in terms if t}, key=len, reverse=True)
    if not alternatives:
        return re.compile(r"(?!x)x")  # matches nothing
    # The right boundary only refuses Latin letters and digits: Korean particles attach to the
    # term ("RLL에", "nodule이나", "결절이나") and must not hide it.
    return re.compile(
        r"(?<!\w)(?:" + "|".join(_alternative(a) for a in alternatives) + r")" + _RIGHT_BOUNDARY,
        re.IGNORECASE,
    )


def terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for any of `terms` as whole words (longest first; `*` marks a stem)."""
    return _terms_pattern(terms)


def clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) of each clause, leading/trailing whitespace excluded."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in [*_CLAUSE_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        segment = text[position:end]
        stripped = segment.strip()
        if stripped:
            start = position + (len(segment) - len(segment.lstrip()))
            spans.append((start, start + len(stripped)))
        position = match.end() if match else len(text)
    return spans


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
