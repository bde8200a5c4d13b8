"""A small stop-word language guess for report text: en, nl, de, or ko for Hangul-heavy text."""

from __future__ import annotations

import re

_WORDS = re.compile(r"[^\W\d_]+", re.UNICODE)
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "and",
            "of",
            "with",
            "no",
            "is",
            "are",
            "there",
            "in",
            "to",
            "for",
            "on",
            "at",
            "as",
            "be",
            "was",
            "were",
            "this",
            "that",
            "or",
            "without",
            "not",
            "seen",
            "right",
            "left",
            "findings",
            "impression",
            "noted",
            "evidence",
        ]
    ),
    "nl": frozenset(
        [
            "de",
            "het",
            "een",
            "en",
            "van",
            "met",
            "geen",
            "is",
            "zijn",
            "er",
            "in",
            "op",
            "te",
            "voor",
            "bij",
            "als",
            "niet",
            "of",
            "zonder",
            "wordt",
            "rechts",
            "links",
            "bevindingen",
            "conclusie",
            "beiderzijds",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "und",
            "von",
            "mit",
            "kein",
            "keine",
            "ist",
            "sind",
            "es",
            "im",
            "in",
            "auf",
            "zu",
            "für",
            "bei",
            "nicht",
            "oder",
            "ohne",
            "wird",
            "rechts",
            "links",
            "befund",
            "beurteilung",
            "beidseits",
        ]
    ),
}
MIN_HITS = 3
HANGUL_SHARE = 0.15


def _is_hangul(char: str) -> bool:
    return (
        "\uac00" <= char <= "\ud7a3" or "\u1100" <= char <= "\u11ff" or "\u3130" <= char <= "\u318f"
    )


def detect_language(text: str, default: str = "en") -> str:
    """BCP-47 primary tag of the report language, or `default` when unsure."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(1 for c in letters if _is_hangul(c)) / len(letters) >= HANGUL_SHARE:
        return "ko"
    words = [w.lower() for w in _WORDS.findall(text)]
    scores = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] < MIN_HITS or ranked[0] == ranked[1]:
        return default
    return best
