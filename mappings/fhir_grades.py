"""Grade and severity `component`s of a finding's Observation (issue 21).

A present or uncertain finding with stated grades (`FindingValue.grades`, from `workers.grades`)
gets one `component` per grade, in text order, on its first Observation only (as sizes, so a
grade is never stated twice):
- `code`: the template attribute's code where it cites one, else text only, the attribute's label
  ("Kellgren-Lawrence grade", "Grade", "Severity"): no code for a Kellgren-Lawrence, Fazekas or
  hydronephrosis grade is verified (the attribute's `uncoded_reason`), and none is invented;
- an integer grade: `valueInteger`, the number in the attribute's scale ("graad III" -> 3);
- a severity: `valueCodeableConcept` with the option's code where the template cites one (SNOMED
  CT 255604002 Mild, 6736007 Moderate, 24484000 Severe, SNOMED CT GPS) and, as `text`, the
  word exactly as the report writes it ("geringgradige", "forse").
Each component carries the evidence extension: the grade as written (`quote`), `start`, `end`,
and `attribute` (the template attribute id), which tells a grade component apart
(`is_grade_component`). A reviewer's correction to absent removes them (`mappings.review`).
"""

from __future__ import annotations

from typing import Any

from mappings.fhir_components import code_concept
from mappings.report import FindingStatus, FindingValue, StatedGrade
from mappings.template import Attribute, Template

Resource = dict[str, Any]

ATTRIBUTE_PART = "attribute"
"""The evidence sub-extension naming the template attribute of a grade component."""


def _evidence(grade: StatedGrade, evidence_url: str) -> Resource:
    parts: list[Resource] = [{"url": "quote", "valueString": grade.evidence.quote}]
    if grade.evidence.start is not None and grade.evidence.end is not None:
        parts += [
            {"url": "start", "valueInteger": grade.evidence.start},
            {"url": "end", "valueInteger": grade.evidence.end},
        ]
    parts.append({"url": ATTRIBUTE_PART, "valueString": grade.attribute})
    return {"url": evidence_url, "extension": parts}


def _value(attribute: Attribute, grade: StatedGrade) -> Resource:
    if isinstance(grade.value, int):
        return {"valueInteger": grade.value}
    option = next((o for o in attribute.options if o.id == grade.value), None)
    code = None if option is None else option.code
    return {"valueCodeableConcept": code_concept(code, grade.text)}


def grade_components(template: Template, value: FindingValue, evidence_url: str) -> list[Resource]:
    """The components of a finding's grades (none for an absent or unmentioned finding, nor for
    a grade of an attribute the template does not declare)."""
    if value.status not in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN):
        return []
    components: list[Resource] = []
    for grade in value.grades:
        try:
            attribute = template.attribute(grade.attribute)
        except KeyError:
            continue
        components.append(
            {
                "extension": [_evidence(grade, evidence_url)],
                "code": code_concept(attribute.code, attribute.label),
                **_value(attribute, grade),
            }
        )
    return components


def is_grade_component(component: Resource) -> bool:
    """True for a component `grade_components` made (its evidence names an attribute)."""
    return any(
        part.get("url") == ATTRIBUTE_PART
        for extension in component.get("extension") or []
        for part in extension.get("extension") or []
    )
