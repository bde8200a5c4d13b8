"""Stage 1: lexicon + ConText-style assertion, a complete rules-only extraction.

For each variable, the template's synonyms (all languages) are searched clause by clause. A
mention is `absent` when a negation trigger precedes it in its clause (or a post-negation
trigger follows it), `uncertain` with an uncertainty trigger, else `present`. Clauses end at
sentence ends, semicolons, line breaks and contrast words ("but", "maar", "aber"), which bound
the scope of a trigger. The evidence quote is the clause; locations are the template locations
named in the same clause (a lobe replaces the lung of the same side).

The trigger lists are written for radbridge after the ConText/NegEx trigger classes (pre- and
post-negation, uncertainty); English and Dutch follow the categories of the ConText rule sets in
`../shared/data/context-rules/`, German is our own. This is a first version of stage 1: the
fuller lexicon, section handling and NegEx evaluation belong to the extraction issue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    ModelInfo,
    Report,
    Stage,
)
from mappings.template import Template, Variable

RULES_MODEL = ModelInfo(name="radbridge-rules", sha256="0" * 64, version="stage1-1")

PRE_NEGATION: tuple[str, ...] = (
    "no", "not", "without", "negative for", "free of", "no evidence of", "no sign of", "no signs of",
    "absence of", "resolution of", "resolved", "rather than", "denies",
    "geen", "zonder", "niet", "geen aanwijzing voor", "geen teken van", "afwezigheid van",
    "kein", "keine", "keinen", "keiner", "ohne", "nicht", "kein hinweis auf", "keine zeichen",
    "없음", "없고",
)  # fmt: skip
POST_NEGATION: tuple[str, ...] = (
    "is absent", "are absent", "not seen", "not identified", "ruled out", "has resolved", "have resolved",
    "is excluded", "niet aanwezig", "afwezig", "uitgesloten", "verdwenen", "nicht nachweisbar",
    "ausgeschlossen", "nicht abgrenzbar", "regredient", "없음",
)  # fmt: skip
UNCERTAINTY: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably", "may", "might", "could", "cannot be excluded",
    "can not be excluded", "questionable", "suspected", "suspicious for", "suggestive of", "likely",
    "equivocal", "differential diagnosis", "versus",
    "mogelijk", "mogelijke", "waarschijnlijk", "verdacht", "verdenking", "twijfelachtig", "kan",
    "niet uit te sluiten", "niet uitgesloten", "dd",
    "möglich", "mögliche", "möglicherweise", "fraglich", "fragliche", "verdacht auf", "v.a.",
    "nicht auszuschließen", "wahrscheinlich", "dd", "vereinbar mit",
    "의심", "가능성",
)  # fmt: skip
_CLAUSE_BREAK = re.compile(
    r"(?<!\b[Cc]a)(?<!\bz\.B)\.(?=\s|$)|[;\n]|\b(?:but|however|although|maar|echter|aber|jedoch)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Mention:
    """One synonym found in the text with its assertion and clause."""

    variable_id: str
    status: FindingStatus
    start: int
    end: int
    clause_start: int
    clause_end: int
    locations: tuple[str, ...]


def _pattern(terms: list[str]) -> re.Pattern[str]:
    alternatives = sorted({t.lower() for t in terms if t}, key=len, reverse=True)
    return re.compile(
        r"(?<!\w)(?:" + "|".join(re.escape(a) for a in alternatives) + r")(?!\w)", re.IGNORECASE
    )


_PRE = _pattern(list(PRE_NEGATION))
_POST = _pattern(list(POST_NEGATION))
_UNCERTAIN = _pattern(list(UNCERTAINTY))


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


def _assertion(clause: str, mention_start: int, mention_end: int) -> FindingStatus:
    before, after = clause[:mention_start], clause[mention_end:]
    if _PRE.search(before) or _POST.search(after):
        return FindingStatus.ABSENT
    if _UNCERTAIN.search(before) or _UNCERTAIN.search(after):
        return FindingStatus.UNCERTAIN
    return FindingStatus.PRESENT


def _locations(template: Template, variable: Variable, clause: str) -> tuple[str, ...]:
    found = [
        location_id
        for location_id in variable.locations
        if _pattern(
            [s for words in template.location(location_id).synonyms.values() for s in words]
        ).search(clause)
    ]
    lobes = [f for f in found if "lobe" in f]
    if lobes:
        found = [f for f in found if f.endswith("_lobe") or f.endswith("_lobes")]
        if "both_lower_lobes" in found:
            found = [f for f in found if f not in ("right_lower_lobe", "left_lower_lobe")]
    if "bilateral" in found:
        found = [f for f in found if f not in ("right_lung", "left_lung")]
    return tuple(found)


def find_mentions(report: Report, template: Template) -> list[Mention]:
    """Every synonym mention of every variable, with assertion and locations."""
    mentions: list[Mention] = []
    spans = clauses(report.text)
    for variable in template.variables:
        pattern = _pattern([s for words in variable.synonyms.values() for s in words])
        for clause_start, clause_end in spans:
            clause = report.text[clause_start:clause_end]
            for match in pattern.finditer(clause):
                mentions.append(
                    Mention(
                        variable_id=variable.id,
                        status=_assertion(clause, match.start(), match.end()),
                        start=clause_start + match.start(),
                        end=clause_start + match.end(),
                        clause_start=clause_start,
                        clause_end=clause_end,
                        locations=_locations(template, variable, clause)
                        if variable.locations
                        else (),
                    )
                )
    return mentions


_PRIORITY = {FindingStatus.PRESENT: 0, FindingStatus.UNCERTAIN: 1, FindingStatus.ABSENT: 2}


def rules_values(report: Report, template: Template) -> dict[str, FindingValue]:
    """The rules-only value of every variable (present beats uncertain beats absent)."""
    by_variable: dict[str, list[Mention]] = {}
    for mention in find_mentions(report, template):
        by_variable.setdefault(mention.variable_id, []).append(mention)
    values: dict[str, FindingValue] = {}
    for variable in template.variables:
        found = by_variable.get(variable.id)
        if not found:
            values[variable.id] = FindingValue(
                variable_id=variable.id, status=FindingStatus.NOT_MENTIONED, stage=Stage.RULES
            )
            continue
        best = min(found, key=lambda m: (_PRIORITY[m.status], m.start))
        locations = best.locations
        values[variable.id] = FindingValue(
            variable_id=variable.id,
            status=best.status,
            locations=locations if best.status is not FindingStatus.ABSENT else (),
            evidence=Evidence(
                quote=report.text[best.clause_start : best.clause_end],
                start=best.clause_start,
                end=best.clause_end,
            ),
            stage=Stage.RULES,
        )
    return values


def extract_rules(report: Report, template: Template) -> Extraction:
    """A complete rules-only extraction (a first-class result, no model)."""
    values = rules_values(report, template)
    return Extraction(
        report_id=report.report_id,
        template_id=template.id,
        template_version=template.version,
        model=RULES_MODEL,
        stage=Stage.RULES,
        values=tuple(values[v.id] for v in template.variables),
        created=datetime.now(UTC),
    )
