"""Sides stated for a finding: "right renal calculus", "linker nier", "beidseits Hydronephrose".

A finding's side is read from the clause its mention was asserted in (the ConText unit, as for
sizes): English, Dutch and German words for right, left and bilateral ("both", "beiderzijds",
"beidseits"). A clause that says bilateral gives `bilateral` alone; one that names right and left
gives both. A finding whose clauses state no side takes the side of a one-sided exam title
(`exam_side`: "XR LEFT WRIST", "Knie rechts a.p.", "RX knie links staand"). Only the side ids the template's `side` attribute declares are kept (head CT's
`midline` has no rule yet: its words are not side words).
"""

from __future__ import annotations

import re
from collections.abc import Collection

_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "bilateral",
        re.compile(
            r"\b(?:bilateral\w*|both|bilater\w*|beiderzijds|dubbelzijdig\w*|beide[nr]?\b"
            r"|beidseit\w*|bds\.)",
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


def clause_sides(text: str, start: int, end: int, allowed: Collection[str]) -> tuple[str, ...]:
    """The sides `text[start:end]` states, in the order bilateral, right, left, limited to
    `allowed`; bilateral alone when stated."""
    clause = text[start:end]
    found = [side for side, pattern in _WORDS if side in allowed and pattern.search(clause)]
    if "bilateral" in found:
        return ("bilateral",)
    return tuple(found)


def exam_side(title: str, allowed: Collection[str]) -> str | None:
    """The one side (right or left) an exam title names, else None."""
    named = [side for side in clause_sides(title, 0, len(title), allowed) if side != "bilateral"]
    return (
        named[0]
        if len(named) == 1 and len(clause_sides(title, 0, len(title), allowed)) == 1
        else None
    )
