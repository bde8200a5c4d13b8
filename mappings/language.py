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


# the Hangul letters (syllables, jamo, compatibility jamo): every assigned code point of these
# blocks is a letter (`str.isalpha`)
_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3131-\u318e]")


def detect_language(text: str, default: str = "en") -> str:
    """BCP-47 primary tag of the report language, or `default` when unsure.

    The text is read as a stream: no list of its letters or words is built, so a report of
    several megabytes costs no more memory than its own text."""
    hangul = sum(1 for _ in _HANGUL.finditer(text))
    if hangul and hangul / sum(map(str.isalpha, text)) >= HANGUL_SHARE:
        return "ko"
    scores = dict.fromkeys(_STOPWORDS, 0)
    for match in _WORDS.finditer(text):
        word = match.group().lower()
        for lang, stop in _STOPWORDS.items():
            if word in stop:
                scores[lang] += 1
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] < MIN_HITS or ranked[0] == ranked[1]:
        return default
    return best
