"""Stage 1: lexicon + ConText-style assertion, a complete rules-only extraction.

For each variable, the template's synonyms (all languages) are searched clause by clause. The
assertion of a mention comes from ConText (`workers.context.assess`): negated -> `absent`,
uncertain or hypothetical -> `uncertain`, historical -> `present`; a mention about someone else
(family history) does not vote at all. Clauses are the units of `mappings.units` (sentences and
statements, not display lines: a line wrapped inside a sentence continues it) cut at contrast
words ("but", "maar", "aber"); the text is read with each wrapped line break as a space
(`mappings.units.flowed`, same offsets) and quoted as written, line breaks included. A mention in the
history/indication section (the clinical question, e.g. "r/o PE", "edema and dyspnea") never
counts: it is not a finding of this examination. A mention inside one of the variable's
`excludes` phrases ("pericardial effusion") does not count either; `states` add subject + state
statements ("heart size normal" -> absent, `workers.states`) and `normal_statements` make the
findings they cover absent ("No acute intracranial abnormality", `workers.normals`); a template with
`probable_existence: present` reads a strongly hedged mention ("probable", "likely", "versus") as
present. The evidence quote is the clause; locations are the template locations named in the
same clause (a lobe replaces the lung of the same side).

Typed variables:
- ordinal / number: the variable's `patterns` for the report's language (all languages when the
  language is unknown or has none), named group `value`; else a synonym followed within
  `NUMBER_WINDOW` characters in the same clause by a number (ordinal: an integer within the
  scale; number: within the range, decimal comma accepted). The first match in text order that
  is not negated and lies in the scale/range wins (the highest with `aggregate: highest`); the
  value is `present`.
- enum with `aggregate: highest`: of the options stated, the one listed last.
- enum: every option's synonyms are mentions; the first option mention that is not negated wins.
- presence with a qualifier: the first non-negated qualifier option named in the clause of the
  chosen mention becomes the value.
A variable with `section` is searched in that section first (when the report has it) and in the
whole text only when the section says nothing. A score or category (ordinal, enum) stated for a
prior exam is not this exam's: neither in the first line of a history/comparison section
("COMPARISON: Prior mammogram 2023 was BI-RADS 3") nor where the insights' RADS rule reads it as a
prior result (`workers.insights.rads.prior_spans`: "previously TI-RADS 4"). Every assertion is
decided by `_assertion`.

The trigger tables live in `workers.context_triggers` (English and Dutch adapted from the
MIT-licensed ConText rules, German and Korean written for radbridge).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    Measurement,
    ModelInfo,
    Report,
    ScalarValue,
    Section,
    Stage,
    StatedGrade,
)
from mappings.sections import find_sections
from mappings.template import Template, Variable, VariableType
from mappings.units import flowed
from workers import anatomy, grades, measurements, organs, sides, values
from workers.insights import rads
from workers.insights.text import ReportText
from workers.lexicon_text import clauses, mention_status, terms_pattern
from workers.normals import normal_hits
from workers.states import excluded_spans, inside, state_hits

RULES_MODEL = ModelInfo(name="radbridge-rules", sha256="0" * 64, version="stage1-1")


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
    return terms_pattern(tuple(terms))


def _assertion(clause: str, mention_start: int, mention_end: int) -> FindingStatus:
    """The assertion for a typed value: a value stated about someone else is only uncertain."""
    status = mention_status(clause, mention_start, mention_end)
    return FindingStatus.UNCERTAIN if status is None else status


def find_mentions(report: Report, template: Template) -> list[Mention]:
    """Every synonym mention of every variable, with assertion and locations.

    A mention about another organ (`workers.organs`: "thyroid nodule", "chest wall mass") or
    inside an excluded phrase is no mention. Locations come from `workers.anatomy`: those stated
    for the mention in its clause, then shared across the report's statements of the finding.
    """
    mentions: list[Mention] = []
    text = flowed(report.text)
    spans = clauses(report.text)
    probable_present = template.probable_existence == "present"
    for variable in template.variables:
        pattern = _pattern([s for words in variable.synonyms.values() for s in words])
        excluded = excluded_spans(text, variable)
        for clause_start, clause_end in spans:
            clause = text[clause_start:clause_end]
            for match in pattern.finditer(clause):
                if inside(excluded, clause_start + match.start(), clause_start + match.end()):
                    continue
                if organs.other_organ(template, variable.id, clause, match.start(), match.end()):
                    continue
                status = mention_status(clause, match.start(), match.end(), probable_present)
                if status is None:
                    continue
                mentions.append(
                    Mention(
                        variable_id=variable.id,
                        status=status,
                        start=clause_start + match.start(),
                        end=clause_start + match.end(),
                        clause_start=clause_start,
                        clause_end=clause_end,
                        locations=anatomy.sites(template, variable, clause, match.span()),
                    )
                )
    history = _history_spans(report)
    located = [
        anatomy.Located(
            m.variable_id,
            m.status,
            m.clause_start,
            m.clause_end,
            m.locations,
            counts=not any(a <= m.start < b for a, b in history),
        )
        for m in mentions
    ]
    shared = anatomy.share(template, text, spans, located)
    return [
        dataclasses.replace(mention, locations=locations)
        for mention, locations in zip(mentions, shared, strict=True)
    ]


_PRIORITY = {FindingStatus.PRESENT: 0, FindingStatus.UNCERTAIN: 1, FindingStatus.ABSENT: 2}
NUMBER_WINDOW = 25
_CUT_NUMBER = re.compile(r"\d|[.,]\d")  # a value group that stops inside a longer number
_NUMBER = re.compile(r"(?<![\w.,/-])(\d+(?:[.,]\d+)?)(?!\w|[.,/-]\d)")


@dataclass(frozen=True)
class ValueHit:
    """A typed value found by stage 1: the value and the clause it stands in."""

    value: ScalarValue
    start: int
    end: int
    clause_start: int
    clause_end: int


def _clause_at(spans: list[tuple[int, int]], position: int) -> tuple[int, int] | None:
    for start, end in spans:
        if start <= position < end:
            return start, end
    return None


def _sections(report: Report) -> tuple[Section, ...]:
    """The report's sections as parsed, else detected from its text."""
    return report.sections or find_sections(report.text)


