"""Organ qualifiers: a finding of another organ never becomes a finding of the template's organ.

A template's `organ_qualifiers` (`mappings.template.OrganQualifiers`) names the variables it
guards ("nodule", "mass"), words of other organs ("thyroid", "renal", "chest wall", "갑상선") and
words of its own organ ("pulmonary", "lobe", "폐"). A guarded mention is about another organ when
an other-organ word qualifies it and no own-organ word does:

- **before it**, in its noun phrase: the words back to the last punctuation, article or verb
  ("a 2.1 cm left adrenal nodule", "No thyroid or adrenal nodules"), or a heading that opens
  the clause ("Thyroid: 1.2 cm nodule");
  a coordinated own-organ word keeps it ("no pulmonary or adrenal nodules");
- **after it**, in a prepositional phrase: "nodule in the left thyroid lobe", "mass arising from
  the chest wall", "lesion of the right kidney";
- **Korean**, where the site comes first: an other-organ word earlier in the clause with no
  own-organ word or lung site between ("갑상선 좌엽에 1.5 cm 결절", "좌측 부신 결절").

A site of the template's own organ stated right after the mention ("... calcifications and a
dense nodule in the lingula") decides first: the mention is a lung finding.

The words are data (the template YAML); this module only knows English and Korean grammar.
"""

from __future__ import annotations

import re

from mappings.template import OrganQualifiers, Template
from workers.lexicon_text import terms_pattern

_LOOK_BACK = 60
"""Most characters of noun phrase read before a mention."""
_LOOK_AHEAD = 45
"""Most characters of prepositional phrase read after a mention."""
# Where an English noun phrase before a mention starts: punctuation, an article, a verb or a
# preposition ("there is a", "seen in", "with"); "or"/"and" join modifiers and do not stop it.
_PHRASE_START = re.compile(
    r"[,;:()\[\]]|\b(?:a|an|the|is|are|was|were|with|without|in|of|at|on|from|within|"
    r"there|seen|noted|shows?|demonstrates?|reveals?)\b",
    re.IGNORECASE,
)
_PREPOSITION = re.compile(
    r"\s*(?:\([^)]*\)\s*)?,?\s*(?:(?:located|seen|arising|originating|situated)\s+)?"
    r"(?:in|of|within|from|involving|along|at)\s",
    re.IGNORECASE,
)
_PHRASE_END = re.compile(r"[,;:()]|\b(?:and|with|which|that)\b", re.IGNORECASE)
_HEADING = re.compile(r"\s*([^:.;\n]{1,30}):")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _words(phrases: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(word for words in phrases.values() for word in words)


def _qualified(text: str, organs: OrganQualifiers, own_sites: re.Pattern[str]) -> bool:
    """True when `text` names another organ and not the template's own."""
    if not terms_pattern(_words(organs.other)).search(text):
        return False
    own = terms_pattern(_words(organs.own))
    return not own.search(text) and not own_sites.search(text)


def _noun_phrase_before(clause: str, start: int) -> str:
    window = clause[max(0, start - _LOOK_BACK) : start]
    cut = 0
    for match in _PHRASE_START.finditer(window):
        cut = match.end()
    return window[cut:]


def _phrase_after(clause: str, end: int) -> str | None:
    window = clause[end : end + _LOOK_AHEAD]
    preposition = _PREPOSITION.match(window)
    if preposition is None:
        return None
    rest = window[preposition.end() :]
    stop = _PHRASE_END.search(rest)
    return rest[: stop.start()] if stop else rest


def _korean_before(clause: str, start: int, organs: OrganQualifiers) -> str | None:
    """The clause text from the last other-organ word before the mention, Korean reports only."""
    before = clause[max(0, start - _LOOK_BACK) : start]
    if not _HANGUL.search(before):
        return None
    last = None
    for match in terms_pattern(_words(organs.other)).finditer(before):
        last = match
    return before[last.start() :] if last else None


def _own_sites(template: Template) -> re.Pattern[str]:
    """Synonyms of the template's own sites that are not bare sides ("RUL", "우상엽", "lingula")."""
    words = tuple(
        word
        for location in template.locations
        if location.part_of is not None or location.expands_to
        for words in location.synonyms.values()
        for word in words
    )
    return terms_pattern(words)


def other_organ(template: Template, variable_id: str, clause: str, start: int, end: int) -> bool:
    """True when the mention clause[start:end] of the variable is about another organ."""
    organs = template.organ_qualifiers
    if organs is None or variable_id not in organs.variables:
        return False
    sites = _own_sites(template)
    after = _phrase_after(clause, end)
    if after is not None and sites.search(after):
        return False  # "calcifications and a nodule in the lingula": the site decides
    if _qualified(_noun_phrase_before(clause, start), organs, sites):
        return True
    heading = _HEADING.match(clause[:start])
    if heading is not None and _qualified(heading.group(1), organs, sites):
        return True  # "Thyroid: 1.2 cm nodule"
    if after is not None and _qualified(after, organs, sites):
        return True
    korean = _korean_before(clause, start, organs)
    return korean is not None and _qualified(korean, organs, sites)
