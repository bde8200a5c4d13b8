"""Choose the template(s) for a report from modality, body part, procedure code and keywords.

A template applies when the report's modality is one of its modalities (or the report has no
modality) AND one of: a procedure code it lists, a body part it lists, or one of its keywords in
the procedure name or in the report's exam/first lines. Nothing applies -> empty list (the caller
records `no template`; radbridge never guesses).
"""

from __future__ import annotations

import re

from mappings.report import Report
from mappings.template import Template

EXAM_PREFIX_CHARS = 200


def _keyword_hit(keywords: tuple[str, ...], text: str) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text, re.IGNORECASE) for k in keywords)


def applies(template: Template, report: Report) -> bool:
    """True when `template` is meant for `report`."""
    rule = template.applies_to
    if rule.modalities and report.modality and report.modality.upper() not in rule.modalities:
        procedure_text = (report.procedure.display or "") if report.procedure else ""
        if not any(mod in procedure_text.upper().split() for mod in rule.modalities):
            return False
    procedure = report.procedure
    if procedure and procedure.code and any(c.code == procedure.code for c in rule.procedure_codes):
        return True
    if report.body_part and report.body_part.upper() in rule.body_parts:
        return True
    exam = report.section_text("exam") or report.text[:EXAM_PREFIX_CHARS]
    haystack = " ".join(filter(None, [procedure.display if procedure else None, exam]))
    return any(_keyword_hit(words, haystack) for words in rule.keywords.values())


def route(report: Report, templates: list[Template]) -> list[Template]:
    """The templates that apply to `report`, in the given order."""
    return [template for template in templates if applies(template, report)]