def _history_spans(report: Report) -> list[tuple[int, int]]:
    """The history/indication section(s): the clinical question, not findings."""
    return [(sec.start, sec.end) for sec in _sections(report) if sec.name == "history"]


def _search_areas(report: Report, variable: Variable) -> list[tuple[int, int]]:
    """Where to look, in order: the variable's section (if the report has it), then everything."""
    areas: list[tuple[int, int]] = []
    if variable.section is not None:
        sections = _sections(report)
        areas.extend((sec.start, sec.end) for sec in sections if sec.name == variable.section)
    areas.append((0, len(report.text)))
    return areas


def _parse_number(text: str, variable: Variable) -> ScalarValue:
    text = text.strip().replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        return None
    if variable.type is VariableType.ORDINAL and variable.scale is not None:
        if not number.is_integer() or not variable.scale.min <= number <= variable.scale.max:
            return None
        return int(number)
    if variable.range is not None and not variable.range.min <= number <= variable.range.max:
        return None
    return number


def _in_own_unit(raw: str, match: re.Match[str], variable: Variable) -> str:
    """The number of a pattern match in the variable's unit: a pattern's optional group `unit`
    that says cm for a variable in mm ("Spleen 10.5 cm" -> 105) is converted; else as written."""
    unit = match.groupdict().get("unit")
    if not unit or variable.unit is None or variable.unit.code != "mm" or unit.lower() != "cm":
        return raw
    try:
        return str(round(float(raw.replace(",", ".")) * 10, 6))
    except ValueError:
        return raw


def _negated(report: Report, clause: tuple[int, int], start: int, end: int) -> bool:
    text = flowed(report.text)[clause[0] : clause[1]]
    status = _assertion(text, start - clause[0], min(end, clause[1]) - clause[0])
    return status is FindingStatus.ABSENT


