"""Sizes in the Bundle (issue 20 item 5, `mappings.fhir_components`): the finding's Observation
keeps its presence value and gets one component per stated dimension, UCUM mm or cm as stated,
coded Long axis (the largest of several) or Diameter; a size is never stated twice; the Bundle
passes the official R4 schema (`build_bundle` checks every Bundle)."""

from __future__ import annotations

from typing import Any

from mappings import terminology as term
from mappings.fhir_components import DIAMETER, LONG_AXIS
from mappings.fhir_out import EVIDENCE_EXTENSION, build_bundle
from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    Measurement,
    Report,
)
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules

Resource = dict[str, Any]


def _bundle(template_id: str, text: str, language: str = "en") -> tuple[Report, Resource]:
    report = Report(
        source_format="hl7v2", report_id="r", language=language, text=text,
        sections=find_sections(text),
    )  # fmt: skip
    template = get_template(template_id)
    return report, build_bundle(report, extract_rules(report, template), template)


def _observations(bundle: Resource, code_text: str) -> list[Resource]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        and entry["resource"]["code"]["text"] == code_text
    ]


def _dimensions(observation: Resource) -> list[tuple[str, float, str, str]]:
    """(component code, value, UCUM code, evidence quote) of the size components."""
    rows = []
    for component in observation.get("component", []):
        coding = component["code"]["coding"][0]
        if coding["code"] not in (LONG_AXIS, DIAMETER):
            continue
        quantity = component["valueQuantity"]
        assert quantity["system"] == term.UCUM and quantity["unit"] == quantity["code"]
        (evidence,) = component["extension"]
        assert evidence["url"] == EVIDENCE_EXTENSION
        quote = next(e["valueString"] for e in evidence["extension"] if e["url"] == "quote")
        rows.append((coding["code"], quantity["value"], quantity["code"], quote))
    return rows


def test_sizes_are_components_of_the_findings_observation() -> None:
    text = "Liver: a 3.2 x 2.1 cm hypodense lesion in segment 7, previously 2.5 cm."
    report, bundle = _bundle("abdomen", text)
    (observation,) = _observations(bundle, get_template("abdomen").variable("liver_lesion").label)
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "52101004"  # present
    assert _dimensions(observation) == [
        (LONG_AXIS, 3.2, "cm", "3.2 x 2.1 cm"),
        (DIAMETER, 2.1, "cm", "3.2 x 2.1 cm"),
    ]
    component = observation["component"][0]
    offsets = {e["url"]: e.get("valueInteger") for e in component["extension"][0]["extension"]}
    assert report.text[offsets["start"] : offsets["end"]] == "3.2 x 2.1 cm"


def test_several_sizes_of_one_finding_and_a_size_in_mm_as_stated() -> None:
    text = "Leberzyste von 3,1 cm in Segment 7 sowie ein 9 mm großes Hämangiom in Segment 3."
    _, bundle = _bundle("abdomen", text, "de")
    (observation,) = _observations(bundle, get_template("abdomen").variable("liver_lesion").label)
    assert _dimensions(observation) == [
        (DIAMETER, 3.1, "cm", "3,1 cm"),
        (DIAMETER, 9, "mm", "9 mm"),
    ]


def test_an_absent_finding_and_a_finding_without_size_have_no_size_component() -> None:
    _, bundle = _bundle("abdomen", "No 5 mm stone in the left kidney. Small amount of free fluid.")
    template = get_template("abdomen")
    for variable in ("urolithiasis", "free_fluid"):
        for observation in _observations(bundle, template.variable(variable).label):
            assert _dimensions(observation) == []


def test_the_codes_are_verified_linear_measurement_concepts() -> None:
    assert term.require(term.SNOMED, LONG_AXIS).display == "Long axis (qualifier value)"
    assert term.require(term.SNOMED, DIAMETER).display == "Diameter (qualifier value)"


def test_a_size_is_stated_once_when_the_finding_has_several_observations() -> None:
    """A finding with two sites gives two Observations: its size goes on the first only."""
    text = "Left kidney: 6 mm stone in the lower pole."
    report = Report(
        source_format="hl7v2", report_id="r", language="en", text=text,
        sections=find_sections(text),
    )  # fmt: skip
    template = get_template("abdomen")
    extraction = extract_rules(report, template)
    stone = extraction.value_of("urolithiasis")
    assert stone is not None and stone.status is FindingStatus.PRESENT
    sites = [loc for loc in template.variable("urolithiasis").locations][:2]
    size = Measurement(dims=(6.0,), unit="mm", evidence=Evidence(quote="6 mm", start=13, end=17))
    two_sites = stone.model_copy(update={"locations": tuple(sites), "sizes": (size,)})
    values = tuple(two_sites if v.variable_id == "urolithiasis" else v for v in extraction.values)
    bundle = build_bundle(
        report, Extraction.model_validate({**extraction.model_dump(), "values": values}), template
    )
    observations = _observations(bundle, template.variable("urolithiasis").label)
    assert len(observations) == 2
    assert [len(_dimensions(o)) for o in observations] == [1, 0]


def _liver_lesion() -> Resource:
    text = "Liver: a 3.2 x 2.1 cm hypodense lesion in segment 7."
    _, bundle = _bundle("abdomen", text)
    (observation,) = _observations(bundle, get_template("abdomen").variable("liver_lesion").label)
    return observation


def test_a_finding_corrected_to_absent_loses_its_sizes_and_one_corrected_to_uncertain_keeps_them() -> (
    None
):
    from mappings.review import Correction, Decision, Reviewer, review

    template = get_template("abdomen")
    absent = review(
        _liver_lesion(), template, Decision.CORRECT, Reviewer("r"), new_version=2,
        correction=Correction(status="absent"),
    ).observation  # fmt: skip
    assert _dimensions(absent) == []
    uncertain = review(
        _liver_lesion(), template, Decision.CORRECT, Reviewer("r"), new_version=2,
        correction=Correction(status="uncertain"),
    ).observation  # fmt: skip
    assert [row[1] for row in _dimensions(uncertain)] == [3.2, 2.1]
