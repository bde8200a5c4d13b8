"""Grades and severities stated for a finding: "KL 3", "grade II hydronephrosis", "Harnstau I°",
"graad 3 volgens Kellgren-Lawrence", "matige gonartrose", "geringgradige Coxarthrose".

A grade attribute is one a template declares and a presence variable names (`attributes`):
- an integer attribute whose label names a grade ("Grade", "Kellgren-Lawrence grade", "Fazekas
  grade") takes a number (0-9 or a Roman numeral I-V, within the attribute's scale) written after
  a grade word (grade, graad, Grad) or after the grading system's name from the label
  ("Kellgren-Lawrence", "Kellgren", its initials "KL", "Fazekas"), or before "°" ("I°"),
  "-gradig" or "Grades" ("II.-gradig", "zweitgradig", "II. Grades", "zweiten Grades");
- an enum attribute whose options are `mild`, `moderate`, `severe` takes the severity word of the
  template's definition in English, Dutch and German (minimal/slight/gering/licht = mild;
  moderate/matig/mäßig/mittelgradig = moderate; marked/ausgeprägt/fors/uitgesproken/hochgradig =
  severe; "early"/"beginnend" is a stage, not a severity), the one nearest to the finding's
  mention in its clause; a size word (small/klein = mild, large/groot/groß = severe) only as
  the finding's own adjective.
Both are read from the clause the mention was asserted in (the ConText unit, as for sizes and
sides) and kept as written (`StatedGrade.text`): no code is given to a grade (none is verified;
mild/moderate/severe keep the option codes the template cites).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mappings.report import Evidence, StatedGrade
from mappings.template import Attribute, AttributeType, Template, Variable

SEVERITY_OPTIONS = frozenset({"mild", "moderate", "severe"})
SEVERITY_WINDOW = 60
"""At most this many characters between a severity word and the finding's mention."""

_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5}
_ORDINAL_WORDS = {"erst": 1, "zweit": 2, "dritt": 3, "viert": 4}
_NUMBER = r"(?P<num>IV|V|I{1,3}|\d)(?![\d.,]\d)(?!\s*(?:mm|cm|%|x\b))\b"
_GRADE_WORDS = r"(?:grade|graad|grad)"
_AFTER = re.compile(r"(?P<num>IV|V|I{1,3}|\d)\.?\s*(?:°|-?\s*gradig|Grades\b)", re.IGNORECASE)
_WORD_ORDINAL = re.compile(
    r"\b(?P<word>erst|zweit|dritt|viert)(?:gradig|en\s+Grades\b)", re.IGNORECASE
)

_SEVERITY: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "moderate",
        re.compile(
            r"\b(?:moderate(?:ly)?|matig\w*|m(?:ä|ae)(?:ß|ss)ig\w*|mittelgradig\w*|mittelschwer\w*)",
            re.IGNORECASE,
        ),
    ),
    (
        "severe",
        re.compile(
            r"\b(?:severe(?:ly)?|marked(?:ly)?|forse?|uitgesproken\w*|ernstig\w*"
            r"|ausgepr(?:ä|ae)gt\w*|hochgradig\w*|schwer(?:e[nmrs]?|gradig\w*)?)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "mild",
        re.compile(
            r"\b(?:mild(?:ly|e)?|minimal\w*|minima(?:al|le)|slight(?:ly)?|discrete|discre(?:et|te)"
            r"|licht(?:e|gradig\w*)?|leicht(?:e[nmrs]?|gradig\w*)?|gering\w*|diskret\w*)\b",
            re.IGNORECASE,
        ),
    ),
)
_AMOUNT: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "severe",
        re.compile(r"\b(?:large|groot|grote|ausgedehnt\w*|gro(?:ß|ss)(?:e[nmrs]?)?)\b", re.I),
    ),
    ("mild", re.compile(r"\b(?:small|klein(?:e[nmrs]?)?)\b", re.IGNORECASE)),
)
"""Size words are a severity only as the finding's own adjective ("small joint effusion", "groot
hydrops"): right before its mention, at most one word between (`_ADJECTIVE_GAP`)."""
_ADJECTIVE_GAP = re.compile(r"\s*(?:[^\W\d]+\s+)?", re.UNICODE)


def is_grade(attribute: Attribute) -> bool:
    """True for an integer attribute whose label names a grade."""
    return (
        attribute.type is AttributeType.INTEGER
        and attribute.scale is not None
        and "grade" in attribute.label.lower()
    )


def is_severity(attribute: Attribute) -> bool:
    """True for an enum attribute whose options are mild, moderate and severe."""
    ids = {option.id for option in attribute.options}
    return attribute.type is AttributeType.ENUM and bool(ids) and ids <= SEVERITY_OPTIONS


def grade_attributes(template: Template, variable: Variable) -> tuple[Attribute, ...]:
    """The grade and severity attributes a variable carries, in its order."""
    found: list[Attribute] = []
    for attribute_id in variable.attributes:
        try:
            attribute = template.attribute(attribute_id)
        except KeyError:
            continue
        if is_grade(attribute) or is_severity(attribute):
            found.append(attribute)
    return tuple(found)