def _pattern_hits(
    report: Report, variable: Variable, spans: list[tuple[int, int]]
) -> list[ValueHit]:
    language = (report.language or "").split("-")[0].lower()
    if language in variable.patterns:
        regexes = variable.patterns[language]
    else:
        regexes = tuple(r for rs in variable.patterns.values() for r in rs)
    hits: list[ValueHit] = []
    # number words as digits, same offsets
    text = values.shadow(flowed(report.text), report.language)
    for regex in regexes:
        for match in re.finditer(regex, text, re.IGNORECASE):
            clause = _clause_at(spans, match.start())
            raw = match.group("value")
            if clause is None or raw is None or _CUT_NUMBER.match(text, match.end("value")):
                continue
            value = _parse_number(_in_own_unit(raw, match, variable), variable)
            # a negated statement keeps the score that says "none": "geen atrofie (GCA 0)"
            scored = values.is_scale_floor(variable, value)
            if value is None or (
                not scored and _negated(report, clause, match.start(), match.end())
            ):
                continue
            hits.append(
                ValueHit(value, match.start(), match.end(), clause[0], max(clause[1], match.end()))
            )
        for row in values.table_lines(flowed(report.text)):
            for match in re.finditer(regex, row.statement, re.IGNORECASE):
                value = _parse_number(match.group("value") or "", variable)
                if value is not None:
                    hits.append(ValueHit(value, row.start, row.end, row.start, row.end))
    return sorted(hits, key=lambda h: h.start)


# A measurement unit written right after a number (mL, g/m², %, ms ...); compared with the
# variable's UCUM unit so "LV mass index 102 g/m²" is not read as an LV mass in g.
_UNIT_AFTER = re.compile(
    r"\s*((?:m?l|g|kg|ms|s|mm|cm|%|bpm|mmhg)(?:\s*/\s*(?:m2|m²|min|kg))?)(?![\w/²])",
    re.IGNORECASE,
)


def _unit_key(unit: str) -> str:
    return re.sub(r"\s+", "", unit).lower().replace("²", "2")


def _other_unit(after_number: str, variable: Variable) -> bool:
    """True when the number is followed by a unit that is not the variable's unit."""
    if variable.type is not VariableType.NUMBER or variable.unit is None:
        return False
    written = _UNIT_AFTER.match(after_number)
    if written is None:
        return False
    own = {_unit_key(variable.unit.code), _unit_key(variable.unit.display)}
    return _unit_key(written.group(1)) not in own


def _window_hits(
    report: Report, variable: Variable, spans: list[tuple[int, int]]
) -> list[ValueHit]:
    """A synonym followed within NUMBER_WINDOW characters (same clause) by a valid number."""
    pattern = _pattern(list(variable.terms()))
    hits: list[ValueHit] = []
    flow = flowed(report.text)
    text = values.shadow(flow, report.language)
    for clause_start, clause_end in spans:
        clause = flow[clause_start:clause_end]
        for match in pattern.finditer(clause):
            shadowed = text[clause_start:clause_end]
            window = shadowed[match.end() : match.end() + NUMBER_WINDOW + 12]
            for number in _NUMBER.finditer(window):
                if number.start() > NUMBER_WINDOW:
                    break
                value = _parse_number(number.group(1), variable)
                if value is None or _other_unit(window[number.end() :], variable):
                    continue
                if not values.is_scale_floor(variable, value) and (
                    _assertion(clause, match.start(), match.end()) is FindingStatus.ABSENT
                ):
                    break
                hits.append(
                    ValueHit(
                        value,
                        clause_start + match.start(),
                        clause_start + match.end() + number.end(),
                        clause_start,
                        clause_end,
                    )
                )
                break
    return sorted(hits, key=lambda h: h.start)


def _option_hits(
    report: Report, options: tuple[tuple[str, tuple[str, ...]], ...], start: int, end: int
) -> list[ValueHit]:
    """Non-negated option mentions in text[start:end], by clause, in text order."""
    hits: list[ValueHit] = []
    flow = flowed(report.text)
    for clause_start, clause_end in clauses(report.text):
        if clause_end <= start or clause_start >= end:
            continue
        clause = flow[clause_start:clause_end]
        for option_id, words in options:
            for match in _pattern(list(words)).finditer(clause):
                if not start <= clause_start + match.start() < end:
                    continue
                if values.negating_prefix(clause, match.start()):  # "nicht-ischämische"
                    continue
                if _assertion(clause, match.start(), match.end()) is FindingStatus.ABSENT:
                    continue
                hits.append(
                    ValueHit(
                        option_id,
                        clause_start + match.start(),
                        clause_start + match.end(),
                        clause_start,
                        clause_end,
                    )
                )
    return sorted(hits, key=lambda h: h.start)


