"""Per report and template: prompt -> constrained decode -> parse -> evidence check -> Extraction.

Evidence rules (DESIGN.md 'Evidence first'): a value other than `not_mentioned` must rest on a
verbatim quote found in the report text. When the quote is missing, too short to carry meaning
or not found, the value is DOWNGRADED, never kept silently: `present`/`absent` become
`uncertain`, the confidence is halved and a flag says why (`evidence_missing`,
`evidence_too_short`, `evidence_not_found`).

Confidence: the probability the model gave the chosen status. The status value is an enum, so
after `"status":"` the first token that is not forced by the schema is the one that tells the
four values apart (e.g. `pres` vs `abs`); its probability, renormalised over the tokens the
schema allowed at that step, is the confidence. The rest of the value is forced (probability 1).
If the whole value was forced (a null quote forces not_mentioned), the confidence is that of the
first free token of the evidence value, where the model chose between quoting and null.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError

from adapter.settings import Settings
from mappings.report import (
    Evidence,
    Extraction,
    ExtractionTimings,
    FindingStatus,
    FindingValue,
    Report,
    Stage,
)
from mappings.template import Template, VariableAnswer, output_json_schema, output_model
from workers.decoding import TokenStep
from workers.engine import Engine, Generation
from workers.errors import ExtractionError
from workers.evidence import is_meaningful, locate_quote
from workers.prompt import build_prompt

DOWNGRADE_FACTOR = 0.5


def _first_free_probability(
    spans: list[tuple[int, int, TokenStep]], start: int, end: int
) -> float | None:
    """Probability of the first non-forced token overlapping text[start:end], if any."""
    for span_start, span_end, step in spans:
        if span_end <= start or span_start >= end:
            continue
        if not step.forced:
            return math.exp(step.logprob)
    return None


def status_confidences(generation: Generation, variable_ids: Sequence[str]) -> dict[str, float]:
    """Per variable, the probability of the chosen status (see module docstring)."""
    spans: list[tuple[int, int, TokenStep]] = []
    offset = 0
    for step in generation.steps:
        spans.append((offset, offset + len(step.text), step))
        offset += len(step.text)
    text = "".join(step.text for step in generation.steps)
    result: dict[str, float] = {}
    for variable_id in variable_ids:
        match = re.search(rf'"{re.escape(variable_id)}":\{{.*?"status":"', text, re.DOTALL)
        if match is None:
            continue
        value_start = match.end()
        value_end = text.find('"', value_start)
        evidence_start = text.find('"evidence":', match.start()) + len('"evidence":')
        confidence = _first_free_probability(spans, value_start, value_end)
        if confidence is None:
            # the grammar forced the status (a null quote forces not_mentioned): the decision
            # was the first free token of the evidence value
            confidence = _first_free_probability(spans, evidence_start, value_start)
        result[variable_id] = round(1.0 if confidence is None else confidence, 4)
    return result


def _downgrade(status: FindingStatus) -> FindingStatus:
    if status in (FindingStatus.PRESENT, FindingStatus.ABSENT):
        return FindingStatus.UNCERTAIN
    return status


def finding_value(
    report: Report,
    template: Template,
    variable_id: str,
    answer: VariableAnswer,
    confidence: float | None,
) -> FindingValue:
    """Check one variable's answer against the report text and the template."""
    variable = template.variable(variable_id)
    flags: list[str] = []
    allowed = set(variable.locations)
    locations = tuple(dict.fromkeys(answer.locations or ()))
    if any(loc not in allowed for loc in locations):
        flags.append("unknown_location_dropped")
        locations = tuple(loc for loc in locations if loc in allowed)
    status = answer.status
    if status is FindingStatus.NOT_MENTIONED:
        return FindingValue(
            variable_id=variable_id,
            status=status,
            confidence=confidence,
            stage=Stage.LLM,
            flags=tuple(flags),
        )
    evidence: Evidence | None = None
    quote = (answer.evidence or "").strip()
    problem: str | None = None
    if not quote:
        problem = "evidence_missing"
    elif not is_meaningful(quote):
        problem = "evidence_too_short"
        evidence = Evidence(quote=quote)
    else:
        span = locate_quote(report.text, quote)
        if span is None:
            problem = "evidence_not_found"
            evidence = Evidence(quote=quote)
        else:
            evidence = Evidence(quote=report.text[span[0] : span[1]], start=span[0], end=span[1])
    if problem is not None:
        flags.append(problem)
        status = _downgrade(status)
        confidence = None if confidence is None else round(confidence * DOWNGRADE_FACTOR, 4)
    return FindingValue(
        variable_id=variable_id,
        status=status,
        locations=locations,
        evidence=evidence,
        confidence=confidence,
        stage=Stage.LLM,
        flags=tuple(flags),
    )


def parse_answer(template: Template, text: str) -> BaseModel:
    """Validate the model's JSON against the template's output model (ExtractionError if invalid)."""
    try:
        return output_model(template).model_validate_json(text)
    except ValidationError as exc:
        raise ExtractionError(
            f"model output does not match template {template.id}: {exc.error_count()} error(s)"
        ) from None


def extract(
    report: Report,
    template: Template,
    engine: Engine,
    *,
    settings: Settings,
    hints: str | None = None,
) -> Extraction:
    """Run the LLM stage for one report and template (`hints`: stage-1 candidates as text).

    Raises ExtractionError when the model's output is incomplete or does not validate; no
    value is ever filled in by default.
    """
    prompt = build_prompt(template, report, chat=engine, hints=hints)
    generation = engine.generate_json(
        prompt, output_json_schema(template), max_tokens=settings.max_tokens
    )
    answer = parse_answer(template, generation.text)
    variable_ids = [variable.id for variable in template.variables]
    confidences = status_confidences(generation, variable_ids)
    values = tuple(
        finding_value(report, template, vid, getattr(answer, vid), confidences.get(vid))
        for vid in variable_ids
    )
    return Extraction(
        report_id=report.report_id,
        template_id=template.id,
        template_version=template.version,
        model=engine.model_info,
        stage=Stage.LLM,
        values=values,
        created=datetime.now(UTC),
        timings=ExtractionTimings(
            seconds=generation.seconds,
            prompt_tokens=generation.prompt_tokens,
            prompt_tokens_evaluated=generation.prompt_tokens_evaluated,
            completion_tokens=generation.completion_tokens,
            forced_tokens=generation.forced_tokens,
        ),
    )