def _system_names(attribute: Attribute) -> list[str]:
    """The grading system's names in the label ("Kellgren-Lawrence" -> itself, "Kellgren", "KL")."""
    names: list[str] = []
    for word in attribute.label.split():
        if word.lower() == "grade":
            continue
        names.append(word)
        parts = [p for p in word.split("-") if p]
        if len(parts) > 1:
            names.append(parts[0])
            names.append("".join(p[0] for p in parts).upper())
    return names


def _number(text: str) -> int:
    return _ROMAN[text.upper()] if text.upper() in _ROMAN else int(text)


def _grade_pattern(attribute: Attribute) -> re.Pattern[str]:
    names = sorted(_system_names(attribute), key=len, reverse=True)
    system = "|".join(re.escape(name) for name in names)
    marker = (
        rf"(?:(?:{system})(?:[\s-]*{_GRADE_WORDS})?|{_GRADE_WORDS})" if system else _GRADE_WORDS
    )
    return re.compile(rf"\b{marker}\s*[:=]?\s*-?\s*{_NUMBER}", re.IGNORECASE)


def _integer_hits(clause: str, attribute: Attribute) -> list[tuple[int, int, int]]:
    """(start, end, value) of the grades of `attribute` in `clause`, within its scale."""
    scale = attribute.scale
    if scale is None:
        return []
    hits: list[tuple[int, int, int]] = []
    for match in _grade_pattern(attribute).finditer(clause):
        hits.append((match.start(), match.end(), _number(match.group("num"))))
    for match in _AFTER.finditer(clause):
        if match.start() == 0 or not clause[match.start() - 1].isalnum():
            hits.append((match.start(), match.end(), _number(match.group("num"))))
    for match in _WORD_ORDINAL.finditer(clause):
        hits.append((match.start(), match.end(), _ORDINAL_WORDS[match.group("word").lower()]))
    return sorted(h for h in hits if scale.min <= h[2] <= scale.max)


def _severity_hit(
    clause: str, anchor_start: int, anchor_end: int, attribute: Attribute
) -> tuple[int, int, str] | None:
    """The severity word nearest to the mention at `anchor_start:anchor_end` (clause offsets)."""
    allowed = {option.id for option in attribute.options}
    best: tuple[int, tuple[int, int, str]] | None = None
    for option, pattern in _AMOUNT:
        for match in pattern.finditer(clause):
            gap = clause[match.end() : anchor_start]
            if option in allowed and match.end() <= anchor_start and _ADJECTIVE_GAP.fullmatch(gap):
                distance = anchor_start - match.end()
                if best is None or distance < best[0]:
                    best = (distance, (match.start(), match.end(), option))
    for option, pattern in _SEVERITY:
        if option not in allowed:
            continue
        for match in pattern.finditer(clause):
            if match.end() <= anchor_start:
                distance = anchor_start - match.end()
            elif match.start() >= anchor_end:
                distance = match.start() - anchor_end
            else:
                distance = 0  # the word is part of the mention ("Mäßige Gonarthrose" synonyms)
            if distance <= SEVERITY_WINDOW and (best is None or distance < best[0]):
                best = (distance, (match.start(), match.end(), option))
    return None if best is None else best[1]


def _stated(text: str, attribute: Attribute, value: int | str, start: int, end: int) -> StatedGrade:
    evidence = Evidence(quote=text[start:end], start=start, end=end)
    return StatedGrade(attribute=attribute.id, value=value, evidence=evidence)


def clause_grades(
    text: str,
    clause: tuple[int, int],
    mention: tuple[int, int],
    attributes: Sequence[Attribute],
) -> list[StatedGrade]:
    """The grades and the severity `text[clause]` states for the finding mentioned at `mention`
    (text offsets), in text order: every integer grade of each grade attribute, and the
    severity word nearest to the mention."""
    start, end = clause
    part = text[start:end]
    found: list[tuple[int, StatedGrade]] = []
    for attribute in attributes:
        if is_grade(attribute):
            for hit_start, hit_end, value in _integer_hits(part, attribute):
                found.append(
                    (hit_start, _stated(text, attribute, value, start + hit_start, start + hit_end))
                )
        elif is_severity(attribute):
            hit = _severity_hit(part, mention[0] - start, mention[1] - start, attribute)
            if hit is not None:
                found.append(
                    (hit[0], _stated(text, attribute, hit[2], start + hit[0], start + hit[1]))
                )
    return [grade for _, grade in sorted(found, key=lambda item: item[0])]


def merged(grades: Iterable[StatedGrade]) -> tuple[StatedGrade, ...]:
    """`grades` with each (attribute, value) once, first wording kept, order kept."""
    seen: set[tuple[str, int | str]] = set()
    kept: list[StatedGrade] = []
    for grade in grades:
        key = (grade.attribute, grade.value)
        if key not in seen:
            seen.add(key)
            kept.append(grade)
    return tuple(kept)
