"""Insights in the report's Bundle (issue 20 items 1-4): every report gets a Bundle, a report no
template applies to included; ServiceRequest, Flag, Communication and RADS Observations are
built, deterministic and valid (official R4 JSON schema, the R4B models, radbridge's link and
terminology checks); `radbridge eval` scores each insight kind on the labelled set."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from adapter.settings import Settings
from conformance.insights_eval import is_insights, run_insights_evaluation
from conformance.validate import validate_resource
from mappings.inbound import report_from_record
from mappings.report import Report
from mappings.template import load_builtin_templates
from tests.fakes import FakeEngine
from workers.process import NO_TEMPLATE, Result, process_reports

SET = Path(__file__).parent / "fixtures" / "labelled" / "insights.jsonl"
ABDOMEN = (
    "US ABDOMEN\n"
    "FINDINGS: Non-compressible appendix of 11 mm with periappendiceal fluid.\n"
    "IMPRESSION: Acute appendicitis. Incidental 2 cm left adnexal cyst, O-RADS US 2.\n"
    "Recommend follow-up pelvic ultrasound in 8-12 weeks.\n"
    "Findings discussed with Dr. Q. Example at 10:42."
)
CHEST_CT = (
    "CT CHEST LOW DOSE\n"
    "FINDINGS: 9 mm solid nodule in the right upper lobe. No pleural effusion.\n"
    "IMPRESSION: Solid nodule, Lung-RADS 4A. Recommend low-dose chest CT in 3 months."
)


def _report(report_id: str, text: str) -> Report:
    record = {"id": report_id, "text": text, "date": "2025-03-10T09:00:00"}
    return report_from_record(record, default_language="en")


def _run(*reports: Report, without: str = "") -> tuple[list[Result], list[str]]:
    """The rules stage over the built-in templates (less the template `without`: a deployment
    that has no template for the report)."""
    outcome = process_reports(
        list(reports),
        [t for t in load_builtin_templates().values() if t.id != without],
        Settings(stage="rules"),
        lambda: FakeEngine(""),
    )
    return outcome.results, [r.reason for r in outcome.rejected]


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _errors(bundle: dict[str, Any]) -> list[str]:
    return [p.message for p in validate_resource(bundle) if p.severity == "error"]


def test_a_report_no_template_applies_to_gets_its_bundle_and_insights() -> None:
    # the abdomen template (issue 21) would apply: without it, no template does
    results, reasons = _run(_report("abd-1", ABDOMEN), without="abdomen")
    assert reasons == [NO_TEMPLATE]  # still recorded
    (result,) = results
    assert result.template.id == "report_only" and result.bundle is not None
    record = result.record()
    assert record[NO_TEMPLATE].startswith("no template applies")
    assert record["values"] == [] and record["insights"]["critical"][0]["finding"] == "appendicitis"
    bundle = result.bundle
    assert _errors(bundle) == []
    (report,) = _resources(bundle, "DiagnosticReport")
    (service_request,) = _resources(bundle, "ServiceRequest")
    assert (service_request["status"], service_request["intent"]) == ("draft", "proposal")
    assert service_request["code"]["coding"][0] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "US",
        "display": "Ultrasound",
    }
    assert service_request["occurrencePeriod"] == {"start": "2025-05-05", "end": "2025-06-02"}
    assert "requester" not in service_request
    assert service_request["reasonReference"] == [{"reference": f"DiagnosticReport/{report['id']}"}]
    (flag,) = _resources(bundle, "Flag")
    assert flag["status"] == "active" and flag["code"]["text"].endswith("Acute appendicitis")
    assert flag["extension"][0]["valueReference"]["reference"] == f"DiagnosticReport/{report['id']}"
    (communication,) = _resources(bundle, "Communication")
    assert communication["recipient"] == [{"display": "Dr. Q. Example"}]
    rads, appendix, cyst = _resources(bundle, "Observation")
    assert rads["valueCodeableConcept"] == {"text": "2"} and rads["bodySite"] == {"text": "left"}
    # no template: every size is an Observation of its finding, named as written
    assert [appendix["code"], cyst["code"]] == [
        {"text": "Non-compressible appendix"},
        {"text": "Incidental left adnexal cyst"},
    ]
    assert cyst["valueCodeableConcept"]["coding"][0]["code"] == "52101004"  # Present
    assert [c["valueQuantity"]["value"] for c in cyst["component"]] == [2]
    assert cyst["component"][0]["valueQuantity"]["code"] == "cm"
    assert report["result"] == [
        {"reference": f"Observation/{o['id']}"} for o in (rads, appendix, cyst)
    ]
    (provenance,) = _resources(bundle, "Provenance")
    assert len(provenance["target"]) == 6
    for resource in (service_request, flag, communication, rads, appendix, cyst):
        assert resource["meta"]["security"][0]["code"] == "AIAST"
        evidence = next(e for e in resource["extension"] if e["url"].endswith("/evidence"))
        quote = next(s["valueString"] for s in evidence["extension"] if s["url"] == "quote")
        start, end = (
            next(s["valueInteger"] for s in evidence["extension"] if s["url"] == key)
            for key in ("start", "end")
        )
        assert ABDOMEN[start:end] == quote


def test_a_template_report_carries_its_insights_and_ids_are_deterministic() -> None:
    first, _ = _run(_report("ct-1", CHEST_CT))
    again, _ = _run(_report("ct-1", CHEST_CT))
    assert first and all(r.template.id != "report_only" for r in first)
    for result, repeat in zip(first, again, strict=True):
        assert result.bundle is not None and repeat.bundle is not None
        assert _errors(result.bundle) == []
        ids = [e["fullUrl"] for e in result.bundle["entry"]]
        assert ids == [e["fullUrl"] for e in repeat.bundle["entry"]]
        (service_request,) = _resources(result.bundle, "ServiceRequest")
        assert service_request["occurrenceDateTime"] == "2025-06-10"
        rads = [
            o for o in _resources(result.bundle, "Observation") if "Lung-RADS" in o["code"]["text"]
        ]
        assert [o["valueCodeableConcept"]["text"] for o in rads] == ["4A"]
        # the follow-up is for the finding of the sentence before it
        assert {"reference": f"Observation/{rads[0]['id']}"} in service_request["reasonReference"]
        # the nodule's 9 mm is on the template's nodule Observation only: never twice
        sizes = [
            c
            for o in _resources(result.bundle, "Observation")
            for c in o.get("component", [])
            if c["valueQuantity"]["value"] == 9
        ]
        assert len(sizes) == 1


def test_a_report_with_no_insight_gets_no_insight_resource() -> None:
    results, _ = _run(_report("abd-2", "US ABDOMEN\nIMPRESSION: Normal study."))
    (result,) = results
    assert result.bundle is not None
    kinds = {e["resource"]["resourceType"] for e in result.bundle["entry"]}
    assert kinds == {"Patient", "Device", "DiagnosticReport"}


def test_eval_scores_each_insight_kind_on_the_test_half() -> None:
    assert is_insights(SET)
    result, _ = run_insights_evaluation(SET, "test", resamples=50)
    kinds = result["kinds"]
    gold = {kind: m["tp"] + m["fn"] for kind, m in kinds.items()}
    # the test half's gold counts (tests/fixtures/labelled/README.md): the first 187 reports'
    # plus batch w5's 36 test reports, plus batch w6's 16 (RADS and mismatches only)
    assert gold == {
        "followups": 64 + 16,
        "critical": 28 + 14,
        "communications": 32 + 12,
        "communication recipients": 32 + 12,
        "rads": 27 + 18 + 14,
        "mismatches": 14 + 1 + 3,
        "sizes": 74 + 17,
    }
    # floors a little under what the rules measured when written (a regression guard, not the
    # issue's targets, which they do not all reach: see README 'Insights')
    floors = {
        "followups": 0.8,
        "critical": 0.85,
        "communications": 0.85,
        "rads": 0.8,
        "mismatches": 0.85,  # 0.897 with batch w5 (0.963 before it)
        "sizes": 0.9,
    }
    for kind, floor in floors.items():
        assert kinds[kind]["f1"] >= floor, (kind, kinds[kind]["f1"])
    assert kinds["sizes"]["recall"] >= 0.9  # issue 20's goal
    assert datetime.fromisoformat(result["created"])


def test_show_prints_the_insights_of_a_bundle() -> None:
    from app.show_insights import insight_rows

    results, _ = _run(_report("abd-1", ABDOMEN))
    assert results[0].bundle is not None
    rows = insight_rows(results[0].bundle)
    assert [row[0] for row in rows] == ["ServiceRequest", "Flag", "Communication"]
    assert rows[0][2] == "due 2025-05-05–2025-06-02"
    assert rows[1][3] == "Acute appendicitis"  # the heading is not evidence
    assert rows[2][1] == "to Dr. Q. Example"


MISMATCHES = SET.parent / "mismatches.jsonl"


def test_eval_scores_only_the_kinds_a_file_labels() -> None:
    result, _ = run_insights_evaluation(MISMATCHES, "test", resamples=50)
    kinds = result["kinds"]
    assert list(kinds) == ["mismatches"]  # the file labels no other kind
    assert kinds["mismatches"]["tp"] + kinds["mismatches"]["fn"] == 16
    assert kinds["mismatches"]["f1"] >= 0.9  # issue 20's goal


def test_a_size_a_template_states_is_not_stated_again() -> None:
    text = (
        "CT HEAD\nFINDINGS: Acute right subdural haematoma, 12 mm thick, with 6 mm midline shift "
        "to the left. Incidental 9 mm arachnoid cyst.\nIMPRESSION: Acute subdural haematoma."
    )
    (result,) = _run(_report("head-1", text))[0]
    assert result.template.id == "head_ct" and result.bundle is not None
    assert _errors(result.bundle) == []
    observations = _resources(result.bundle, "Observation")
    # 12 mm on the subdural's components, 6 mm as "Midline shift (mm)": neither again
    stated = [
        value
        for o in observations
        for value in [o.get("valueQuantity", {}).get("value")]
        + [c["valueQuantity"]["value"] for c in o.get("component", []) if "valueQuantity" in c]
        if value is not None
    ]
    assert sorted(stated) == [6, 9, 12]
    (cyst,) = [o for o in observations if o["code"].get("text") == "Incidental arachnoid cyst"]
    assert cyst["component"][0]["valueQuantity"]["value"] == 9


def test_a_size_of_a_template_finding_without_a_size_attribute_joins_its_observation() -> None:
    """Issue 20 item 5: a size goes into the components of its finding's Observation; a template
    finding that declares no size (a pneumothorax) takes it there, not as a second Observation
    of the same finding; a size in another sentence stays apart."""
    text = (
        "CHEST X-RAY PA\nFINDINGS: Right-sided pneumothorax, about 2 cm at the apex. "
        "No pleural effusion. Incidental 9 mm nodule in the breast shadow was noted before.\n"
        "IMPRESSION: Pneumothorax."
    )
    (result,) = _run(_report("cxr-size", text))[0]
    assert result.template.id == "chest_findings" and result.bundle is not None
    assert _errors(result.bundle) == []
    observations = _resources(result.bundle, "Observation")
    pneumothorax = [
        o for o in observations if "pneumothorax" in o["code"].get("text", "").casefold()
    ]
    sized = [o for o in pneumothorax if o.get("component")]
    assert len(sized) == 1  # one Observation of the finding holds the size, once
    (component,) = sized[0]["component"]
    assert component["valueQuantity"] == {
        "value": 2,
        "unit": "cm",
        "system": "http://unitsofmeasure.org",
        "code": "cm",
    }
    assert not [o for o in observations if o["code"].get("text") == "Right-sided pneumothorax"]
