"""Find a model's evidence quote in the report text and return code-point offsets.

Matching is case-insensitive (Unicode case folding, so "GRÖSSE" finds "Größe"), treats any run
of whitespace (line breaks included) as one space, and ignores the difference between composed
and decomposed accents (NFC per character cluster). Offsets always point into the ORIGINAL
`Report.text`: `text[start:end]` is the matched passage as written. When the quote occurs more
than once, the FIRST occurrence wins (the quote alone cannot say which one the model meant).

`is_meaningful` refuses quotes too short to carry meaning: fewer than `MIN_QUOTE_CHARS` letters
or digits, or only bare verdict words ("no", "normal", "geen", "kein", "없음").

`mentions_any` is the relevance test: a quote is on topic when one of the variable's terms starts
at a word start inside it (same normalisation; "effusions" mentions "effusion"), or when a
content word of the quote (4+ letters, not a verdict or laterality word) is a word of a term or
starts with one of 5+ letters ("Cor niet vergroot" shares "vergroot" with "vergroot hart").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MIN_QUOTE_CHARS = 3
_WORD = re.compile(r"\w+", re.UNICODE)
VERDICT_WORDS = frozenset(
    {
        # en
        "no", "not", "none", "nil", "normal", "yes", "present", "absent", "negative", "positive",
        "seen", "noted", "the", "of", "and", "with", "without",
        # nl
        "geen", "niet", "normaal", "wel", "met", "zonder", "van", "de", "het",
        # de
        "kein", "keine", "nicht", "unauffällig", "ohne", "mit", "der", "die", "das",
        # ko
        "없음", "없다", "있음", "정상",
    }
)  # fmt: skip


def _clusters(text: str) -> list[tuple[int, int]]:
    """(start, end) of each base character with its combining marks."""
    spans: list[tuple[int, int]] = []
    for index, char in enumerate(text):
        if spans and unicodedata.combining(char):
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


def _normalise(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Folded text with whitespace runs collapsed, and each output char's source span."""
    chars: list[str] = []
    sources: list[tuple[int, int]] = []
    for start, end in _clusters(text):
        cluster = text[start:end]
        if cluster.isspace():
            if chars and chars[-1] != " ":
                chars.append(" ")
                sources.append((start, end))
            continue
        for folded in unicodedata.normalize("NFC", cluster).casefold():
            chars.append(folded)
            sources.append((start, end))
    while chars and chars[-1] == " ":
        chars.pop()
        sources.pop()
    return "".join(chars), sources


def is_meaningful(quote: str) -> bool:
    """True when a quote has enough letters/digits and a word beyond bare verdicts."""
    words = [word.casefold() for word in _WORD.findall(quote)]
    characters = sum(len(word) for word in words)
    return characters >= MIN_QUOTE_CHARS and any(word not in VERDICT_WORDS for word in words)


def locate_quote(text: str, quote: str) -> tuple[int, int] | None:
    """(start, end) code-point offsets of the first occurrence of `quote` in `text`, or None.

    Case, whitespace and accent composition are normalised on both sides; an empty or
    whitespace-only quote is never found.
    """
    needle, _ = _normalise(quote)
    if not needle:
        return None
    haystack, sources = _normalise(text)
    found = haystack.find(needle)
    if found < 0:
        return None
    return sources[found][0], sources[found + len(needle) - 1][1]


GENERIC_WORDS = frozenset(
    {
        "left", "right", "both", "bilateral", "side", "sided", "mild", "small", "large",
        "links", "rechts", "linker", "rechter", "beide", "beiderzijds", "bilateraal", "klein",
        "linke", "rechte", "beidseits", "beidseitig", "gering", "leicht", "groß",
    }
)  # fmt: skip


def _content_words(text: str) -> set[str]:
    return {
        word
        for word in _WORD.findall(text)
        if len(word) >= 4 and word not in VERDICT_WORDS and word not in GENERIC_WORDS
    }


def _same_word(a: str, b: str) -> bool:
    shorter, longer = sorted((a, b), key=len)
    return a == b or (len(shorter) >= 5 and longer.startswith(shorter))


def mentions_any(quote: str, terms: Iterable[str]) -> bool:
    """True when `quote` names one of `terms` (see module docstring; normalised)."""
    haystack, _ = _normalise(quote)
    quote_words = _content_words(haystack)
    for term in terms:
        needle, _ = _normalise(term)
        if not needle:
            continue
        position = haystack.find(needle)
        while position >= 0:
            if position == 0 or not haystack[position - 1].isalnum():
                return True
            position = haystack.find(needle, position + 1)
        if any(_same_word(q, t) for q in quote_words for t in _content_words(needle)):
            return True
    return False
