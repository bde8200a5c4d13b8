"""Sides stated for a finding: "right renal calculus", "linker nier", "beidseits Hydronephrose".

A finding's side is read from the clause its mention was asserted in (the ConText unit, as for
sizes), nearest first: the clause is cut into segments at commas, semicolons, brackets and the
words "and", "with", "en", "met", "und", "mit" …, and a side word belongs to the finding mentioned
in its own segment ("SDH rechts, EDH links": right for the SDH, left for the EDH). A segment
that mentions no finding gives its sides to the nearest segment before it that does ("subdural
haematomas, 12 mm on the right and 10 mm on the left"), else to the next one ("On the left the
collection …, consistent with a subdural haematoma"); a finding without a side word of its own
joined by "with" to a finding with one shares its side ("EDH rechts frontaal met fractuur"), and
joined by "and" when the side word stands in front of that finding ("Right parietal EDH and
fracture", not "SDH rechts, EDH links und intraventrikuläres Blut"). A side word
that says where the midline is shifted to ("midline shift to the left", "naar rechts", "nach
links") is a direction, not a side. Right and left in one segment ("rechts meer dan links") or a
both-sides word ("both", "beiderzijds", "beidseits", "bifrontal") are `bilateral`; a finding
described once per side ("bilateral haematomas, 12 mm on the right and 10 mm on the left") has
the two sides. A finding whose clauses state no side takes the side of a one-sided exam title
that names a body part of the template (`exam_side`: "XR LEFT WRIST", "Knie rechts a.p.",
"RX knie links staand", "L knee 2v"); failing that, `workers.rules_stage` gives a finding with no
site of its own the one side of the nearest earlier finding clause ("Left TKA. Loosening of the
tibial component."). Only the side ids the template's `side` attribute declares
are kept (head CT's `midline` has no rule yet: its words are not side words).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

Span = tuple[int, int]

_BILATERAL = "bilateral"
_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        _BILATERAL,
        re.compile(
            r"\b(?:bilateral\w*|both|bilater\w*|beiderzijds|dubbelzijdig\w*|beide[nr]?\b"
            r"|beidseit\w*|bds\.|bi(?:frontal|temporal|parietal|pariëtal|occipital|okzipital)\w*)"
            # "in beiden Ebenen", "on both views", "in beide richtingen": views, not sides
            r"(?!\s+(?:views|projections|planes|Ebenen|Projektionen|richtingen|opnamen|projecties))",
            re.IGNORECASE,
        ),
    ),
    (
        "right",
        re.compile(
            r"\b(?:right|rechts\w*|rechte[rnms]?|rechterzijde|recht(?:s|er)zijd\w*)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "left",
        re.compile(
            r"\b(?:left|links\w*|linke[rnms]?|linkerzijde|link(?:s|er)zijd\w*)\b",
            re.IGNORECASE,
        ),
    ),
)
# One-letter sides of exam titles only ("L knee 2v", "XR KNEE R").
_TITLE_LETTERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("right", re.compile(r"(?<![\w/-])R(?![\w/-])")),
    ("left", re.compile(r"(?<![\w/-])L(?![\w/-])")),
)
# Where a segment of a clause ends: punctuation and the words that join two statements.
_SEPARATOR = re.compile(
    r"[,;:()]|\b(?:and|or|with|but|whereas|while|plus|en|met|maar|und|oder|mit|aber|sowie)\b",
    re.IGNORECASE,
)
# Separators after which a finding shares the side of the finding before it: "with" always
# ("EDH rechts frontaal met fractuur"), "and" when the side stands in front of that finding
# ("Right parietal EDH and fracture", not "SDH rechts, EDH links und intraventrikuläres Blut").
_WITH = re.compile(r"^(?:with|met|mit)$", re.IGNORECASE)
_COORDINATION = re.compile(r"^(?:and|or|en|und|oder)$", re.IGNORECASE)
# "shift to the left", "naar rechts", "nach links": the direction of a shift, not a side.
_DIRECTION = re.compile(
    r"(?:\bto(?:wards?)?\s+(?:the\s+)?|\btoward\s+(?:the\s+)?|\bnaar\s+(?:de\s+)?|\bnach\s+)$",
    re.IGNORECASE,
)


def clause_sides(text: str, start: int, end: int, allowed: Collection[str]) -> tuple[str, ...]:
    """The sides `text[start:end]` states, in the order bilateral, right, left, limited to
    `allowed`; bilateral alone when stated."""
    clause = text[start:end]
    found = [side for side, pattern in _WORDS if side in allowed and pattern.search(clause)]
    if _BILATERAL in found:
        return (_BILATERAL,)
    return tuple(found)


def _side_words(clause: str, allowed: Collection[str]) -> list[tuple[int, str]]:
    """(offset, side) of every side word of `clause` that is not a shift's direction."""
    words = [
        (match.start(), side)
        for side, pattern in _WORDS
        if side in allowed
        for match in pattern.finditer(clause)
        if not _DIRECTION.search(clause[: match.start()])
    ]
    return sorted(words)


