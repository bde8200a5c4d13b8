"""Prompt building: instructions, template definitions and answer format first, report last.

The system turn (`system_text`) depends only on the template, so its bytes - and tokens - are
identical for every report of that template and the engine reuses them from the KV cache. The
report follows in its own language (translation lowers accuracy), its wrapped lines joined into
sentences (`mappings.units`), then optional stage-1 hints (after the report, so they do not break
the shared prefix).
"""

from __future__ import annotations

from typing import Protocol

from mappings.report import FindingStatus, Report
from mappings.template import Template, VariableType
from mappings.template_output import EVIDENCE_MAX_CHARS, prompt_definitions
from mappings.units import flowed

INSTRUCTIONS = f"""You extract findings from a radiology report into JSON.
For every variable give, in this order:
- "evidence": the shortest exact quote from the report that states the finding, copied verbatim in the report's language (a few words, at most {EVIDENCE_MAX_CHARS} characters, never a bare "no"), or null when the report does not mention it;
- "status": "present", "absent" (explicitly negated, e.g. "no effusion"), "uncertain" (possible, cannot be excluded, questionable) or "not_mentioned";
- "locations": the location ids stated for the finding, or null.
Do not translate the report. Do not guess: a finding the report does not mention is "not_mentioned" with evidence null."""


class ChatFormatter(Protocol):
    """Anything that formats a system+user chat turn (`workers.engine.Engine` does)."""

    def chat_prompt(self, system: str, user: str) -> str:
        """The full prompt text, ending where the assistant's answer starts."""
        ...


class ChatML:
    """ChatML (SmolLM2, Qwen): the format used when no model's own template is at hand."""

    def chat_prompt(self, system: str, user: str) -> str:
        """ChatML system + user turns and the opened assistant turn."""
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )


def answer_format(template: Template) -> str:
    """A compact summary of the JSON schema the decoder enforces (one line per variable kind)."""
    statuses = "|".join(status.value for status in FindingStatus)
    keys = ", ".join(variable.id for variable in template.variables)
    presence = (
        f'{{"evidence": "<quote>"|null, "status": "{statuses}", '
        '"locations": ["<location id>", ...]|null}'
    )
    kinds = {variable.type for variable in template.variables}
    qualified = [v for v in template.variables if v.qualifier is not None]
    head = f"Answer with one JSON object with exactly these keys, in this order: {keys}.\n"
    if kinds == {VariableType.PRESENCE} and not qualified:
        return f"{head}Each value: {presence}"
    lines = [head.rstrip("\n")]
    if VariableType.PRESENCE in kinds:
        line = f"Presence variables: {presence}"
        if qualified:
            line += (
                '; a variable with a qualifier adds its key last, e.g. "'
                f'{qualified[0].qualifier.id}": "<option id>"|null'  # type: ignore[union-attr]
            )
        lines.append(line)
    typed = [
        kind.value for kind in VariableType if kind in kinds and kind is not VariableType.PRESENCE
    ]
    if typed:
        lines.append(
            f"{', '.join(typed).capitalize()} variables (marked [type] above): "
            '{"evidence": "<quote>"|null, "value": <the value as described>|null}, '
            'plus "locations" where locations are listed; value null (and evidence null) when '
            "the report does not state it, never a guess."
        )
    return "\n".join(lines)


def system_text(template: Template) -> str:
    """The fixed part of the prompt for a template: identical for every report."""
    return f"{INSTRUCTIONS}\n\n{prompt_definitions(template)}\n\n{answer_format(template)}"


def user_text(report: Report, hints: str | None = None) -> str:
    """The per-report part: the report text with each line wrapped inside a sentence joined
    (`mappings.units.flowed`: the model reads the units the rules stage reads; a quote copied
    from it is found in the report as written), then stage-1 hints if any."""
    text = f"Report:\n{flowed(report.text)}\n"
    if hints:
        text += f"\nCandidate findings from a rule-based reader (may be wrong):\n{hints}\n"
    return text + "\nAnswer with the JSON object."


def build_prompt(
    template: Template,
    report: Report,
    *,
    chat: ChatFormatter | None = None,
    hints: str | None = None,
) -> str:
    """The full prompt: the template's shared prefix, then the report (ChatML unless `chat`)."""
    formatter = chat if chat is not None else ChatML()
    return formatter.chat_prompt(system_text(template), user_text(report, hints))
