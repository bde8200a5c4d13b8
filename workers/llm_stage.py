"""Per report and template: prompt -> constrained decode -> parse -> evidence check -> Extraction.

Evidence rules (docs/architecture.md 'Contracts': evidence first): a value other than `not_mentioned` must rest on a
verbatim quote found in the report text. When the quote is missing, too short to carry meaning,
not found, or off topic, the value is DOWNGRADED, never kept silently: `present`/`absent` become
`uncertain`, the confidence is halved and a flag says why (`evidence_missing`,
`evidence_too_short`, `evidence_not_found`, `evidence_off_topic`). A quote is off topic when it
names none of the variable's terms (label, synonyms in any language, enum options) and - in
hybrid, where stage 1 knows them - overlaps no stage-1 span of that variable.

Typed variables (ordinal, number, enum): `status` is `present` when the model gave a value,
`not_mentioned` when it gave null, `uncertain` when the evidence check downgraded it (the value is
kept); a value outside the scale/range/options is dropped, flagged `value_invalid`. A presence
variable's qualifier goes to `FindingValue.value` (dropped when the finding is absent).

Confidence: the probability the model gave the chosen value. After `"status":"` (presence) or
`"value":` (typed) the first token that is not forced by the schema is the one that tells the
values apart (e.g. `pres` vs `abs`, `2` vs `3`); its probability, renormalised over the tokens the
schema allowed at that step, is the confidence. The rest of the value is forced (probability 1).
If the whole value was forced (a null quote forces not_mentioned / null), the confidence is that
of the first free token of the evidence value, where the model chose between quoting and null.
An engine that returns no log-probabilities (a server without them) gives confidence None
(unavailable) for every value: never a number made up.

The engine is any `ExtractionEngine` (workers.extraction_engine): the in-process llama.cpp
model or an OpenAI-compatible server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
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
    ScalarValue,
    Stage,
)
from mappings.template import Template, Variable, VariableType
from mappings.template_output import Answer, TypedAnswer, output_json_schema, output_model
from workers.decoding import TokenStep
from workers.errors import ExtractionError
from workers.evidence import is_meaningful, locate_quote, mentions_any
from workers.extraction_engine import ChatPrompt, ExtractionEngine, Generation
from workers.prompt import system_text, user_text

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


_VALUE_KEY = re.compile(r'"(?:status|value)":')


def status_confidences(generation: Generation, variable_ids: Sequence[str]) -> dict[str, float]:
    """Per variable, the probability of the chosen status or value (see module docstring);
    empty when the generation carries no log-probabilities (confidence unavailable)."""
    if not generation.has_logprobs:
        return {}
    spans: list[tuple[int, int, TokenStep]] = []
    offset = 0
    for step in generation.steps:
        spans.append((offset, offset + len(step.text), step))
        offset += len(step.text)
    text = "".join(step.text for step in generation.steps)
    result: dict[str, float] = {}
    for variable_id in variable_ids:
        opened = re.search(rf'"{re.escape(variable_id)}":\{{', text)
        if opened is None:
            continue
        key = _VALUE_KEY.search(text, opened.end())
        if key is None:
            continue
        value_start = key.end()
        if text.startswith('"', value_start):  # a string value: skip its opening quote
            value_start += 1
            value_end = text.find('"', value_start)
        else:  # a number or null ends at the next separator
            ends = [i for i in (text.find(",", value_start), text.find("}", value_start)) if i >= 0]
            value_end = min(ends) if ends else len(text)
        evidence_start = text.find('"evidence":', opened.end()) + len('"evidence":')
        confidence = _first_free_probability(spans, value_start, max(value_end, value_start + 1))
        if confidence is None:
            # the grammar forced the value (a null quote forces not_mentioned / null): the
            # decision was the first free token of the evidence value
            confidence = _first_free_probability(spans, evidence_start, key.start())
        result[variable_id] = round(1.0 if confidence is None else confidence, 4)
    return result


def _downgrade(status: FindingStatus) -> FindingStatus:
    if status in (FindingStatus.PRESENT, FindingStatus.ABSENT):
        return FindingStatus.UNCERTAIN
    return status


def typed_value(variable: Variable, raw: object) -> ScalarValue:
    """`raw` as the variable's value type when it is valid (in scale/range/options), else None."""
    if raw is None or isinstance(raw, bool):
        return None
    if variable.type is VariableType.ORDINAL and variable.scale is not None:
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, int) and variable.scale.min <= raw <= variable.scale.max:
            return raw
        return None
    if variable.type is VariableType.NUMBER:
        if not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return None
        bounds = variable.range
        if bounds is not None and not bounds.min <= raw <= bounds.max:
            return None
        return float(raw)
    if variable.type is VariableType.ENUM:
        return raw if isinstance(raw, str) and raw in {o.id for o in variable.options} else None
    return None


