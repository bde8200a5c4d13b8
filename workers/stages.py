"""Run the configured stage (`rules`, `llm` or `hybrid`) and merge the two stages.

Hybrid: stage 1 (rules) runs first and its candidates go to the model as hints after the
report (the shared prefix stays shared). Per variable:
- an LLM value with a verified quote is kept when the rules agree or found nothing;
- when both stages state the variable and disagree, the rules value (whose quote is the clause it
  matched) is kept, flagged `stages_disagree`, with the LLM's confidence halved — it stays
  preliminary like every AI value;
- when the LLM says not mentioned or its value was downgraded (quote missing/unfound), a rules
  finding is used (flag `llm_unverified` when the LLM value was downgraded);
- otherwise the LLM value stands as it is (downgrades included: never dropped silently).

A finding's sizes, sides and grades (`FindingValue.sizes`, `.sides`, `.grades`) come from stage 1
only: the hybrid value keeps them when it is the rules value or agrees with it (the `llm` stage
alone gives none).

Agreement means the same status and the same value: the same integer, number (to 1e-6
relative) or option id for typed variables; for a presence qualifier, the same option when both
stages name one. The model also gets the stage-1 spans of each variable, so a quote that names
none of the variable's terms but lies where stage 1 found it is still on topic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from adapter.settings import Settings
from mappings.report import Extraction, FindingStatus, FindingValue, Report, ScalarValue, Stage
from mappings.template import Template
from workers.extraction_engine import ExtractionEngine
from workers.llm_stage import extract as extract_llm
from workers.rules_stage import extract_rules, variable_spans

DISAGREEMENT_FACTOR = 0.5


def _verified(value: FindingValue) -> bool:
    return value.evidence is not None and value.evidence.verified and not value.flags


def _same_value(a: ScalarValue, b: ScalarValue) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def agree(rules: FindingValue, llm: FindingValue) -> bool:
    """Same status and, where both stages give one, the same value."""
    if rules.status is not llm.status:
        return False
    return rules.value is None or llm.value is None or _same_value(rules.value, llm.value)


def merge_values(rules: FindingValue, llm: FindingValue) -> FindingValue:
    """One variable's hybrid value (see module docstring)."""
    rules_states = rules.status is not FindingStatus.NOT_MENTIONED
    if llm.status is not FindingStatus.NOT_MENTIONED and _verified(llm):
        if not rules_states or agree(rules, llm):
            sizes = rules.sizes if rules_states else ()
            sides = rules.sides if rules_states else ()
            grades = rules.grades if rules_states else ()
            return llm.model_copy(
                update={"stage": Stage.HYBRID, "sizes": sizes, "sides": sides, "grades": grades}
            )
        confidence = (
            None if llm.confidence is None else round(llm.confidence * DISAGREEMENT_FACTOR, 4)
        )
        return rules.model_copy(
            update={
                "stage": Stage.HYBRID,
                "flags": (*rules.flags, "stages_disagree"),
                "confidence": confidence,
            }
        )
    if rules_states:
        extra = ("llm_unverified",) if llm.status is not FindingStatus.NOT_MENTIONED else ()
        return rules.model_copy(update={"stage": Stage.HYBRID, "flags": (*rules.flags, *extra)})
    return llm.model_copy(update={"stage": Stage.HYBRID})


def hints_text(rules: Extraction) -> str:
    """Stage-1 candidates as short lines for the prompt."""
    lines = []
    for value in rules.values:
        if value.status is not FindingStatus.NOT_MENTIONED and value.evidence is not None:
            where = f" ({', '.join(value.locations)})" if value.locations else ""
            verdict = value.status.value
            if value.value is not None:
                verdict += f" = {value.value}" + (f" {value.unit}" if value.unit else "")
            quote = " ".join(value.evidence.quote.split())  # one hint per line, wrapped or not
            lines.append(f'- {value.variable_id}: {verdict}{where}: "{quote}"')
    return "\n".join(lines)


def run_stage(
    report: Report,
    template: Template,
    settings: Settings,
    engine: Callable[[], ExtractionEngine],
) -> Extraction:
    """The extraction for `settings.stage`; `engine()` is only called when a model is needed
    (any `ExtractionEngine`: in-process llama.cpp or an OpenAI-compatible server)."""
    if settings.stage == "llm":
        return extract_llm(report, template, engine(), settings=settings)
    rules = extract_rules(report, template)
    if settings.stage == "rules":
        return rules
    llm = extract_llm(
        report,
        template,
        engine(),
        settings=settings,
        hints=hints_text(rules) or None,
        stage1_spans=variable_spans(report, template),
    )
    merged = tuple(merge_values(a, b) for a, b in zip(rules.values, llm.values, strict=True))
    return llm.model_copy(update={"values": merged, "stage": Stage.HYBRID})