def _option_words(
    variable: Variable, qualifier: bool = False
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    options = variable.qualifier.options if qualifier and variable.qualifier else variable.options
    return tuple(
        (option.id, tuple(w for words in option.synonyms.values() for w in words))
        for option in options
    )


_SIDE_IN_OPTION = re.compile(rf"(?<!\w){rads.SIDE_WORD}", re.IGNORECASE)
_OTHER_SIDE = re.compile(rf"\s*[,;/]\s*({rads.SIDE_WORD}[\s:]*[^\s,;.()]+)", re.IGNORECASE)
"""After a sided option ("BI-RADS right 2"), the other side's value: ", left 4"."""


def _other_sides(
    report: Report, options: tuple[tuple[str, tuple[str, ...]], ...], hits: list[ValueHit]
) -> list[ValueHit]:
    """The option each sided option hit continues with for the other side: "BI-RADS right 2,
    left 4" states birads_4 as "BI-RADS left 4" would (the words before the side, the side and
    value that follow, read as one of the variable's synonyms). Only a whole synonym counts."""
    flow = flowed(report.text)
    more: list[ValueHit] = []
    for hit in hits:
        written = flow[hit.start : hit.end]
        side = _SIDE_IN_OPTION.search(written)
        after = _OTHER_SIDE.match(flow, hit.end) if side is not None else None
        if side is None or after is None:
            continue
        phrase = written[: side.start()] + after.group(1)
        option_id = next(
            (option for option, words in options if _pattern(list(words)).fullmatch(phrase)), None
        )
        if option_id is not None:
            start, end = after.span(1)
            more.append(ValueHit(option_id, start, end, hit.clause_start, max(hit.clause_end, end)))
    return more


def _all_typed_hits(report: Report, variable: Variable) -> list[list[ValueHit]]:
    """Stage-1 values of a typed variable per method, best method first, each in text order."""
    if variable.type is VariableType.ENUM:
        options = _option_words(variable)
        hits = _option_hits(report, options, 0, len(report.text))
        return [sorted([*hits, *_other_sides(report, options, hits)], key=lambda h: h.start)]
    spans = clauses(report.text)
    return [_pattern_hits(report, variable, spans), _window_hits(report, variable, spans)]


_PRIOR_SECTIONS = frozenset({"history", "comparison"})


@functools.lru_cache(maxsize=16)
def _prior_context(
    text: str, language: str | None
) -> tuple[ReportText, tuple[tuple[int, int], ...]]:
    """The report as the insight rules read it and its prior RADS spans (read once per report,
    not once per score variable)."""
    doc = ReportText(text, language)
    return doc, rads.prior_spans(doc)


def _current_score(hits: list[ValueHit], report: Report) -> list[ValueHit]:
    """The score/category hits that are this exam's: a score in the first line of a history or
    comparison section ("COMPARISON: Prior mammogram 2023 was BI-RADS 3") or a RADS category
    the insights step reads as a prior result ("previously classified as TI-RADS 4") is not."""
    if not hits:
        return hits
    doc, priors = _prior_context(report.text, report.language)
    return [
        h
        for h in hits
        if not doc.in_sections(h.start, _PRIOR_SECTIONS)
        and not any(a < h.end and h.start < b for a, b in priors)
    ]


def typed_hits(report: Report, variable: Variable) -> list[ValueHit]:
    """The stage-1 values of a typed variable stage 1 prefers: in the variable's section first,
    there the first method that finds any (patterns, then synonym + number); text order within.
    A score or category (enum, ordinal) stated for a prior exam does not count."""
    found = _all_typed_hits(report, variable)
    if variable.type is VariableType.ENUM:  # the clinical question is no diagnosis
        history = _history_spans(report)
        found = [
            [h for h in hits if not any(a <= h.start < b for a, b in history)] for hits in found
        ]
    if variable.type in (VariableType.ENUM, VariableType.ORDINAL):
        found = [_current_score(hits, report) for hits in found]
    for area_start, area_end in _search_areas(report, variable):
        for hits in found:
            inside = [h for h in hits if area_start <= h.start < area_end]
            if inside:
                return inside
    return []


def _lateral_hits(report: Report, template: Template, variable: Variable) -> list[ValueHit]:
    """One side of a left/right scale pair, read in any order (`workers.values`)."""
    shadowed = values.shadow(flowed(report.text), report.language)
    hit = values.lateral_value(shadowed, template, variable)
    if hit is None:
        return []
    clause = _clause_at(clauses(report.text), hit.start) or (hit.start, hit.end)
    return [ValueHit(hit.value, hit.start, hit.end, clause[0], max(clause[1], hit.end))]


def _rank(variable: Variable, value: ScalarValue) -> float:
    """How high a stated value is: a number itself, an enum option its place in the options."""
    if variable.type is VariableType.ENUM:
        ids = [option.id for option in variable.options]
        return float(ids.index(str(value))) if str(value) in ids else -1.0
    return float(value) if isinstance(value, int | float) else -1.0


def _typed_value(report: Report, template: Template, variable: Variable) -> FindingValue:
    hits = _lateral_hits(report, template, variable) or typed_hits(report, variable)
    if not hits:
        return FindingValue(
            variable_id=variable.id, status=FindingStatus.NOT_MENTIONED, stage=Stage.RULES
        )
    best = hits[0]
    if variable.aggregate == "highest":  # the highest value stated (first of equals)
        best = max(hits, key=lambda hit: _rank(variable, hit.value))
    clause = flowed(report.text)[best.clause_start : best.clause_end]
    quote = report.text[best.clause_start : best.clause_end]  # as written, line breaks included
    return FindingValue(
        variable_id=variable.id,
        status=FindingStatus.PRESENT,
        value=best.value,
        unit=variable.unit.code if variable.unit is not None else None,
        locations=anatomy.sites(template, variable, clause) if variable.locations else (),
        evidence=Evidence(quote=quote, start=best.clause_start, end=best.clause_end),
        stage=Stage.RULES,
    )


def _outside_history(report: Report, mentions: list[Mention]) -> list[Mention]:
    """The mentions outside the history/indication section: the clinical question ("r/o PE",
    "edema and dyspnea", "history of lung nodules") is not a finding of this examination."""
    history = _history_spans(report)
    return [m for m in mentions if not any(a <= m.start < b for a, b in history)]


def _presence_mentions(
    report: Report, variable: Variable, mentions: list[Mention]
) -> list[Mention]:
    for area_start, area_end in _search_areas(report, variable):
        inside = [m for m in mentions if area_start <= m.start < area_end]
        if inside:
            return _outside_history(report, inside)
    return []


def all_mentions(report: Report, template: Template) -> list[Mention]:
    """Synonym mentions (`find_mentions`), plus state statements (`workers.states`: "heart size
    is enlarged" / "heart size normal") and normal statements (`workers.normals`)."""
    mentions = find_mentions(report, template)
    text = flowed(report.text)
    spans = clauses(report.text)
    for variable in template.variables:
        for hit in state_hits(text, spans, variable):
            clause = text[hit.clause_start : hit.clause_end]
            locations = anatomy.sites(template, variable, clause) if variable.locations else ()
            mentions.append(
                Mention(
                    variable_id=variable.id,
                    status=hit.status,
                    start=hit.start,
                    end=hit.end,
                    clause_start=hit.clause_start,
                    clause_end=hit.clause_end,
                    locations=locations,
                )
            )
    for normal in normal_hits(text, spans, template):
        mentions.extend(
            Mention(
                variable_id=variable_id,
                status=FindingStatus.ABSENT,
                start=normal.start,
                end=normal.end,
                clause_start=normal.clause_start,
                clause_end=normal.clause_end,
                locations=(),
            )
            for variable_id in normal.variables
        )
    return mentions


SIZE_ATTRIBUTE = "size_mm"
"""The finding attribute that makes a presence variable take sizes (`workers.measurements`)."""


def _sizes(
    report: Report, template: Template, mentions: list[Mention]
) -> dict[str, tuple[Measurement, ...]]:
    """Sizes of the findings that take one; the mentions that may own a size are those of
    presence and number variables (a "TI-RADS" or "BI-RADS" mention owns none), in template
    order, outside the history section."""
    sized = [
        v.id
        for v in template.variables
        if v.type is VariableType.PRESENCE and SIZE_ATTRIBUTE in v.attributes
    ]
    if not sized:
        return {}
    order = {
        v.id: index
        for index, v in enumerate(template.variables)
        if v.type in (VariableType.PRESENCE, VariableType.NUMBER)
    }
    owners = sorted(
        (m for m in _outside_history(report, mentions) if m.variable_id in order),
        key=lambda m: order[m.variable_id],
    )
    return measurements.finding_sizes(
        flowed(report.text), report.text, clauses(report.text), owners, sized
    )


SIDE_ATTRIBUTE = "side"
"""The finding attribute that makes a presence variable take sides (`workers.sides`)."""


def _exam_titles(report: Report) -> tuple[str, ...]:
    """The exam titles a side may come from: the procedure's text (OBR-4 / the order) and the
    report's first line up to its first ":" or sentence end (`workers.sides.report_title`)."""
    procedure = report.procedure.display if report.procedure is not None else None
    return tuple(t for t in (procedure, sides.report_title(report.text)) if t)


def _sides(
    report: Report,
    template: Template,
    variable: Variable,
    found: list[Mention],
    mentions: list[Mention],
    titles: tuple[str, ...],
) -> tuple[str, ...]:
    """The sides the clauses of a finding's present or uncertain mentions (outside the history
    section) state for it (`workers.sides.finding_sides`, given every mention of the clause),
    else the side of a one-sided exam title naming a body part of the template; none when the
    variable takes no side."""
    if SIDE_ATTRIBUTE not in variable.attributes:
        return ()
    attribute = next((a for a in template.attributes if a.id == SIDE_ATTRIBUTE), None)
    if attribute is None:
        return ()
    allowed = {option.id for option in attribute.options}
    by_clause: dict[int, list[str]] = {}
    for mention in sorted(_outside_history(report, found), key=lambda m: m.start):
        if mention.status is FindingStatus.ABSENT:
            continue
        in_clause = [(m.start, m.end) for m in mentions if m.clause_start == mention.clause_start]
        by_clause.setdefault(mention.clause_start, []).extend(
            sides.finding_sides(
                report.text,
                (mention.clause_start, mention.clause_end),
                (mention.start, mention.end),
                in_clause,
                allowed,
            )
        )
    stated = [
        side
        for clause_sides in by_clause.values()
        for side in sides.combined_sides(clause_sides, absorb=True)
    ]
    if not stated and any(m.status is not FindingStatus.ABSENT for m in found):
        exam_words = (*template.applies_to.body_parts, *_exam_words(template))
        for title in titles:
            titled = sides.exam_side(title, allowed, exam_words)
            if titled is not None:
                return (titled,)
        if variable.locations:
            return _previous_sides(report, found, mentions, allowed)
    return sides.combined_sides(stated, absorb=False)


def _previous_sides(
    report: Report, found: list[Mention], mentions: list[Mention], allowed: Collection[str]
) -> tuple[str, ...]:
    """For a finding whose clauses and exam title state no side, and whose first present or
    uncertain mention states no site of its own (it goes on describing the finding before it):
    the one side stated for the findings asserted in the nearest earlier clause of the same
    paragraph that asserts one ("Left total hip arthroplasty. Periprosthetic lucency around the
    cup, loosening."); else none. A finding with a site of its own ("calculus in the bladder",
    "blood in the fourth ventricle") may be midline and starts a new description; one whose
    clause states sides for other findings only has none."""
    first = min(
        (m for m in _outside_history(report, found) if m.status is not FindingStatus.ABSENT),
        key=lambda m: m.start,
        default=None,
    )
    if first is None or first.locations:
        return ()
    present = [m for m in _outside_history(report, found) if m.status is not FindingStatus.ABSENT]
    if any(sides.clause_sides(report.text, m.clause_start, m.clause_end, allowed) for m in present):
        return ()  # its clause gives sides to other findings, none to it ("SDH rechts und IVH")
    before = [
        m
        for m in _outside_history(report, mentions)
        if m.clause_end <= first.clause_start and m.status is not FindingStatus.ABSENT
    ]
    if not before:
        return ()
    last = max(m.clause_start for m in before)
    if "\n\n" in report.text[last : first.clause_start]:
        return ()
    in_clause = [(m.start, m.end) for m in mentions if m.clause_start == last]
    stated = [
        side
        for m in before
        if m.clause_start == last
        for side in sides.finding_sides(
            report.text, (m.clause_start, m.clause_end), (m.start, m.end), in_clause, allowed
        )
    ]
    found_sides = sides.combined_sides(stated, absorb=True)
    return found_sides if len(found_sides) == 1 else ()


def _exam_words(template: Template) -> tuple[str, ...]:
    """The exam keywords and body-site words of every language of the template ("X-knie",
    "Mammographie", "OSG"), stems without their "*"."""
    keywords = (word for words in template.applies_to.keywords.values() for word in words)
    sites = (w for site in template.locations for words in site.synonyms.values() for w in words)
    return tuple(word.rstrip("*") for word in (*keywords, *sites))


def _grades(
    report: Report, template: Template, variable: Variable, found: list[Mention]
) -> tuple[StatedGrade, ...]:
    """The grades and severities the clauses of a finding's present or uncertain mentions
    (outside the history section) state (`workers.grades`), each once in text order."""
    attributes = grades.grade_attributes(template, variable)
    if not attributes:
        return ()
    stated: list[StatedGrade] = []
    for mention in sorted(_outside_history(report, found), key=lambda m: m.start):
        if mention.status is FindingStatus.ABSENT:
            continue
        stated += grades.clause_grades(
            report.text,
            (mention.clause_start, mention.clause_end),
            (mention.start, mention.end),
            attributes,
        )
    return grades.merged(stated)


def rules_values(report: Report, template: Template) -> dict[str, FindingValue]:
    """The rules-only value of every variable (present beats uncertain beats absent); a present
    or uncertain finding that takes a size carries the sizes stated for it."""
    by_variable: dict[str, list[Mention]] = {}
    mentions = all_mentions(report, template)
    for mention in mentions:
        by_variable.setdefault(mention.variable_id, []).append(mention)
    sizes = _sizes(report, template, mentions)
    titles = _exam_titles(report)
    values: dict[str, FindingValue] = {}
    for variable in template.variables:
        if variable.type is not VariableType.PRESENCE:
            values[variable.id] = _typed_value(report, template, variable)
            continue
        found = _presence_mentions(report, variable, by_variable.get(variable.id, []))
        if not found:
            values[variable.id] = FindingValue(
                variable_id=variable.id, status=FindingStatus.NOT_MENTIONED, stage=Stage.RULES
            )
            continue
        best = min(found, key=lambda m: (_PRIORITY[m.status], m.start))
        locations = best.locations
        qualifier: ScalarValue = None
        if variable.qualifier is not None and best.status is not FindingStatus.ABSENT:
            options = _option_hits(
                report, _option_words(variable, qualifier=True), best.clause_start, best.clause_end
            )
            qualifier = options[0].value if options else None
        values[variable.id] = FindingValue(
            variable_id=variable.id,
            status=best.status,
            value=qualifier,
            locations=locations if best.status is not FindingStatus.ABSENT else (),
            evidence=Evidence(
                quote=report.text[best.clause_start : best.clause_end],
                start=best.clause_start,
                end=best.clause_end,
            ),
            stage=Stage.RULES,
            sizes=sizes.get(variable.id, ()) if best.status is not FindingStatus.ABSENT else (),
            sides=_sides(report, template, variable, found, mentions, titles)
            if best.status is not FindingStatus.ABSENT
            else (),
            grades=_grades(report, template, variable, found)
            if best.status is not FindingStatus.ABSENT
            else (),
        )
    return values


def variable_spans(report: Report, template: Template) -> dict[str, list[tuple[int, int]]]:
    """Per variable, the clauses where stage 1 found it (any assertion): evidence relevance."""
    spans: dict[str, list[tuple[int, int]]] = {v.id: [] for v in template.variables}
    for mention in all_mentions(report, template):
        spans[mention.variable_id].append((mention.clause_start, mention.clause_end))
    for variable in template.variables:
        if variable.type is not VariableType.PRESENCE:
            for hits in _all_typed_hits(report, variable):
                spans[variable.id].extend((h.clause_start, h.clause_end) for h in hits)
    return {key: sorted(set(value)) for key, value in spans.items()}


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