def _overlaps(span: tuple[int, int], others: Sequence[tuple[int, int]]) -> bool:
    return any(start < span[1] and span[0] < end for start, end in others)


def _check_evidence(
    report: Report,
    variable: Variable,
    quote: str,
    stage1_spans: Sequence[tuple[int, int]] | None,
) -> tuple[Evidence | None, str | None]:
    """The located evidence and the problem with it (None when the quote holds)."""
    if not quote:
        return None, "evidence_missing"
    if not is_meaningful(quote):
        return Evidence(quote=quote), "evidence_too_short"
    span = locate_quote(report.text, quote)
    if span is None:
        return Evidence(quote=quote), "evidence_not_found"
    evidence = Evidence(quote=report.text[span[0] : span[1]], start=span[0], end=span[1])
    on_topic = mentions_any(evidence.quote, variable.terms()) or (
        stage1_spans is not None and _overlaps(span, stage1_spans)
    )
    return evidence, None if on_topic else "evidence_off_topic"


def finding_value(
    report: Report,
    template: Template,
    variable_id: str,
    answer: Answer,
    confidence: float | None,
    *,
    stage1_spans: Sequence[tuple[int, int]] | None = None,
) -> FindingValue:
    """Check one variable's answer against the report text and the template.

    `stage1_spans`: the (start, end) spans where stage 1 found this variable (hybrid only); a
    quote overlapping one is on topic even when it names none of the variable's terms.
    """
    variable = template.variable(variable_id)
    flags: list[str] = []
    allowed = set(variable.locations)
    locations = tuple(dict.fromkeys(answer.locations or ()))
    if any(loc not in allowed for loc in locations):
        flags.append("unknown_location_dropped")
        locations = tuple(loc for loc in locations if loc in allowed)
    value: ScalarValue = None
    unit: str | None = None
    if isinstance(answer, TypedAnswer):
        if variable.type is VariableType.PRESENCE:
            raise ExtractionError(f"{variable_id} is a presence variable, got a typed answer")
        status = FindingStatus.NOT_MENTIONED if answer.value is None else FindingStatus.PRESENT
        value = typed_value(variable, answer.value)
        if answer.value is not None and value is None:
            flags.append("value_invalid")
        if variable.unit is not None and value is not None:
            unit = variable.unit.code
    else:
        if variable.type is not VariableType.PRESENCE:
            raise ExtractionError(f"{variable_id} is a {variable.type} variable, got a status")
        status = answer.status
        if variable.qualifier is not None:
            chosen = getattr(answer, variable.qualifier.id, None)
            known = {option.id for option in variable.qualifier.options}
            if chosen is not None and chosen not in known:
                flags.append("unknown_qualifier_dropped")
            elif status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN):
                value = chosen
    if status is FindingStatus.NOT_MENTIONED:
        return FindingValue(
            variable_id=variable_id,
            status=status,
            confidence=confidence,
            stage=Stage.LLM,
            flags=tuple(flags),
        )
    evidence, problem = _check_evidence(
        report, variable, (answer.evidence or "").strip(), stage1_spans
    )
    if "value_invalid" in flags and problem is None:
        problem = "value_invalid"
        flags.remove("value_invalid")
    if problem is not None:
        flags.append(problem)
        status = _downgrade(status)
        confidence = None if confidence is None else round(confidence * DOWNGRADE_FACTOR, 4)
    return FindingValue(
        variable_id=variable_id,
        status=status,
        value=value,
        unit=unit,
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


def max_tokens_for(template: Template, settings: Settings) -> int:
    """The output cap: RADBRIDGE_MAX_TOKENS, or the template's `max_tokens` when larger."""
    return max(settings.max_tokens, template.max_tokens or 0)


def extract(
    report: Report,
    template: Template,
    engine: ExtractionEngine,
    *,
    settings: Settings,
    hints: str | None = None,
    stage1_spans: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> Extraction:
    """Run the LLM stage for one report and template (`hints`: stage-1 candidates as text).

    `stage1_spans` (hybrid): per variable id, where stage 1 found it (evidence relevance).
    Raises ExtractionError when the model's output is incomplete or does not validate; no
    value is ever filled in by default.
    """
    prompt = ChatPrompt(system_text(template), user_text(report, hints))
    generation = engine.generate(
        prompt, output_json_schema(template), max_tokens=max_tokens_for(template, settings)
    )
    answer = parse_answer(template, generation.text)
    variable_ids = [variable.id for variable in template.variables]
    confidences = status_confidences(generation, variable_ids)
    values = tuple(
        finding_value(
            report,
            template,
            vid,
            getattr(answer, vid),
            confidences.get(vid),
            stage1_spans=None if stage1_spans is None else stage1_spans.get(vid, ()),
        )
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
