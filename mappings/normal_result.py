"""Whether one template's extraction says the whole study is normal, and the DiagnosticReport
`conclusionCode` it then gets (issue 21 item 3).

A study is normal when a global normal statement of its template (a `normal_statements` entry
with id `global` or `global_*`: "Normal CT of the head", "Geen afwijkingen", "Unauffälliger
Befund") is the evidence of an absent finding, and no presence variable of the template is
present or uncertain (a finding stated elsewhere wins, as in `workers/normals.py`). Templates
without a global statement (the chest and brain MRI templates) never say so. The code is SNOMED
CT 281900007 "No abnormality detected (finding)" (`mappings.terminology`).
"""

from __future__ import annotations

from mappings.report import Extraction, FindingStatus
from mappings.template import Template, VariableType

NORMAL_RESULT = "281900007"
"""SNOMED CT No abnormality detected (finding): GPS 2019 and 20200930."""
_ABNORMAL = (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)


def _global_phrases(template: Template) -> tuple[str, ...]:
    return tuple(
        phrase.casefold()
        for statement in template.normal_statements
        if statement.id == "global" or statement.id.startswith("global_")
        for phrases in statement.phrases.values()
        for phrase in phrases
    )


def is_normal_study(template: Template, extraction: Extraction) -> bool:
    """True when a global normal statement makes a finding absent and no finding is present or
    uncertain (see the module docstring)."""
    phrases = _global_phrases(template)
    if not phrases:
        return False
    presence = {v.id for v in template.variables if v.type is VariableType.PRESENCE}
    values = [value for value in extraction.values if value.variable_id in presence]
    if any(value.status in _ABNORMAL for value in values):
        return False
    return any(
        value.status is FindingStatus.ABSENT
        and value.evidence is not None
        and value.evidence.verified
        and any(phrase in value.evidence.quote.casefold() for phrase in phrases)
        for value in values
    )
