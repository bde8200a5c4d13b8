"""The model path of the insights step (issue 20): the configured engine fills an insights schema
like any template's, every item is checked against the report text, and the result is merged
with the rules' insights.

The schema (`INSIGHTS_SCHEMA`, JSON constrained decoding, every field required and nullable,
strings capped, the evidence quote BEFORE the verdict as in templates) asks for three kinds:
follow-up recommendations (quote, procedure, DICOM modality, stated interval or range as ISO 8601
durations, conditional), critical results (quote, a finding id of the critical list) and RADS
categories (quote, system, category, side). Communications, mismatches and sizes stay with the
rules (they need the order, the patient and exact numbers the rules read).

Evidence check (`check_model_insights`), per item; an item that fails is DROPPED, never kept
with an invented quote, and an item repeated (same quote and attributes, or the same RADS system,
category and side, or the same critical finding) is kept once:
- the quote must carry meaning (`workers.evidence.is_meaningful`) and be found verbatim in the
  report (`workers.evidence.locate_quote`: case, whitespace and accents normalised); the
  evidence is the passage as the report writes it, with its offsets;
- follow-up: a modality is kept only when the quote names it, an interval only when the quote
  states it (`workers.insights.timing.find_intervals`), else that attribute is dropped (None);
- critical: the quote must name the finding (the list's term pattern) and ConText
  (`workers.context.assess`) must not find that mention negated, hypothetical, historical or about
  someone else;
- RADS: the category must be one the system has, and the quote must name the system and hold
  the category.

Merge (`merge_insights`), the same for the `llm` and `hybrid` stages: **the rules win where they
found something**; the model only adds. A model follow-up is added when its quote overlaps no
rules follow-up's evidence; a critical finding when the rules did not flag it (nor a finding that
supersedes it); a RADS category when no rules category of that system overlaps its quote or
has the same system, category and side. Rules results are deterministic and their negation and
prior-mention handling is measured on the labelled set, so a weak model can add recall but never
take away (or rewrite) what the rules found. A model answer that is not valid (`ExtractionError`)
leaves the rules' insights as they are: the report is never dropped for it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mappings.insights.critical_list import CriticalFinding
from mappings.insights.model import (
    CriticalResult,
    FollowUp,
    FollowUpKind,
    Insights,
    RadsCategory,
    Span,
)
from mappings.report import Report
from mappings.units import flowed
from workers.context import assess
from workers.errors import ExtractionError
from workers.evidence import is_meaningful, locate_quote
from workers.extraction_engine import ChatPrompt, ExtractionEngine, JsonSchema
from workers.insights.timing import add_duration, find_intervals
from workers.prompt import user_text

log = logging.getLogger(__name__)

QUOTE_MAX_CHARS = 200
MAX_ITEMS = 3
INSIGHTS_MAX_TOKENS = 768
MODALITIES = ("CT", "MR", "US", "MG", "CR", "NM", "PT")
RADS_CATEGORIES: dict[str, tuple[str, ...]] = {
    "BI-RADS": ("0", "1", "2", "3", "4", "4A", "4B", "4C", "5", "6"),
    "BI-RADS density": ("a", "b", "c", "d"),
    "Lung-RADS": ("0", "1", "2", "3", "4A", "4B", "4X", "1S", "2S", "3S", "4AS", "4BS", "4XS"),
    "PI-RADS": ("1", "2", "3", "4", "5"),
    "TI-RADS": ("TR1", "TR2", "TR3", "TR4", "TR5"),
    "LI-RADS": ("LR-1", "LR-2", "LR-3", "LR-4", "LR-5", "LR-M", "LR-TIV", "LR-NC"),
    "O-RADS": ("0", "1", "2", "3", "4", "5"),
}
"""Each system's categories as the rules write them (`workers.insights.rads`)."""
_SYSTEM_NAMES: dict[str, re.Pattern[str]] = {
    "BI-RADS": re.compile(r"\bbi[- ]?rads\b", re.I),
    "BI-RADS density": re.compile(r"\b(?:acr|dens\w*|dichte|composition|parenchym\w*)", re.I),
    "Lung-RADS": re.compile(r"\blung[- ]?rads\b", re.I),
    "PI-RADS": re.compile(r"\bpi[- ]?rads\b", re.I),
    "TI-RADS": re.compile(r"\bti-?rads\b|(?<![\w-])TR[- ]?[1-5]\b", re.I),
    "LI-RADS": re.compile(r"\bli-?rads\b|(?<![\w-])LR[- ]?(?:[1-5]|M|TIV|NC)\b", re.I),
    "O-RADS": re.compile(r"\bo[- ]?rads\b", re.I),
}
_MODALITY_WORDS: dict[str, re.Pattern[str]] = {
    "CT": re.compile(r"(?<![\w-])(?-i:CT)(?!\w)|\bcomputed tomograph|\bcomputertomograph|\bLDCT\b"
                     r"|\bCT[- ]?\w", re.I),
    "MR": re.compile(r"(?<![\w-])(?-i:MRI?|MRT|MRCP)(?!\w)|\bmagnetic resonance|\bkernspin", re.I),
    "US": re.compile(r"(?<![\w-])(?-i:US)(?!\w)|ultrasound|ultrasonograph|sonograph|\bsono\w*"
                     r"|\becho\w*|ultraschall|\bechografie", re.I),
    "MG": re.compile(r"mammogra\w*|\bmammo\w*", re.I),
    "CR": re.compile(r"radiograph\w*|x-?ray|röntgen\w*|\brx\b|\bthoraxfoto|\bfoto\b|\bopname", re.I),
    "NM": re.compile(r"scintigra\w*|szintigra\w*|\bspect\b|nuclear|nucleair|bone scan", re.I),
    "PT": re.compile(r"(?<![\w-])(?-i:PET)(?!\w)", re.I),
}  # fmt: skip
_DURATION = r"^P[1-9][0-9]?[DWMY]$"


