"""mappings/ehr.py (pure): the identity policy, the write-back plan, versions from a
transaction-response and the decisions' Provenance as the EHR gets them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mappings import ehr
from mappings.errors import IdentityRefused
from mappings.hl7.oru_in import parse_oru
from mappings.report import EntityIdentifier, PatientIdentifier, Report

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
GOLDEN = json.loads((HL7_DIR / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
BASE = "https://ehr.example/fhir"


def chest_ct(**changes: Any) -> Report:
    (report,) = parse_oru((HL7_DIR / "chest_ct.hl7").read_bytes()).reports
    return report.model_copy(update=changes)


def test_the_hl7_parser_keeps_what_the_write_back_needs() -> None:
    raw = (
        (HL7_DIR / "chest_ct.hl7")
        .read_bytes()
        .replace(b"MRN0001^^^RBH^MR", b"MRN0001^^^RBH&2.999.5&ISO^MR~X9^^^^SS")
        .replace(b"|PL1001|ACC1001|", b"|PL1001^ORD|ACC1001^RIS^2.999.6^ISO|")
    )
    raw = raw.replace(b"\rOBR|", b"\rPV1|1|I|W3^12^1\rOBR|", 1)
    (report,) = parse_oru(raw).reports
    assert report.patient_identifiers[0] == PatientIdentifier(
        value="MRN0001",
        assigner="RBH",
        type_code="MR",
        assigner_id="2.999.5",
        assigner_id_type="ISO",
    )
    assert report.patient_name == ((("TESTPATIENT",), ("ALPHA",)),)
    assert report.visit is not None and report.visit[1] == ((("I",),),)
    assert report.placer_order == EntityIdentifier(value="PL1001", namespace="ORD")
    assert report.filler_order == EntityIdentifier(
        value="ACC1001", namespace="RIS", universal_id="2.999.6", universal_id_type="ISO"
    )
    assert report.accession_number == "ACC1001"


@pytest.mark.parametrize(
    ("identifier", "policy", "system"),
    [
        (PatientIdentifier(value="1", assigner_id="2.999.5", assigner_id_type="ISO"), ehr.IdentityPolicy(), "urn:oid:2.999.5"),
        (PatientIdentifier(value="1", assigner="RBH"), ehr.IdentityPolicy(identifier_systems={"RBH": "urn:x"}), "urn:x"),
        (PatientIdentifier(value="1", assigner="OTHER"), ehr.IdentityPolicy(identifier_systems={"RBH": "urn:x"}, patient_system="urn:d"), None),
        (PatientIdentifier(value="1"), ehr.IdentityPolicy(patient_system="urn:d"), "urn:d"),
        (PatientIdentifier(value="1"), ehr.IdentityPolicy(), None),
        (PatientIdentifier(value="1", system="urn:fhir"), ehr.IdentityPolicy(), "urn:fhir"),
    ],
    ids=["oid", "mapped", "unmapped-authority", "default", "none", "fhir"],
)  # fmt: skip
def test_patient_identifier_systems(
    identifier: PatientIdentifier, policy: ehr.IdentityPolicy, system: str | None
) -> None:
    assert ehr.patient_system(identifier, policy) == system


def test_no_system_is_refused_with_what_to_configure_and_no_value() -> None:
    with pytest.raises(IdentityRefused, match="RBH") as refused:
        ehr.identity(chest_ct(), ehr.IdentityPolicy(accession_systems={"RBHOSP": "urn:a"}))
    assert "MRN0001" not in str(refused.value)
    with pytest.raises(IdentityRefused, match="RADBRIDGE_PATIENT_IDENTIFIER_SYSTEM"):
        report = chest_ct(patient_identifiers=(PatientIdentifier(value="MRN0001"),))
        ehr.identity(report, ehr.IdentityPolicy(accession_systems={"RBHOSP": "urn:a"}))
    with pytest.raises(IdentityRefused, match="accession"):
        ehr.identity(chest_ct(), ehr.IdentityPolicy(identifier_systems={"RBH": "urn:p"}))


def test_hl7_identity_and_plan_for_a_new_report() -> None:
    policy = ehr.IdentityPolicy(
        identifier_systems={"RBH": "urn:p"}, accession_systems={"RBHOSP": "urn:a"}
    )
    who = ehr.identity(chest_ct(), policy)
    assert who.patient_key == ehr.Key("urn:p", "MRN0001")
    assert who.report_key == ehr.Key("urn:a", "ACC1001")
    state = ehr.EhrState(patient="Patient/ehr-1", report=None)
    plan = ehr.plan(GOLDEN, who, state, policy, {}, base_url=BASE)
    assert plan.transaction is not None
    kinds = [e["resource"]["resourceType"] for e in plan.transaction["entry"]]
    assert "Patient" not in kinds  # never a PUT of a Patient
    assert kinds.count("DiagnosticReport") == 1
    text = json.dumps(plan.transaction)
    internal_patient = GOLDEN["entry"][0]["resource"]["id"]
    assert f"Patient/{internal_patient}" not in text and "Patient/ehr-1" in text
    # the same content again: nothing to send
    again = ehr.plan(GOLDEN, who, state, policy, plan.hashes, base_url=BASE)
    assert again.transaction is None and again.report_update is None


def test_the_ehrs_own_report_keeps_its_fields_and_gains_results() -> None:
    policy = ehr.IdentityPolicy()
    report = chest_ct(
        source_format="fhir", fhir_resource_id="nc-dr-1", subject_reference="Patient/abc",
        report_identifiers=(EntityIdentifier(value="NC-1", system="urn:oid:1.2.3"),),
    )  # fmt: skip
    who = ehr.identity(report, policy)
    assert (who.patient_reference, who.report_reference) == (
        "Patient/abc",
        "DiagnosticReport/nc-dr-1",
    )
    own = {"resourceType": "DiagnosticReport", "id": "nc-dr-1", "status": "final",
           "conclusion": "theirs", "result": [{"reference": "Observation/theirs"}]}  # fmt: skip
    plan = ehr.plan(GOLDEN, who, ehr.EhrState("Patient/abc", own, "7"), policy, {}, base_url=BASE)
    assert plan.report_update is not None and plan.report_update["conclusion"] == "theirs"
    assert plan.report_update["result"][0] == {"reference": "Observation/theirs"}
    assert plan.transaction is not None
    assert all(
        e["resource"]["resourceType"] != "DiagnosticReport" for e in plan.transaction["entry"]
    )
    patched = ehr.plan(
        GOLDEN, who, ehr.EhrState("Patient/abc", own, "7"), policy, {}, base_url=BASE, patch=True
    )
    assert patched.report_update is None and patched.patch is not None
    assert {op["op"] for op in patched.patch} == {"add"}
    assert all(op["path"] == "/result/-" for op in patched.patch)


def test_versions_from_a_transaction_response() -> None:
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "200 OK", "etag": 'W/"3"', "location": "Observation/a/_history/3"}},
            {"response": {"status": "201", "location": f"{BASE}/Observation/b/_history/9"}},
            {"response": {"status": "200"}, "resource": {"resourceType": "Observation", "id": "c", "meta": {"versionId": "x1"}}},
            {"response": {"status": "200 OK"}},
        ],
    }  # fmt: skip
    assert ehr.versions_from_response(response) == {
        "Observation/a": "3", "Observation/b": "9", "Observation/c": "x1",
    }  # fmt: skip
    assert ehr.versions_from_response({"resourceType": "Bundle"}) == {}


def _decided_bundle() -> dict[str, Any]:
    from mappings.review import Decision, Reviewer, bundle_with_review, review
    from mappings.template import load_builtin_templates

    observation = next(
        e["resource"] for e in GOLDEN["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    template = load_builtin_templates()["chest_ct"]
    result = review(observation, template, Decision.ACCEPT, Reviewer("dr.x"), new_version=2,
                    report="DiagnosticReport/internal")  # fmt: skip
    return bundle_with_review(GOLDEN, result)


def test_review_provenance_without_versions_has_plain_targets_and_no_radbridge_versions() -> None:
    """Bad input: a transaction-response without versions -> targets without a version."""
    bundle = _decided_bundle()
    policy = ehr.IdentityPolicy()
    written = ehr.Plan(None, None, None, "DiagnosticReport/nc-dr-1", "Patient/abc", {})
    transaction, hashes = ehr.review_transaction(bundle, written, {}, policy, {}, base_url=BASE)
    assert transaction is not None
    (entry,) = transaction["entry"]
    provenance = entry["resource"]
    assert "_history" not in json.dumps(provenance["target"])
    assert provenance["entity"] == [
        {"role": "source", "what": {"reference": "DiagnosticReport/nc-dr-1"}}
    ]
    assert provenance["agent"][0]["who"] == {
        "identifier": {"system": policy.reviewer_system, "value": "dr.x"}, "display": "dr.x"}  # fmt: skip
    target = provenance["target"][0]["reference"]
    with_version, _ = ehr.review_transaction(
        bundle, written, {target: "v7"}, policy, {}, base_url=BASE
    )
    assert with_version is not None
    assert with_version["entry"][0]["resource"]["target"] == [
        {"reference": f"{target}/_history/v7"}
    ]
    nothing, _ = ehr.review_transaction(bundle, written, {}, policy, hashes, base_url=BASE)
    assert nothing is None  # already delivered


def test_a_bundle_without_observations_has_no_content() -> None:
    assert ehr.has_content(GOLDEN)
    empty = {
        **GOLDEN,
        "entry": [e for e in GOLDEN["entry"] if e["resource"]["resourceType"] != "Observation"],
    }
    assert not ehr.has_content(empty)


def test_insights_alone_are_content_and_reference_the_ehrs_patient_and_report() -> None:
    """A report no template applies to holds no Observation but may hold insights: they are
    written back (PUT under radbridge's ids) with the EHR's Patient and DiagnosticReport."""
    internal_patient = GOLDEN["entry"][0]["resource"]["id"]
    internal_report = next(
        e["resource"]["id"]
        for e in GOLDEN["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    request = {
        "resourceType": "ServiceRequest", "id": "sr1", "status": "draft", "intent": "proposal",
        "code": {"text": "CT"}, "subject": {"reference": f"Patient/{internal_patient}"},
        "reasonReference": [{"reference": f"DiagnosticReport/{internal_report}"}],
    }  # fmt: skip
    insights_only = {
        **GOLDEN,
        "entry": [
            *(e for e in GOLDEN["entry"] if e["resource"]["resourceType"] != "Observation"),
            {"resource": request},
        ],
    }
    assert ehr.has_content(insights_only)
    report = chest_ct(
        source_format="fhir", fhir_resource_id="nc-dr-1", subject_reference="Patient/abc",
        report_identifiers=(EntityIdentifier(value="NC-1", system="urn:oid:1.2.3"),),
    )  # fmt: skip
    policy = ehr.IdentityPolicy()
    own = {"resourceType": "DiagnosticReport", "id": "nc-dr-1", "status": "final"}
    state = ehr.EhrState("Patient/abc", own, "1")
    plan = ehr.plan(insights_only, ehr.identity(report, policy), state, policy, {}, base_url=BASE)
    assert plan.transaction is not None
    (sent,) = [
        e for e in plan.transaction["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert sent["request"] == {"method": "PUT", "url": "ServiceRequest/sr1"}
    assert sent["resource"]["subject"] == {"reference": "Patient/abc"}
    assert sent["resource"]["reasonReference"] == [{"reference": "DiagnosticReport/nc-dr-1"}]
