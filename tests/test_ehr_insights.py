"""Insights in the FHIR write-back (issue 20: every insight resource is delivered like the
Observations). Against Medplum's strict FHIR router (tests/helpers/ehr_engine.py, an EHR that is not
ours; every reference resolved by the test) and the project's test EHR (tests/helpers/fhir_server.py,
each received resource checked against the official R4 JSON schema), with what was sent also
run through FHIR.js: ServiceRequest, Flag, Communication, DetectedIssue and RADS Observations
reference the EHR's Patient and DiagnosticReport, a decision makes a new version with its
Provenance, a corrected report retires an insight, and a report with insights but no template
value is written back (no longer "nothing to send")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from adapter.store import Store
from conformance.validate import validate_documents
from mappings.review import Decision, Reviewer, bundle_with_review, review_insight
from tests.helpers.ehr_engine import MedplumEhr, medplum
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.test_ehr_contract import HL7, RBH, extracted, history_length, settings_for
from tests.test_ui_insights_browser import SCROTUM_US
from workers.delivery import deliver_report

__all__ = ["medplum"]  # the fixture

INSIGHT_KINDS = ("ServiceRequest", "Flag", "Communication", "DetectedIssue")
# a male patient's abdominal ultrasound: appendicitis (Flag), its communication (Communication),
# an O-RADS category (Observation), a follow-up (ServiceRequest), a uterus (DetectedIssue: sex)
ABDOMEN_US = "\r".join(
    [
        "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20261102101500||ORU^R01|INSEHR01|P|2.3",
        "PID|1||MRN-INSUI^^^RBH^MR||TESTPATIENT^DELTA||19800101|M",
        "OBR|1|PL9102|ACC9102|76700^US ABDOMEN^CPT|||20261102100000|||||||||||||||"
        "20261102101400||US|F",
        "OBX|1|TX|&GDT||US ABDOMEN~FINDINGS: Non-compressible appendix of 11 mm with "
        "periappendiceal fluid. The uterus is unremarkable.~IMPRESSION: Acute appendicitis. "
        "Incidental 2 cm left adnexal cyst, O-RADS US 2.~Recommend follow-up pelvic ultrasound "
        "in 8-12 weeks.~Findings discussed with Dr. Q. Example at 10:42.||||||F",
    ]
).encode()


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _ehr_patient(medplum: MedplumEhr) -> str:
    created = medplum.post(
        {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN-INSUI"}]}
    )
    return f"Patient/{created['id']}"


def _decided(bundle: dict[str, Any], decisions: dict[str, Decision]) -> dict[str, Any]:
    """The Bundle after one decision per insight type (as `adapter.reviews.save_review` keeps
    it: the insight's next version and the decision's Provenance)."""
    (report,) = _of(bundle, "DiagnosticReport")
    current = bundle
    for kind, decision in decisions.items():
        (insight,) = _of(current, kind)
        result = review_insight(insight, decision, Reviewer("dr.jansen"), new_version=2,
                                report=f"DiagnosticReport/{report['id']}")  # fmt: skip
        current = bundle_with_review(current, result)
    return current


def test_a_report_with_only_insights_is_written_back_against_the_ehrs_patient(
    medplum: MedplumEhr,
) -> None:
    """No template applies to the scrotal ultrasound (no value Observation): its follow-up
    ServiceRequest and critical-result Flag still reach the EHR, referencing the EHR's Patient
    and the DiagnosticReport written with them; nothing dangles (the extraction Provenance's
    targets included); the same content again sends nothing."""
    patient = _ehr_patient(medplum)
    settings = settings_for(medplum)
    report, bundle = extracted(SCROTUM_US, HL7, settings)
    assert _of(bundle, "Observation") == []
    first = deliver_report(bundle, report, settings, {})
    assert first.sent
    (request,) = medplum.resources("ServiceRequest")
    (flag,) = medplum.resources("Flag")
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert (request["id"], flag["id"]) == (
        _of(bundle, "ServiceRequest")[0]["id"],
        _of(bundle, "Flag")[0]["id"],
    )
    assert request["subject"]["reference"] == flag["subject"]["reference"] == patient
    assert request["reasonReference"] == [{"reference": f"DiagnosticReport/{ehr_report['id']}"}]
    (detail,) = [e for e in flag["extension"] if e["url"].endswith("/flag-detail")]
    assert detail["valueReference"] == {"reference": f"DiagnosticReport/{ehr_report['id']}"}
    assert (request["status"], flag["status"]) == ("draft", "active")  # the Flag at once
    assert medplum.dangling() == []
    assert not deliver_report(bundle, report, settings, first.hashes).sent


def test_insight_decisions_reach_the_ehr_as_new_versions_with_their_provenance(
    medplum: MedplumEhr,
) -> None:
    """Accepting the follow-up makes the EHR's ServiceRequest active, rejecting the Flag makes
    it entered-in-error (each a second version, nothing else rewritten); each decision's VERIFY
    Provenance targets the version the EHR returned (vread works) and names the reviewer by
    identifier; delivering again sends nothing."""
    _ehr_patient(medplum)
    settings = settings_for(medplum)
    report, bundle = extracted(SCROTUM_US, HL7, settings)
    first = deliver_report(bundle, report, settings, {})
    after = _decided(bundle, {"ServiceRequest": Decision.ACCEPT, "Flag": Decision.REJECT})
    second = deliver_report(after, report, settings, first.hashes)
    assert second.sent
    (request,) = medplum.resources("ServiceRequest")
    (flag,) = medplum.resources("Flag")
    assert (request["status"], flag["status"]) == ("active", "entered-in-error")
    assert history_length(medplum, f"ServiceRequest/{request['id']}") == 2
    assert history_length(medplum, f"Flag/{flag['id']}") == 2
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert history_length(medplum, f"DiagnosticReport/{ehr_report['id']}") == 1
    reviews = [p for p in medplum.resources("Provenance") if "activity" in p]
    assert sorted(p["target"][0]["reference"].split("/")[0] for p in reviews) == [
        "Flag", "ServiceRequest"]  # fmt: skip
    for provenance in reviews:
        (target,) = provenance["target"]
        assert "/_history/" in target["reference"]
        assert medplum.get(target["reference"]).status_code == 200
        assert provenance["agent"][0]["who"]["identifier"]["value"] == "dr.jansen"
    assert medplum.dangling() == []
    assert not deliver_report(after, report, settings, second.hashes).sent


def test_a_corrected_report_retires_the_insight_at_the_ehr(
    medplum: MedplumEhr, tmp_path: Path
) -> None:
    """The store's Bundle of a corrected report that no longer recommends a follow-up nor
    states a critical result carries both insights as entered-in-error: the EHR gets that
    version (the resources stay, retired, never deleted)."""
    _ehr_patient(medplum)
    settings = settings_for(medplum, data_dir=tmp_path)
    report, bundle = extracted(SCROTUM_US, HL7, settings)
    corrected_raw = (
        SCROTUM_US.replace(b"IMPRESSION: Left testicular torsion.", b"IMPRESSION: Normal testes.")
        .replace(b"~Recommend follow-up ultrasound in 6 weeks.", b"")
        .replace(b"||US|F", b"||US|C")
        .replace(b"|INSUI01|", b"|INSUI02|")
    )
    corrected_report, corrected = extracted(corrected_raw, HL7, settings)
    store = Store.open(settings)
    try:
        store.save_result(None, "ehr-insights", bundle)
        saved = store.save_result(None, "ehr-insights", corrected)
        assert saved.saved
        stored = store.get_bundle(saved.bundle_id)
    finally:
        store.close()
    assert stored is not None
    first = deliver_report(bundle, report, settings, {})
    assert deliver_report(stored, corrected_report, settings, first.hashes).sent
    (request,) = medplum.resources("ServiceRequest")
    (flag,) = medplum.resources("Flag")
    assert (request["status"], flag["status"]) == ("entered-in-error", "entered-in-error")
    assert history_length(medplum, f"ServiceRequest/{request['id']}") == 2
    assert medplum.dangling() == []


def test_every_insight_kind_is_accepted_by_a_strict_ehr_and_resolves(medplum: MedplumEhr) -> None:
    """Medplum's strict validation accepts the ServiceRequest, Flag, Communication,
    DetectedIssue and RADS Observation of one report as written back; nothing dangles."""
    patient = _ehr_patient(medplum)
    settings = settings_for(medplum)
    report, bundle = extracted(ABDOMEN_US, HL7, settings)
    assert deliver_report(bundle, report, settings, {}).sent
    for kind in INSIGHT_KINDS:
        sent = {r["id"] for r in _of(bundle, kind)}
        assert sent and {r["id"] for r in medplum.resources(kind)} == sent, kind
    (issue,) = medplum.resources("DetectedIssue")
    assert issue["patient"]["reference"] == patient
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert {r["reference"] for r in ehr_report["result"]} == {
        f"Observation/{o['id']}" for o in _of(bundle, "Observation")
    }  # the RADS category among the results
    assert medplum.dangling() == []


def test_every_insight_kind_is_sent_valid_and_resolvable() -> None:
    """ServiceRequest, Flag, Communication, DetectedIssue and the RADS Observation of one report
    reach the project's test EHR (each checked there against the official R4 JSON schema) and
    pass FHIR.js and the R4B models as sent; every reference in them is the EHR's Patient, its
    DiagnosticReport or a resource sent with them."""
    server = FhirServer().start()
    try:
        settings = Settings(  # type: ignore[call-arg]
            **{**EHR_IDENTITY, "identifier_systems": {"RBH": RBH}},
            fhir_base_url=server.base_url, stage="rules", delivery_timeout_s=60,
        )  # fmt: skip
        report, bundle = extracted(ABDOMEN_US, HL7, settings)
        kinds = {k: _of(bundle, k) for k in INSIGHT_KINDS}
        assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
        rads = [o for o in _of(bundle, "Observation") if "RADS" in o["code"].get("text", "")]
        assert rads
        written = deliver_report(bundle, report, settings, {})
        assert written.sent and server.refused == 0
        held = dict(server.resources)
    finally:
        server.stop()
    for kind, resources in kinds.items():
        assert {f"{kind}/{r['id']}" for r in resources} <= set(held), kind
    assert {f"Observation/{o['id']}" for o in rads} <= set(held)
    (patient,) = [url for url in held if url.startswith("Patient/")]
    for url, resource in held.items():
        if url.split("/")[0] in (*INSIGHT_KINDS, "Observation"):
            who = resource.get("subject") or resource.get("patient") or {}
            assert who.get("reference", patient) == patient, url
            for reference in _references(resource):
                assert reference in held, f"{url} -> {reference}"
    problems = validate_documents(
        [
            (url, r)
            for url, r in held.items()
            if url.split("/")[0] in (*INSIGHT_KINDS, "Observation")
        ]
    )
    if any(p.path == "-" for p in problems):
        pytest.skip(f"FHIR.js is not available: {problems}")
    assert [p for p in problems if p.severity == "error"] == []


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [str(value["reference"])] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []
