"""Golden files: hand-written HL7v2 fixtures -> Report -> FHIR Bundle, compared byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conformance.validate import validate_resource
from mappings.errors import MessageRejected
from mappings.fhir_out import build_bundle
from mappings.framing import split_frames
from mappings.hl7.oru_in import parse_oru
from mappings.template import get_template
from tests.golden import expected_extraction

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
GOOD = ["chest_ct", "chest_xray", "dutch_report", "german_report", "ft_escapes", "multi_obr"]
BAD = {
    "bad_not_oru": "not_oru_r01",
    "bad_no_narrative": "no_narrative",
    "bad_empty_obr_text": "no_narrative",
    "bad_pdf_only": "pdf_only",
}
UPDATE = os.environ.get("RADBRIDGE_UPDATE_GOLDEN") == "1"


def _bundles(name: str) -> dict[str, dict[str, object]]:
    template = get_template("chest_findings")
    expected = json.loads((HL7_DIR / f"{name}.expected.json").read_text("utf-8"))
    (frame,) = split_frames((HL7_DIR / f"{name}.hl7").read_bytes())
    parsed = parse_oru(frame.payload)
    assert [r.report_id for r in parsed.reports] == list(expected["reports"])
    return {
        report.report_id: build_bundle(
            report,
            expected_extraction(report, template, expected["reports"][report.report_id]),
            template,
        )
        for report in parsed.reports
    }


@pytest.mark.parametrize("name", GOOD)
def test_golden_bundle(name: str) -> None:
    bundles = _bundles(name)
    golden_path = HL7_DIR / f"{name}.fhir.json"
    rendered = json.dumps(bundles, indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        golden_path.write_text(rendered, "utf-8")
    assert golden_path.read_text("utf-8") == rendered


@pytest.mark.parametrize("name", GOOD)
def test_golden_bundle_is_valid_r4(name: str) -> None:
    golden = json.loads((HL7_DIR / f"{name}.fhir.json").read_text("utf-8"))
    for report_id, bundle in golden.items():
        assert validate_resource(bundle, path=report_id) == []


@pytest.mark.parametrize(("name", "reason"), sorted(BAD.items()))
def test_bad_twin_is_rejected(name: str, reason: str) -> None:
    (frame,) = split_frames((HL7_DIR / f"{name}.hl7").read_bytes())
    with pytest.raises(MessageRejected) as caught:
        parse_oru(frame.payload)
    assert caught.value.reason == reason
    assert caught.value.detail
    assert "TESTPATIENT" not in caught.value.detail


def test_junk_file_has_no_frame() -> None:
    assert split_frames((HL7_DIR / "bad_junk.hl7").read_bytes()) == []


def test_golden_chest_ct_shape() -> None:
    bundle = _bundles("chest_ct")["CT0001-1"]
    resources = [e["resource"] for e in bundle["entry"]]  # type: ignore[index]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    # 5 mentioned findings (3 present, 2 absent); 3 not mentioned -> no Observation
    assert len(observations) == 5
    effusion = next(o for o in observations if o["code"]["coding"][0]["code"] == "60046008")
    assert effusion["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    assert effusion["bodySite"]["coding"][0]["code"] == "3341006"
    assert effusion["status"] == "preliminary"
    nodule = next(o for o in observations if o["code"].get("text") == "Lung nodule")
    assert "coding" not in nodule["code"]  # uncoded concept: text only
    report = next(r for r in resources if r["resourceType"] == "DiagnosticReport")
    assert {x["reference"] for x in report["result"]} == {
        f"Observation/{o['id']}" for o in observations
    }
    assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])  # type: ignore[union-attr]


def test_bilateral_expands_to_one_observation_per_side() -> None:
    bundle = _bundles("chest_xray")["XR0002-1"]
    oedema = [
        e["resource"]
        for e in bundle["entry"]  # type: ignore[union-attr]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["code"]["coding"][0]["code"] == "19242006"
    ]
    assert sorted(o["bodySite"]["coding"][0]["code"] for o in oedema) == ["3341006", "44029006"]
    assert len({o["id"] for o in oedema}) == 2