def _segments(clause: str) -> list[tuple[int, int, str]]:
    """(start, end, separator before it) of the non-blank segments of `clause` (the last
    segment may be blank)."""
    segments: list[tuple[int, int, str]] = []
    start, before = 0, ""
    for match in _SEPARATOR.finditer(clause):
        if clause[start : match.start()].strip():
            segments.append((start, match.start(), before))
            before = match.group(0)
        elif match.group(0)[0].isalpha():  # ", with": the word joins the two segments
            before = match.group(0)
        start = match.end()
    segments.append((start, len(clause), before))
    return segments


def _segment_side(sides: Sequence[str]) -> str | None:
    """One segment's side: bilateral for a both-sides word or for right and left together."""
    if not sides:
        return None
    if _BILATERAL in sides or len(set(sides)) > 1:
        return _BILATERAL
    return sides[0]


def finding_sides(
    text: str, clause: Span, mention: Span, mentions: Collection[Span], allowed: Collection[str]
) -> tuple[str, ...]:
    """The sides the clause `text[clause]` states for the finding mentioned at `mention`, given
    every finding mention of the clause (`mentions`, any finding, any assertion); limited to
    `allowed`."""
    body = text[clause[0] : clause[1]]
    words = _side_words(body, allowed)
    if not words:
        return ()
    starts = sorted({start - clause[0] for start, _end in mentions} | {mention[0] - clause[0]})
    segments = _segments(body)
    own: list[str | None] = []
    first_word: list[int | None] = []
    named: list[int | None] = []
    for seg_start, seg_end, _before in segments:
        own.append(_segment_side([side for at, side in words if seg_start <= at < seg_end]))
        first_word.append(next((at for at, _side in words if seg_start <= at < seg_end), None))
        named.append(next((at for at in starts if seg_start <= at < seg_end), None))
    here = next(
        index
        for index, (seg_start, seg_end, _before) in enumerate(segments)
        if seg_start <= mention[0] - clause[0] < seg_end or index == len(segments) - 1
    )
    # each segment's sides: its own, else those it shares with the finding before it
    shared: list[str | None] = list(own)
    front: list[bool] = [  # the side word stands in front of the segment's finding
        at is not None and mentioned is not None and at < mentioned
        for at, mentioned in zip(first_word, named, strict=True)
    ]
    for index in range(1, len(segments)):
        if named[index] is None or shared[index] is not None:
            continue
        joined = segments[index][2]
        before = next((i for i in range(index - 1, -1, -1) if named[i] is not None), None)
        if before is None or shared[before] is None:
            continue
        if _WITH.match(joined) or (_COORDINATION.match(joined) and front[before]):
            shared[index], front[index] = shared[before], front[before]
    stated: list[str] = [] if shared[here] is None else [shared[here] or ""]
    for index, side in enumerate(own):
        if side is None or named[index] is not None:
            continue
        if body[segments[index][1] : segments[index][1] + 1] == ":":  # "RIGHT BREAST: …"
            if index < here and own[here] is None:
                stated.append(side)
            continue
        owner = next((i for i in range(index - 1, -1, -1) if named[i] is not None), None)
        if owner is None:
            owner = next((i for i in range(index + 1, len(segments)) if named[i] is not None), None)
        if owner == here:
            stated.append(side)
    return combined_sides(stated, absorb=True)


def combined_sides(stated: Iterable[str], *, absorb: bool) -> tuple[str, ...]:
    """Sides in order, each once. Right and left both stated are the two sides (a finding
    described per side, "bilateral haematomas, 12 mm right and 10 mm left"); else with `absorb`
    (the sides of one clause) a bilateral statement is `bilateral` alone ("bilateral, worse on
    the right"), without it (over several clauses) it stays beside the other side ("bilateral
    DIP osteoarthritis. CMC-1 osteoarthritis on the left")."""
    ordered: list[str] = []
    for side in stated:
        if side not in ordered:
            ordered.append(side)
    if "right" in ordered and "left" in ordered:
        return tuple(side for side in ordered if side != _BILATERAL)
    if absorb and _BILATERAL in ordered:
        return (_BILATERAL,)
    return tuple(ordered)


def report_title(text: str) -> str:
    """The report's first line up to its first ":" or the end of its first sentence."""
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    match = re.search(r":|\.(?:\s|$)", text[start:end])
    return text[start : start + match.start()] if match else text[start:end]


def exam_side(
    title: str, allowed: Collection[str], body_parts: Collection[str] | None = None
) -> str | None:
    """The one side (right or left) an exam title names, else None; with `body_parts`, only a
    title naming one of them (a word starting with it: "Kniegelenk", "knees") has a side."""
    if body_parts is not None and not any(
        re.search(rf"\b{re.escape(part)}", title, re.IGNORECASE) for part in body_parts
    ):
        return None
    stated = clause_sides(title, 0, len(title), allowed)
    if not stated:
        stated = tuple(
            side for side, pattern in _TITLE_LETTERS if side in allowed and pattern.search(title)
        )
    named = [side for side in stated if side != _BILATERAL]
    return named[0] if len(named) == 1 and len(stated) == 1 else None
