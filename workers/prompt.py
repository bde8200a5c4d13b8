"""Prompt building: template instructions and schema first (shared prefix), report text last."""

from __future__ import annotations

from typing import Protocol

from mappings.report import Report
from mappings.template import Template, prompt_definitions

INSTRUCTIONS = """You extract findings from a radiology report into JSON.
For every variable give, in this order:
- "evidence": the shortest exact quote from the report that states the finding (copied verbatim, same language, at least a few words), or null when the report does not mention it;
- "status": "present", "absent" (explicitly negated, e.g. "no effusion"), "uncertain" (possible, cannot be excluded, questionable) or "not_mentioned";
- "locations": the location ids stated for the finding, or null.
Do not translate the report. Do not guess: a finding the report does not mention is "not_mentioned" with evidence null."""


class ChatFormatter(Protocol):
    """Anything that formats a system+user chat turn (the engine does)."""

    def chat_prompt(self, system: str, user: str) -> str: ...


def system_text(template: Template) -> str:
    """The fixed part of the prompt for a template: identical for every report."""
    return f"{INSTRUCTIONS}\n\n{prompt_definitions(template)}"


def user_text(report: Report) -> str:
    """The per-report part, in the report's own language."""
    return f"Report:\n{report.text}\n\nAnswer with the JSON object."


def build_prompt(formatter: ChatFormatter, template: Template, report: Report) -> str:
    """The full prompt: the template's shared prefix, then the report."""
    return formatter.chat_prompt(system_text(template), user_text(report))