class _Quoted(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence: str = Field(max_length=QUOTE_MAX_CHARS)


class ModelFollowUp(_Quoted):
    """A follow-up recommendation as the model states it."""

    procedure: str = Field(max_length=80)
    modality: Literal["CT", "MR", "US", "MG", "CR", "NM", "PT"] | None
    interval: str | None = Field(pattern=_DURATION)
    interval_end: str | None = Field(pattern=_DURATION)
    conditional: bool


class ModelCritical(_Quoted):
    """A critical result as the model states it (`finding`: an id of the critical list)."""

    finding: str


class ModelRads(_Quoted):
    """A RADS category as the model states it."""

    system: str
    category: str
    side: Literal["left", "right"] | None


class ModelInsights(BaseModel):
    """The model's answer (field order = decoding order)."""

    model_config = ConfigDict(extra="forbid")

    followups: list[ModelFollowUp] = Field(max_length=MAX_ITEMS)
    critical: list[ModelCritical] = Field(max_length=MAX_ITEMS)
    rads: list[ModelRads] = Field(max_length=MAX_ITEMS)


def _object(properties: dict[str, JsonSchema]) -> JsonSchema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _array(item: JsonSchema) -> JsonSchema:
    return {"type": "array", "items": item, "maxItems": MAX_ITEMS}


_QUOTE: JsonSchema = {"type": "string", "minLength": 1, "maxLength": QUOTE_MAX_CHARS}
_NULLABLE_DURATION: JsonSchema = {
    "anyOf": [{"type": "string", "pattern": _DURATION}, {"type": "null"}]
}


def insights_schema(findings: Sequence[CriticalFinding]) -> JsonSchema:
    """The JSON schema the engine's output is constrained to (critical ids from `findings`)."""
    categories = sorted({c for values in RADS_CATEGORIES.values() for c in values})
    return _object(
        {
            "followups": _array(
                _object(
                    {
                        "evidence": _QUOTE,
                        "procedure": {"type": "string", "minLength": 1, "maxLength": 80},
                        "modality": {"anyOf": [{"enum": list(MODALITIES)}, {"type": "null"}]},
                        "interval": _NULLABLE_DURATION,
                        "interval_end": _NULLABLE_DURATION,
                        "conditional": {"type": "boolean"},
                    }
                )
            ),
            "critical": _array(
                _object({"evidence": _QUOTE, "finding": {"enum": [f.id for f in findings]}})
            ),
            "rads": _array(
                _object(
                    {
                        "evidence": _QUOTE,
                        "system": {"enum": list(RADS_CATEGORIES)},
                        "category": {"enum": categories},
                        "side": {"anyOf": [{"enum": ["left", "right"]}, {"type": "null"}]},
                    }
                )
            ),
        }
    )


INSTRUCTIONS = """You find report-level insights in a radiology report and answer in JSON.
- "followups": each recommended future exam or action of THIS report (not a past or negated one):
  "evidence" the exact sentence that recommends it, copied verbatim; "procedure" what is
  recommended; "modality" CT, MR, US, MG, CR (radiograph), NM or PT, or null; "interval" the stated
  time frame as an ISO 8601 duration (P3M = 3 months, P6W = 6 weeks, P1Y = 1 year) or null;
  "interval_end" the end of a stated range ("6-12 months": P6M and P12M) or null; "conditional"
  true when it applies only if something happens ("if symptoms persist").
- "critical": each finding of this list the report states as PRESENT now (not negated, not
  possible, not known or unchanged): "evidence" the exact words, "finding" its id.
  Ids: {ids}.
- "rads": each RADS category this report assigns (not a prior one): "evidence" the exact words,
  "system" (BI-RADS, BI-RADS density, Lung-RADS, PI-RADS, TI-RADS, LI-RADS, O-RADS), "category" as
  the system writes it (4A, c, TR4, LR-5), "side" left, right or null.
Copy evidence verbatim from the report, in its language. Empty lists when there is nothing."""


def system_text(findings: Sequence[CriticalFinding]) -> str:
    """The system turn: the same for every report (a prefix cache reuses it)."""
    return INSTRUCTIONS.replace("{ids}", ", ".join(f.id for f in findings))


def _locate(text: str, quote: str) -> Span | None:
    quote = quote.strip()
    if not is_meaningful(quote):
        return None
    found = locate_quote(text, quote)
    if found is None:
        return None
    return Span(quote=text[found[0] : found[1]], start=found[0], end=found[1])


_BIOPSY = re.compile(r"biops|biopt|punct|punkt|FNA|aspirat", re.I)
_CONSULT = re.compile(r"consult|referr|verwijz|überweis|vorstell|\bteam\b|\bMDT\b|\bMDO\b", re.I)


def _kind(procedure: str, modality: str | None) -> FollowUpKind:
    if _BIOPSY.search(procedure):
        return "biopsy"
    if modality is not None:
        return "imaging"
    return "consultation" if _CONSULT.search(procedure) else "other"


def _followup(text: str, item: ModelFollowUp, span: Span, report_date: date | None) -> FollowUp:
    quote = span.quote
    modality = item.modality
    if modality is not None and not _MODALITY_WORDS[modality].search(quote):
        modality = None  # the quote does not name it: not the report's word
    stated = {i.durations for i in find_intervals(text, span.start, span.end)}
    wanted = tuple(d for d in (item.interval, item.interval_end) if d is not None)
    interval = wanted if wanted in stated else ()
    due: dict[str, date] = {}
    if report_date is not None and len(interval) == 1:
        due = {"due": add_duration(report_date, interval[0])}
    elif report_date is not None and len(interval) == 2:
        due = {
            "due_start": add_duration(report_date, interval[0]),
            "due_end": add_duration(report_date, interval[1]),
        }
    return FollowUp(
        kind=_kind(item.procedure, modality),
        modality=modality,
        procedure_text=" ".join(item.procedure.split()) or quote,
        interval=interval,
        conditional=item.conditional,
        evidence=span,
        **due,
    )


def _states_finding(text: str, language: str | None, span: Span, finding: CriticalFinding) -> bool:
    for match in finding.pattern.finditer(text, span.start, span.end):
        context = assess(text, match.start(), match.end(), language)
        if not (
            context.negated
            or context.hypothetical
            or context.historical
            or context.other_experiencer
            or context.uncertain
        ):
            return True
    return False


def _rads_holds(item: ModelRads, span: Span) -> bool:
    if item.category not in RADS_CATEGORIES.get(item.system, ()):
        return False
    if not _SYSTEM_NAMES[item.system].search(span.quote):
        return False
    bare = item.category.removeprefix("LR-").removeprefix("TR")
    prefix = item.category[: len(item.category) - len(bare)].rstrip("-")
    written = rf"(?:{re.escape(prefix)}[- ]?)?{re.escape(bare)}" if prefix else re.escape(bare)
    found = re.search(rf"(?<![A-Za-z0-9]){written}(?![A-Za-z0-9])", span.quote, re.I)
    return found is not None  # "TR4", "TR 4", "LR-5", "LR5", "4A", "c"


def check_model_insights(
    report: Report,
    answer: ModelInsights,
    findings: Sequence[CriticalFinding],
    report_date: date | None,
) -> Insights:
    """The model's items whose quotes hold (module docstring); the others are dropped."""
    text = flowed(report.text)  # soft line breaks as spaces: the same offsets as report.text
    listed = {f.id: f for f in findings}
    followups: dict[tuple[object, ...], FollowUp] = {}
    for item in answer.followups:
        span = _locate(report.text, item.evidence)
        if span is not None:
            followup = _followup(text, item, span, report_date)
            same = (span.start, span.end, followup.modality, followup.interval, followup.kind)
            followups.setdefault(same, followup)  # an item repeated is one recommendation
    critical: dict[str, CriticalResult] = {}
    for result in answer.critical:
        span = _locate(report.text, result.evidence)
        finding = listed.get(result.finding)
        if span is None or finding is None:
            continue
        if _states_finding(text, report.language, span, finding):
            critical.setdefault(finding.id, CriticalResult(finding=finding.id, evidence=span))
    rads: dict[tuple[str, str, str | None], RadsCategory] = {}
    for rads_item in answer.rads:
        span = _locate(report.text, rads_item.evidence)
        if span is not None and _rads_holds(rads_item, span):
            rads.setdefault(
                (rads_item.system, rads_item.category, rads_item.side),
                RadsCategory(
                    system=rads_item.system,
                    category=rads_item.category,
                    side=rads_item.side,
                    evidence=span,
                ),
            )
    return Insights(
        followups=tuple(followups.values()),
        critical=tuple(critical.values()),
        rads=tuple(rads.values()),
    )


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def merge_insights(
    rules: Insights, model: Insights, findings: Sequence[CriticalFinding] = ()
) -> Insights:
    """The rules' insights plus what only the model found (module docstring: rules win)."""
    followups = [
        f
        for f in model.followups
        if not any(_overlaps(f.evidence, r.evidence) for r in rules.followups)
    ]
    flagged = {c.finding for c in rules.critical}
    hidden = flagged | {s for f in findings if f.id in flagged for s in f.supersedes}
    critical = [c for c in model.critical if c.finding not in hidden]
    rads = [
        m
        for m in model.rads
        if not any(
            r.system == m.system
            and (_overlaps(r.evidence, m.evidence) or (r.category, r.side) == (m.category, m.side))
            for r in rules.rads
        )
    ]
    return rules.model_copy(
        update={
            "followups": (*rules.followups, *followups),
            "critical": (*rules.critical, *critical),
            "rads": (*rules.rads, *rads),
        }
    )


def model_insights(
    report: Report,
    engine: ExtractionEngine,
    findings: Sequence[CriticalFinding],
    report_date: date | None,
    *,
    max_tokens: int = INSIGHTS_MAX_TOKENS,
) -> Insights:
    """Ask `engine` for the report's insights and keep the items whose quotes hold.

    Raises ExtractionError when the output is incomplete or does not match the schema."""
    prompt = ChatPrompt(system_text(findings), user_text(report, None))
    generation = engine.generate(prompt, insights_schema(findings), max_tokens=max_tokens)
    try:
        answer = ModelInsights.model_validate(json.loads(generation.text))
    except (ValueError, ValidationError):
        raise ExtractionError("model output does not match the insights schema") from None
    return check_model_insights(report, answer, findings, report_date)


def with_model_insights(
    report: Report,
    rules: Insights,
    engine: ExtractionEngine,
    findings: Sequence[CriticalFinding],
    report_date: date | None,
    *,
    max_tokens: int = INSIGHTS_MAX_TOKENS,
) -> Insights:
    """`rules` merged with the model's checked insights; `rules` alone when the model's answer
    is not valid (logged without report text)."""
    try:
        found = model_insights(report, engine, findings, report_date, max_tokens=max_tokens)
    except ExtractionError as exc:
        log.warning("insights: the model's answer was not used (%s)", type(exc).__name__)
        return rules
    return merge_insights(rules, found, findings)
