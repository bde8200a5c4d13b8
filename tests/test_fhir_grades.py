"""Grades in the Bundle (issue 21): a finding's stated grades and severity are `component`s of
its first Observation (`mappings.fhir_grades`): the attribute as text-only `code` (no verified
code for a Kellgren-Lawrence or hydronephrosis grade), an integer grade as `valueInteger`, a
severity as `valueCodeableConcept` with the option's verified SNOMED CT code and the word as
written; each with its evidence (quote as written, offsets, attribute)."""

from __future__ import annotations

from typing import Any

from mappings.fhir_components import is_size_component
from mappings.fhir_grades import ATTRIBUTE_PART, grade_components, is_grade_component
from mappings.fhir_out import EVIDENCE_EXTENSION, build_bundle
from mappings.report import Evidence, FindingStatus, FindingValue, Report, StatedGrade
from mappings.review import Correction, Decision, Reviewer, review
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules

Resource = dict[str, Any]


def _report(text: str) -> Report:
    return Report(
        source_format="hl7v2", report_id="r", language="en", text=text,
        sections=find_sections(text),
    )  # fmt: skip


def _observations(template_id: str, text: str, variable_id: str) -> list[Resource]:
    report, template = _report(text), get_template(template_id)
    bundle = build_bundle(report, extract_rules(report, template), template)
    label = template.variable(variable_id).label
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        and entry["resource"]["code"]["text"] == label
    ]


def _parts(component: Resource) -> dict[str, Any]:
    (extension,) = component["extension"]
    assert extension["url"] == EVIDENCE_EXTENSION
    return {
        p["url"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in extension["extension"]
    }


def test_grade_and_severity_are_components_of_the_findings_observation() -> None:
    text = (
        "XR KNEE RIGHT\nModerate medial osteoarthritis, Kellgren-Lawrence grade III. No fracture."
    )
    (observation,) = _observations("msk_radiograph", text, "osteoarthritis")
    grades = [c for c in observation["component"] if is_grade_component(c)]
    severity, kl = grades
    assert severity["code"] == {"text": "Severity"}
    assert severity["valueCodeableConcept"]["text"] == "Moderate"  # as written
    (coding,) = severity["valueCodeableConcept"]["coding"]
    assert (coding["system"], coding["code"]) == ("http://snomed.info/sct", "6736007")
    assert kl["code"] == {"text": "Kellgren-Lawrence grade"}  # text only: no verified code
    assert kl["valueInteger"] == 3
    parts = _parts(kl)
    assert parts["quote"] == "Kellgren-Lawrence grade III"
    assert text[parts["start"] : parts["end"]] == "Kellgren-Lawrence grade III"
    assert parts[ATTRIBUTE_PART] == "kl_grade"
    assert not any(is_size_component(c) for c in grades)


def test_a_grade_goes_on_the_first_observation_only_and_never_on_an_absent_finding() -> None:
    text = "US KIDNEYS\nBilateral hydronephrosis, grade 2."
    observations = _observations("abdomen", text, "hydronephrosis")
    assert len(observations) == 2  # one per side
    with_grades = [o for o in observations if any(map(is_grade_component, o.get("component", [])))]
    assert len(with_grades) == 1
    (absent,) = _observations("abdomen", "US KIDNEYS\nNo hydronephrosis.", "hydronephrosis")
    assert "component" not in absent


def test_grades_of_undeclared_attributes_are_left_out() -> None:
    template = get_template("abdomen")
    evidence = Evidence(quote="grade 2", start=0, end=7)
    value = FindingValue(
        variable_id="hydronephrosis",
        status=FindingStatus.PRESENT,
        grades=(
            StatedGrade(attribute="grade", value=2, evidence=evidence),
            StatedGrade(attribute="kl_grade", value=2, evidence=evidence),
        ),
    )
    (component,) = grade_components(template, value, EVIDENCE_EXTENSION)
    assert component["valueInteger"] == 2 and component["code"] == {"text": "Grade"}
    absent = value.model_copy(update={"status": FindingStatus.ABSENT})
    assert grade_components(template, absent, EVIDENCE_EXTENSION) == []


def test_a_correction_to_absent_removes_the_grades() -> None:
    text = "XR KNEE RIGHT\nSevere osteoarthritis, KL 4."
    (observation,) = _observations("msk_radiograph", text, "osteoarthritis")
    observation["meta"]["versionId"] = "1"
    assert any(map(is_grade_component, observation["component"]))
    result = review(
        observation,
        get_template("msk_radiograph"),
        Decision.CORRECT,
        Reviewer("dr-a"),
        new_version=2,
        correction=Correction(status="absent"),
    )
    assert not any(map(is_grade_component, result.observation.get("component", [])))
