"""Typed values -> FHIR R4 Observations (valueInteger, valueQuantity, option concepts, qualifier
components, derivedFrom) and -> ORU^R01 OBX (NM / CWE); every Bundle passes the validator."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conformance.validate import validate_resource
from mappings.errors import FhirMappingError
from mappings.fhir_out import build_bundle
from mappings.hl7.oru_out import oru_from_bundle
from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    ModelInfo,
    PatientIdentifier,
    Report,
    Stage,
)
from mappings.template import Template, load_template

TYPED: Template = load_template(
    Path(__file__).resolve().parent / "fixtures" / "templates" / "typed_demo.yaml"
)
TEXT = "Fazekas grade 2. LVEF 45,5 %. Mild cardiomegaly. Right pleural effusion, unchanged."
REPORT = Report(
    source_format="hl7v2",
    report_id="M1-1",
    message_control_id="M1",
    sending_facility="HOSP",
    accession_number="ACC-T1",
    patient_identifiers=(PatientIdentifier(value="MRN-T1", assigner="HOSP"),),
    observation_time=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
    text=TEXT,
)
MODEL = ModelInfo(name="test-model", sha256="a" * 64)


def _value(variable: str, quote: str, **fields: Any) -> FindingValue:
    start = TEXT.index(quote)
    return FindingValue(
        variable_id=variable,
        evidence=Evidence(quote=quote, start=start, end=start + len(quote)),
        confidence=0.9,
        stage=Stage.HYBRID,
        **{"status": FindingStatus.PRESENT, **fields},
    )


def _extraction(*values: FindingValue) -> Extraction:
    given = {v.variable_id: v for v in values}
    return Extraction(
        report_id=REPORT.report_id,
        template_id=TYPED.id,
        template_version=TYPED.version,
        model=MODEL,
        stage=Stage.HYBRID,
        values=tuple(
            given.get(v.id, FindingValue(variable_id=v.id, status=FindingStatus.NOT_MENTIONED))
            for v in TYPED.variables
        ),
        created=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
    )


FULL = _extraction(
    _value("fazekas", "Fazekas grade 2", value=2),
    _value("lvef", "LVEF 45,5 %", value=45.5, unit="%"),
    _value("heart_size", "Mild cardiomegaly", value="enlarged"),
    _value(
        "pleural_effusion",
        "Right pleural effusion, unchanged",
        value="stable",
        locations=("right_lung",),
    ),
)


def _observations(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            variable = next(
                sub["valueString"]
                for sub in resource["extension"][0]["extension"]
                if sub["url"] == "variable"
            )
            found[variable] = resource
    return found


def test_every_type_has_its_fhir_shape_and_the_bundle_is_valid_r4() -> None:
    bundle = build_bundle(REPORT, FULL, TYPED)
    assert validate_resource(bundle, path="typed") == []
    observations = _observations(bundle)
    assert observations["fazekas"]["valueInteger"] == 2
    assert observations["fazekas"]["code"] == {"text": "Fazekas score"}  # uncoded: text only
    assert observations["lvef"]["valueQuantity"] == {
        "value": 45.5,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert observations["heart_size"]["valueCodeableConcept"] == {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "8186001",
                "display": "Cardiomegaly (disorder)",
            }
        ],
        "text": "Cardiomegaly",
    }
    effusion = observations["pleural_effusion"]
    assert effusion["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    assert effusion["component"] == [
        {"code": {"text": "Episode"}, "valueCodeableConcept": {"text": "Stable"}}
    ]
    assert effusion["bodySite"]["coding"][0]["code"] == "3341006"
    for observation in observations.values():
        assert "derivedFrom" not in observation


def test_uncoded_enum_option_is_text_only_and_valid() -> None:
    extraction = _extraction(_value("heart_size", "Mild cardiomegaly", value="normal_size"))
    bundle = build_bundle(REPORT, extraction, TYPED)
    assert validate_resource(bundle, path="typed") == []
    heart = _observations(bundle)["heart_size"]
    assert heart["valueCodeableConcept"] == {"text": "Normal heart size"}


def test_whole_number_and_uncertain_typed_values_are_valid() -> None:
    extraction = _extraction(
        _value("lvef", "LVEF 45,5 %", value=38.0, unit="%", status=FindingStatus.UNCERTAIN,
               flags=("evidence_off_topic",)),
        _value("fazekas", "Fazekas grade 2", value=0),
    )  # fmt: skip
    bundle = build_bundle(REPORT, extraction, TYPED)
    assert validate_resource(bundle, path="typed") == []
    observations = _observations(bundle)
    assert observations["lvef"]["valueQuantity"]["value"] == 38
    assert observations["fazekas"]["valueInteger"] == 0
    flags = [
        s["valueCode"]
        for s in observations["lvef"]["extension"][0]["extension"]
        if s["url"] == "flag"
    ]
    assert flags == ["evidence_off_topic"]


def test_typed_value_without_a_value_gives_no_observation() -> None:
    dropped = _value(
        "fazekas", "Fazekas grade 2", value=None, status=FindingStatus.UNCERTAIN,
        flags=("value_invalid",),
    )  # fmt: skip
    bundle = build_bundle(REPORT, _extraction(dropped), TYPED)
    assert validate_resource(bundle, path="typed") == []
    assert _observations(bundle) == {}


def test_derived_from_links_the_earlier_observation_and_ids_stay_deterministic() -> None:
    earlier = (
        "Observation/" + _observations(build_bundle(REPORT, FULL, TYPED))["pleural_effusion"]["id"]
    )
    later_report = REPORT.model_copy(update={"accession_number": "ACC-T2", "report_id": "M2-1"})
    later = _extraction(
        _value("pleural_effusion", "Right pleural effusion, unchanged", value="stable",
               locations=("right_lung",)),
    ).model_copy(update={"report_id": "M2-1"})  # fmt: skip
    bundle = build_bundle(later_report, later, TYPED, derived_from={"pleural_effusion": earlier})
    assert validate_resource(bundle, path="typed") == []
    observation = _observations(bundle)["pleural_effusion"]
    assert observation["derivedFrom"] == [{"reference": earlier}]
    assert "Observation/" + observation["id"] != earlier  # another report, another id
    again = build_bundle(later_report, later, TYPED, derived_from={"pleural_effusion": earlier})
    assert again == bundle


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"nothing": "Observation/abc"}, "unknown variable"),
        ({"fazekas": "DiagnosticReport/abc"}, "Observation/<id>"),
        ({"fazekas": "Observation/has space"}, "Observation/<id>"),
    ],
)
def test_bad_derived_from_is_refused(links: dict[str, str], message: str) -> None:
    with pytest.raises(FhirMappingError, match=message):
        build_bundle(REPORT, FULL, TYPED, derived_from=links)


def test_option_not_in_the_template_is_a_mapping_error() -> None:
    bad = _extraction(_value("heart_size", "Mild cardiomegaly", value="huge"))
    with pytest.raises(FhirMappingError, match="unknown option"):
        build_bundle(REPORT, bad, TYPED)


def test_oru_has_nm_with_ucum_units_and_cwe_for_options_and_qualifiers() -> None:
    message = oru_from_bundle(
        build_bundle(REPORT, FULL, TYPED), control_id="OUT1", now=datetime(2026, 11, 23, tzinfo=UTC)
    ).decode("utf-8")
    obx = [segment.split("|") for segment in message.split("\r") if segment.startswith("OBX")]
    by_code = {fields[3]: fields for fields in obx}
    fazekas = by_code["^Fazekas score"]
    assert (fazekas[2], fazekas[5], fazekas[6]) == ("NM", "2", "")
    lvef = by_code["^Left ventricular ejection fraction"]
    assert (lvef[2], lvef[5], lvef[6]) == ("NM", "45.5", "%^%^UCUM")
    heart = by_code["^Heart size"]
    assert (heart[2], heart[5]) == ("CWE", "8186001^Cardiomegaly (disorder)^SCT")
    effusion = by_code["60046008^Pleural effusion (disorder)^SCT"]
    episode = by_code["^Episode"]
    assert (effusion[2], effusion[5]) == ("CWE", "52101004^Present (qualifier value)^SCT")
    assert (episode[2], episode[5]) == ("CWE", "^Stable")
    assert effusion[4] == episode[4] != ""  # one sub-id groups the finding and its qualifier
    assert int(episode[1]) == int(effusion[1]) + 1
    assert [int(fields[1]) for fields in obx] == list(range(1, len(obx) + 1))
    assert effusion[20] == "3341006^Right lung structure (body structure)^SCT"


def test_oru_of_typed_bundle_parses_back() -> None:
    from mappings.hl7.oru_in import parse_oru

    message = oru_from_bundle(build_bundle(REPORT, FULL, TYPED), control_id="OUT2")
    (parsed,) = parse_oru(message).reports  # the reader takes the NM/CWE OBX back
    assert parsed.accession_number == "ACC-T1"
    assert "Stable" in parsed.text
