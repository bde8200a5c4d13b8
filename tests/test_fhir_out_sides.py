"""Sides in the Bundle (issue 21): a finding's stated side is the laterality of its Observation's
`bodySite` (the `EXTENSION_BASE/laterality` extension, coded with the template's side option:
SNOMED CT 24028007 Right, 7771000 Left, verified in ../shared/terminology/snomed-gps-2019.tsv and
cited in each template's `side` attribute); bilateral gives one Observation per side, as the
bilateral location gives one per lung; a site that carries its own side gets no second one."""

from __future__ import annotations

from typing import Any

from mappings.fhir_out import LATERALITY_EXTENSION, build_bundle, observation_references
from mappings.observation_sites import carries_side
from mappings.report import FindingStatus, FindingValue, Report
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules

Resource = dict[str, Any]


def _report(text: str) -> Report:
    return Report(
        source_format="hl7v2", report_id="r", language="en", text=text,
        sections=find_sections(text),
    )  # fmt: skip


def _observations(bundle: Resource, code_text: str) -> list[Resource]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        and entry["resource"]["code"]["text"] == code_text
    ]


def _laterality(observation: Resource) -> str | None:
    site = observation.get("bodySite", {})
    found = [e for e in site.get("extension", []) if e["url"] == LATERALITY_EXTENSION]
    if not found:
        return None
    (extension,) = found
    (coding,) = extension["valueCodeableConcept"]["coding"]
    assert coding["system"] == "http://snomed.info/sct"
    return str(coding["code"])


def _bundle(template_id: str, text: str) -> Resource:
    report, template = _report(text), get_template(template_id)
    return build_bundle(report, extract_rules(report, template), template)


def test_a_stated_side_is_the_laterality_of_the_sites_body_site() -> None:
    template = get_template("abdomen")
    bundle = _bundle("abdomen", "A 6 mm calculus in the right kidney. No hydronephrosis.")
    (stone,) = _observations(bundle, template.variable("urolithiasis").label)
    assert _laterality(stone) == "24028007"  # Right (qualifier value)
    kidney = template.location("kidney").code
    assert kidney is not None
    assert stone["bodySite"]["coding"][0]["code"] == kidney.code
    assert stone["bodySite"]["text"] == template.location("kidney").label
    (absent,) = _observations(bundle, template.variable("hydronephrosis").label)
    assert "bodySite" not in absent


def test_a_side_without_a_site_is_the_body_site_text_and_laterality() -> None:
    bundle = _bundle("abdomen", "Left hydronephrosis.")
    label = get_template("abdomen").variable("hydronephrosis").label
    (hydronephrosis,) = _observations(bundle, label)
    assert _laterality(hydronephrosis) == "7771000"  # Left (qualifier value)
    assert hydronephrosis["bodySite"]["text"] == "left"
    assert "coding" not in hydronephrosis["bodySite"]


def test_a_side_of_a_coded_site_in_another_template() -> None:
    template = get_template("msk_radiograph")
    bundle = _bundle("msk_radiograph", "Fracture of the left distal radius.")
    (fracture,) = _observations(bundle, template.variable("fracture").label)
    assert _laterality(fracture) == "7771000"  # Left (qualifier value)
    assert fracture["bodySite"]["text"] == template.location("radius").label


def test_bilateral_gives_one_observation_per_side_with_distinct_ids() -> None:
    template = get_template("abdomen")
    report = _report("Bilateral renal calculi. Bilateral hydronephrosis.")
    extraction = extract_rules(report, template)
    bundle = build_bundle(report, extraction, template)
    for variable_id in ("urolithiasis", "hydronephrosis"):
        observations = _observations(bundle, template.variable(variable_id).label)
        assert sorted(_laterality(o) or "" for o in observations) == ["24028007", "7771000"]
        assert len({o["id"] for o in observations}) == 2
        (value,) = [v for v in extraction.values if v.variable_id == variable_id]
        references = observation_references(report, template, value, extraction.values)
        assert references == [f"Observation/{o['id']}" for o in observations]
    (hydronephrosis, _) = _observations(bundle, template.variable("hydronephrosis").label)
    assert hydronephrosis["bodySite"]["text"] in ("right", "left")


def test_one_side_keeps_the_sites_observation_id() -> None:
    """Replaying a report after sides reached FHIR updates its Observation, never duplicates."""
    template = get_template("abdomen")
    report = _report("A 6 mm calculus in the right kidney.")
    extraction = extract_rules(report, template)
    sideless = extraction.model_copy(
        update={"values": tuple(v.model_copy(update={"sides": ()}) for v in extraction.values)}
    )
    label = template.variable("urolithiasis").label
    (with_side,) = _observations(build_bundle(report, extraction, template), label)
    (without,) = _observations(build_bundle(report, sideless, template), label)
    assert with_side["id"] == without["id"]
    assert _laterality(without) is None


def test_a_site_that_carries_its_side_gets_no_second_one() -> None:
    template = get_template("chest_findings")
    assert carries_side(template.location("right_lung"))
    assert not carries_side(get_template("abdomen").location("kidney"))
    variable = next(v for v in template.variables if "right_lung" in v.locations)
    value = FindingValue(
        variable_id=variable.id, status=FindingStatus.PRESENT, locations=("right_lung",),
        sides=("right",),
    )  # fmt: skip
    report = _report("Right sided finding.")
    extraction = extract_rules(report, template).model_copy(update={"values": (value,)})
    (observation,) = _observations(build_bundle(report, extraction, template), variable.label)
    assert _laterality(observation) is None
    assert observation["bodySite"]["text"] == template.location("right_lung").label
