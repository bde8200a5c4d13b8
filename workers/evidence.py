"""Find a model's evidence quote in the report text and return code-point offsets.

Matching ignores case and collapses runs of whitespace (line breaks included); offsets map back
to the original `Report.text`. The first occurrence wins. Quotes too short to carry meaning
("no", "normal") are refused.
"""

from __future__ import annotations

import re

MIN_QUOTE_LETTERS = 4
_WORD = re.compile(r"\w+", re.UNICODE)
MEANINGLESS_WORDS = frozenset(
    {
        "no", "not", "none", "normal", "yes", "present", "absent", "negative", "positive",
        "geen", "niet", "normaal", "kein", "keine", "nicht", "unauffällig", "null",
    }
)  # fmt: skip


def _normalise(text: str) -> tuple[str, list[int]]:
    """Lower-cased text with whitespace runs collapsed, and each output char's source index."""
    chars: list[str] = []
    index: list[int] = []
    in_space = False
    for position, char in enumerate(text):
        if char.isspace():
            if not in_space and chars:
                chars.append(" ")
                index.append(position)
            in_space = True
            continue
        in_space = False
        for lowered in char.lower():
            chars.append(lowered)
            index.append(position)
    while chars and chars[-1] == " ":
        chars.pop()
        index.pop()
    return "".join(chars), index


def is_meaningful(quote: str) -> bool:
    """True when a quote has enough letters and at least one word beyond bare verdicts."""
    words = [w.lower() for w in _WORD.findall(quote)]
    letters = sum(len(w) for w in words)
    return letters >= MIN_QUOTE_LETTERS and any(w not in MEANINGLESS_WORDS for w in words)


def locate_quote(text: str, quote: str) -> tuple[int, int] | None:
    """(start, end) of `quote` in `text` (case/whitespace-insensitive), or None."""
    needle, _ = _normalise(quote)
    if not needle:
        return None
    haystack, index = _normalise(text)
    found = haystack.find(needle)
    if found < 0:
        return None
    start = index[found]
    end = index[found + len(needle) - 1] + 1
    return start, end
