"""Contract tests of the write-back (issue 19 items 1, 2, 3's ORU content, 6) against an EHR that
is not ours: Medplum's FHIR router with strict validation (tests/helpers/ehr_engine.py), and an ORU
receiver built on python-hl7 (tests/helpers/oru_receiver.py). The engine keeps resources in memory and
enforces no referential integrity, so every test resolves every reference itself."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.settings import Settings
from mappings.media_types import FHIR_JSON
from mappings.report import Report
from mappings.review import Correction, Decision, Reviewer, bundle_with_review, review
from mappings.template import load_builtin_templates
from tests.helpers.ehr_engine import MedplumEhr, medplum
from tests.helpers.oru_receiver import OruReceiver
from workers.delivery import WriteBack, deliver_oru_message, deliver_report, oru_message
from workers.errors import DeliveryRejected, DeliveryRetryable
from workers.process import process_message

__all__ = ["medplum"]  # the fixture

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
HL7 = "x-application/hl7-v2+er7"
RBH = "urn:oid:2.999.7.1"  # the fixtures' assigning authority RBH (2.999: the example OID arc)
ACCESSIONS = "urn:oid:2.999.7.2"  # the accession numbers of facility RBHOSP
NARRATIVE = (
    "FINDINGS:\nSmall right pleural effusion with adjacent compressive atelectasis.\n"
    "No pneumothorax. Heart size is normal.\nA 6 mm solid nodule in the right upper lobe.\n"
)


def settings_for(ehr: MedplumEhr, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "fhir_base_url": ehr.base_url,
        "identifier_systems": {"RBH": RBH},
        "accession_systems": {"RBHOSP": ACCESSIONS},
        "stage": "rules",
        "delivery_timeout_s": 60,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def extracted(raw: bytes, content_type: str, settings: Settings) -> tuple[Report, dict[str, Any]]:
    """The first report of a message and its Bundle, as the worker builds them (rules stage)."""

    def no_model() -> Any:
        raise AssertionError("the rules stage needs no model")

    outcome = process_message(
        raw, content_type, list(load_builtin_templates().values()), settings, no_model
    )
    result = outcome.results[0]
    assert result.bundle is not None
    return result.report, result.bundle


def chest_ct(settings: Settings) -> tuple[Report, dict[str, Any]]:
    return extracted((HL7_DIR / "chest_ct.hl7").read_bytes(), HL7, settings)


def ehr_source_report() -> dict[str, Any]:
    """The EHR's own DiagnosticReport (the issue's example), as it was POSTed to radbridge."""
    return {
        "resourceType": "DiagnosticReport",
        "id": "nc-dr-1",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "NC-ACC-1"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "CT Chest"},
        "subject": {"reference": "Patient/abc"},
        "effectiveDateTime": "2026-11-01T08:45:00+01:00",
        "conclusion": "Right pleural effusion.",
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(NARRATIVE.encode()).decode(),
            }
        ],
    }


def decided(
    bundle: dict[str, Any], decisions: list[tuple[Decision, Correction | None]]
) -> dict[str, Any]:
    """The Bundle after one decision per preliminary Observation (in order), as save_review
    keeps it."""
    templates = load_builtin_templates()
    current = copy.deepcopy(bundle)
    observations = [
        e["resource"]
        for e in current["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["status"] == "preliminary"
    ]
    for observation, (decision, correction) in zip(observations, decisions, strict=False):
        template_id = next(
            s["valueString"]
            for ext in observation["extension"]
            for s in ext["extension"]
            if s["url"] == "template"
        ).split("|")[0]
        result = review(
            observation, templates[template_id], decision, Reviewer("dr.jansen"),
            new_version=2, correction=correction, recorded=datetime(2026, 11, 2, tzinfo=UTC),
            report=f"DiagnosticReport/{next(e['resource']['id'] for e in current['entry'] if e['resource']['resourceType'] == 'DiagnosticReport')}",
        )  # fmt: skip
        current = bundle_with_review(current, result)
    return current


def history_length(ehr: MedplumEhr, reference: str) -> int:
    return len(ehr.get(f"{reference}/_history").json().get("entry", []))


def test_a_fhir_sourced_report_is_written_back_against_the_ehrs_own_report_and_patient(
    medplum: MedplumEhr,
) -> None:
    """Issue 19 item 1: exactly one DiagnosticReport (the EHR's, its own fields kept, its
    identifier system kept), no new Patient (the EHR's Patient untouched), every reference
    resolves; a second delivery of the same content sends nothing."""
    medplum.put({"resourceType": "Patient", "id": "abc", "name": [{"family": "Ehrpatient"}],
                 "identifier": [{"system": "urn:oid:1.2.3", "value": "P-1"}]})  # fmt: skip
    medplum.put(ehr_source_report())
    settings = settings_for(medplum)
    report, bundle = extracted(json.dumps(ehr_source_report()).encode(), FHIR_JSON, settings)
    first = deliver_report(bundle, report, settings, {})
    assert first.sent
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert ehr_report["id"] == "nc-dr-1"
    assert ehr_report["conclusion"] == "Right pleural effusion."  # the EHR's own field kept
    assert ehr_report["identifier"] == [{"system": "urn:oid:1.2.3", "value": "NC-ACC-1"}]
    observations = medplum.resources("Observation")
    assert observations and {r["reference"] for r in ehr_report["result"]} == {
        f"Observation/{o['id']}" for o in observations
    }
    assert {o["subject"]["reference"] for o in observations} == {"Patient/abc"}
    (patient,) = medplum.resources("Patient")
    assert patient["name"] == [{"family": "Ehrpatient"}]  # never overwritten
    assert history_length(medplum, "Patient/abc") == 1
    assert medplum.dangling() == []
    again = deliver_report(bundle, report, settings, first.hashes)
    assert not again.sent
    assert history_length(medplum, "DiagnosticReport/nc-dr-1") == 2  # the EHR's + one update


def test_hl7_input_is_matched_to_the_existing_patient_by_identifier(medplum: MedplumEhr) -> None:
    """Item 1: PID-3 `MRN0001^^^RBH^MR` with RBH mapped finds the EHR's Patient; the created
    DiagnosticReport carries the accession with its system; no Patient is created."""
    existing = medplum.post(
        {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]}
    )
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    deliver_report(bundle, report, settings, {})
    assert [p["id"] for p in medplum.resources("Patient")] == [existing["id"]]
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert ehr_report["subject"]["reference"] == f"Patient/{existing['id']}"
    acsn = [i for i in ehr_report["identifier"] if i["type"]["coding"][0]["code"] == "ACSN"]
    assert [(i["system"], i["value"]) for i in acsn] == [(ACCESSIONS, "ACC1001")]
    observations = medplum.resources("Observation")
    assert {o["subject"]["reference"] for o in observations} == {f"Patient/{existing['id']}"}
    assert medplum.dangling() == []


def test_an_existing_ehr_report_found_by_accession_gains_the_results(medplum: MedplumEhr) -> None:
    """Item 1: the EHR already has the report (its own id, found by the accession with a
    system): it is updated with If-Match, never a second DiagnosticReport."""
    patient = medplum.post(
        {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]}
    )
    own = medplum.post({
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CT chest"},
        "identifier": [{"system": ACCESSIONS, "value": "ACC1001"}],
        "subject": {"reference": f"Patient/{patient['id']}"}, "conclusion": "EHR conclusion",
    })  # fmt: skip
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    deliver_report(bundle, report, settings, {})
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert ehr_report["id"] == own["id"] and ehr_report["conclusion"] == "EHR conclusion"
    assert len(ehr_report["result"]) == len(medplum.resources("Observation")) > 0
    assert medplum.dangling() == []


@pytest.mark.parametrize("batch", [True, False])
def test_the_patient_and_report_are_read_in_one_batch(medplum: MedplumEhr, batch: bool) -> None:
    """Issue 25: Medplum answers the batch read (two GET search entries, the identifiers in the
    body, never in a URL): the write-back is two requests (RADBRIDGE_EHR_BATCH_READS=false: the
    two searches, three); two Patients matching in its answer are refused, none picked."""
    patient = medplum.post(
        {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]}
    )
    own = medplum.post({
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CT chest"},
        "identifier": [{"system": ACCESSIONS, "value": "ACC1001"}],
        "subject": {"reference": f"Patient/{patient['id']}"},
    })  # fmt: skip
    settings = settings_for(medplum, ehr_batch_reads=batch)
    report, bundle = chest_ct(settings)
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        assert "MRN0001" not in str(request.url) and "ACC1001" not in str(request.url)
        sent.append(f"{request.method} {request.url.path}")

    with httpx.Client(timeout=60, event_hooks={"request": [record]}) as client:
        deliver_report(bundle, report, settings, {}, client=client)
        searches = ["POST /fhir/Patient/_search", "POST /fhir/DiagnosticReport/_search"]
        assert sent == [*(["POST /fhir/"] if batch else searches), "POST /fhir/"]
        (ehr_report,) = medplum.resources("DiagnosticReport")
        assert ehr_report["id"] == own["id"]
        assert len(ehr_report["result"]) == len(medplum.resources("Observation")) > 0
        medplum.post(
            {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]}
        )
        with pytest.raises(DeliveryRejected, match="2 Patient resources at the EHR match"):
            deliver_report(bundle, report, settings, {}, client=client)
    assert medplum.dangling() == []


def test_decisions_reach_the_ehr_with_resolvable_provenance_and_only_what_changed(
    medplum: MedplumEhr,
) -> None:
    """Item 2: after accept / correct / reject the EHR holds final / final / entered-in-error;
    the VERIFY Provenance targets the version the EHR returned (vread works), names the reviewer
    by identifier (nothing dangles); only the decided Observations got a new version."""
    medplum.post({"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]})
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    first = deliver_report(bundle, report, settings, {})
    after = decided(bundle, [(Decision.ACCEPT, None), (Decision.CORRECT, Correction(status="absent")),
                             (Decision.REJECT, None)])  # fmt: skip
    second = deliver_report(after, report, settings, first.hashes)
    assert second.sent
    ids = [
        e["resource"]["id"]
        for e in after["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    statuses = {o["id"]: o["status"] for o in medplum.resources("Observation")}
    assert [statuses[i] for i in ids[:3]] == ["final", "final", "entered-in-error"]
    assert all(statuses[i] == "preliminary" for i in ids[3:])
    assert [history_length(medplum, f"Observation/{i}") for i in ids] == [2, 2, 2] + [1] * (
        len(ids) - 3
    )
    reviews = [p for p in medplum.resources("Provenance") if "activity" in p]
    assert len(reviews) == 3
    for provenance in reviews:
        (target,) = provenance["target"]
        assert "/_history/" in target["reference"]
        assert medplum.get(target["reference"]).status_code == 200
        assert provenance["agent"][0]["who"]["identifier"] == {
            "system": "https://radbridge.org/fhir/sid/reviewer", "value": "dr.jansen"}  # fmt: skip
    assert medplum.dangling() == []
    assert not deliver_report(after, report, settings, second.hashes).sent


def test_reviewer_created_once_by_conditional_create(medplum: MedplumEhr) -> None:
    """Item 2: with RADBRIDGE_EHR_REVIEWER=create the Practitioner is conditionally created by
    identifier, once for two decisions."""
    medplum.post({"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]})
    settings = settings_for(medplum, ehr_reviewer="create")
    report, bundle = chest_ct(settings)
    first = deliver_report(bundle, report, settings, {})
    one = decided(bundle, [(Decision.ACCEPT, None)])
    second = deliver_report(one, report, settings, first.hashes)
    two = decided(one, [(Decision.ACCEPT, None)])
    deliver_report(two, report, settings, second.hashes)
    (practitioner,) = medplum.resources("Practitioner")
    reviews = [p for p in medplum.resources("Provenance") if "activity" in p]
    assert {p["agent"][0]["who"]["reference"] for p in reviews} == {
        f"Practitioner/{practitioner['id']}"
    }
    assert medplum.dangling() == []


@pytest.mark.parametrize("patch", [False, True], ids=["if-match", "json-patch"])
def test_a_version_conflict_is_read_again_and_retried_once(
    medplum: MedplumEhr, patch: bool
) -> None:
    """Bad input: a 412 on the conditional update of the EHR's report (the transaction that
    carries it, or the JSON Patch) is re-read and retried once; a second 412 leaves the delivery
    to be retried later, nothing lost."""
    medplum.put(
        {
            "resourceType": "Patient",
            "id": "abc",
            "identifier": [{"system": "urn:oid:1.2.3", "value": "P-1"}],
        }
    )
    medplum.put(ehr_source_report())
    settings = settings_for(medplum, ehr_patch=patch)
    report, bundle = extracted(json.dumps(ehr_source_report()).encode(), FHIR_JSON, settings)
    method = "PATCH" if patch else "POST"  # the update rides in the transaction (no search here)
    medplum.fail(412, count=2, method=method)
    with pytest.raises(DeliveryRetryable, match="412"):
        deliver_report(bundle, report, settings, {})
    medplum.fail(412, count=1, method=method)
    deliver_report(bundle, report, settings, {})
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert len(ehr_report["result"]) == len(medplum.resources("Observation"))
    assert ehr_report["conclusion"] == "Right pleural effusion."
    assert medplum.dangling() == []


def test_a_stale_version_fails_the_whole_transaction_then_the_retry_keeps_the_ehrs_change(
    medplum: MedplumEhr,
) -> None:
    """The EHR's report changes between radbridge's read and its write: Medplum checks the
    transaction entry's `ifMatch` (it answers that entry 412 inside a 200, like a batch, and keeps
    the other entries: "nothing stored" is the project EHR's test, tests/test_delivery.py);
    radbridge takes the entry's 412 as a conflict, reads again, and its second transaction links
    the results to the report as the EHR left it (the EHR's change kept, never overwritten); the
    decision's Provenance that follows targets versions the EHR returned."""
    medplum.put({"resourceType": "Patient", "id": "abc",
                 "identifier": [{"system": "urn:oid:1.2.3", "value": "P-1"}]})  # fmt: skip
    medplum.put(ehr_source_report())
    settings = settings_for(medplum)
    report, bundle = extracted(json.dumps(ehr_source_report()).encode(), FHIR_JSON, settings)
    bundle = decided(bundle, [(Decision.ACCEPT, None)])
    sent: list[dict[str, Any]] = []

    def meanwhile(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/fhir/":
            sent.append(json.loads(request.content))
            if len(sent) == 1:  # a clinician amends the report at the EHR meanwhile
                medplum.put({**ehr_source_report(), "conclusion": "Amended at the EHR."})

    with httpx.Client(timeout=60, event_hooks={"request": [meanwhile]}) as client:
        deliver_report(bundle, report, settings, {}, client=client)
    history = medplum.get("DiagnosticReport/nc-dr-1/_history").json()["entry"]
    versions = [h["resource"]["meta"]["versionId"] for h in reversed(history)]
    assert len(versions) == 3  # the EHR's, its amendment, radbridge's one update
    updates = [
        [e["request"] for e in b["entry"] if e["request"]["url"] == "DiagnosticReport/nc-dr-1"]
        for b in sent[:2]
    ]
    assert updates == [
        [{"method": "PUT", "url": "DiagnosticReport/nc-dr-1", "ifMatch": f'W/"{v}"'}]
        for v in versions[:2]
    ]
    (ehr_report,) = medplum.resources("DiagnosticReport")
    assert ehr_report["conclusion"] == "Amended at the EHR."
    assert len(ehr_report["result"]) == len(medplum.resources("Observation")) > 0
    (review,) = [p for p in medplum.resources("Provenance") if "activity" in p]
    (target,) = review["target"]
    assert "/_history/" in target["reference"]
    assert medplum.get(target["reference"]).status_code == 200
    assert medplum.dangling() == []


def test_two_ehr_patients_matching_one_identifier_are_refused_never_picked(
    medplum: MedplumEhr,
) -> None:
    for _ in range(2):
        medplum.post(
            {"resourceType": "Patient", "identifier": [{"system": RBH, "value": "MRN0001"}]}
        )
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    with pytest.raises(DeliveryRejected) as refused:
        deliver_report(bundle, report, settings, {})
    assert refused.value.status == 409
    assert refused.value.outcome is not None
    assert refused.value.outcome["issue"][0]["code"] == "multiple-matches"
    assert "MRN0001" not in str(refused.value)  # the reason names no identifier value
    assert medplum.resources("Observation") == []


def test_no_identifier_system_refuses_the_delivery_with_a_clear_reason(medplum: MedplumEhr) -> None:
    """Item 1: PID-3's authority RBH unmapped and no default system: refused, never a stub."""
    settings = settings_for(medplum, identifier_systems={}, ehr_patient="create")
    report, bundle = chest_ct(settings)
    with pytest.raises(DeliveryRejected, match=r"RBH.*RADBRIDGE_IDENTIFIER_SYSTEMS"):
        deliver_report(bundle, report, settings, {})
    assert medplum.resources() == []


def test_a_missing_patient_is_refused_or_conditionally_created_by_policy(
    medplum: MedplumEhr,
) -> None:
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    with pytest.raises(DeliveryRejected, match="no Patient at the EHR"):
        deliver_report(bundle, report, settings, {})
    create = settings_for(medplum, ehr_patient="create")
    done = deliver_report(bundle, report, create, {})
    (patient,) = medplum.resources("Patient")
    assert patient["identifier"] == [{"system": RBH, "value": "MRN0001"}] and "name" not in patient
    deliver_report(decided(bundle, [(Decision.ACCEPT, None)]), report, create, done.hashes)
    assert len(medplum.resources("Patient")) == 1
    assert medplum.dangling() == []


def test_several_reports_read_ahead_in_one_batch_each_refusal_its_own(
    medplum: MedplumEhr,
) -> None:
    """Issue 25: the states of three reports read in one batch from Medplum (six entries): one
    Patient missing under RADBRIDGE_EHR_PATIENT=match refuses that report alone; the others are
    written back with the states read, the EHR's own report on the version read."""
    from mappings.ehr import EhrState
    from mappings.errors import IdentityRefused
    from tests.test_throughput import oru
    from workers.delivery import read_states

    for mrn in ("MRN-K0", "MRN-K2"):
        medplum.post({"resourceType": "Patient", "identifier": [{"system": RBH, "value": mrn}]})
    own = medplum.post(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": ACCESSIONS, "value": "ACC-T25-2"}],
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
            "conclusion": "The EHR's conclusion.",
        }
    )
    settings = settings_for(medplum)
    reports = [extracted(oru(n, mrn=f"MRN-K{n}"), HL7, settings) for n in range(3)]
    states = read_states([report for report, _ in reports], settings)
    assert isinstance(states[1], IdentityRefused)
    assert isinstance(states[0], EhrState) and states[0].report is None
    assert isinstance(states[2], EhrState) and states[2].report is not None
    assert states[2].report["id"] == own["id"] and states[2].report_version
    with pytest.raises(DeliveryRejected, match="no Patient at the EHR"):
        deliver_report(reports[1][1], reports[1][0], settings, {}, state=states[1])
    for n in (0, 2):
        assert deliver_report(reports[n][1], reports[n][0], settings, {}, state=states[n]).sent
    written = medplum.get(f"DiagnosticReport/{own['id']}").json()
    assert written["conclusion"] == "The EHR's conclusion." and written["result"]
    assert len(medplum.resources("Patient")) == 2
    assert len(medplum.resources("DiagnosticReport")) == 2  # the EHR's and report 0's
    assert medplum.dangling() == []


def test_a_report_without_observations_is_not_written_back(medplum: MedplumEhr) -> None:
    settings = settings_for(medplum)
    report, bundle = chest_ct(settings)
    empty = {
        **bundle,
        "entry": [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Observation"],
    }
    assert deliver_report(empty, report, settings, {}) == WriteBack(
        hashes={}, sent=False, seconds=0.0
    )
    assert medplum.resources() == []


def test_the_oru_carries_the_source_content_and_keeps_its_control_id() -> None:
    """Item 3 (ORU content) against a python-hl7 receiver: MSH-3..6 from settings, PID-3/5 and
    PV1 as the source sent them, OBR-2/3/4 with codes; the same content re-sent (a new
    extraction time) keeps its MSH-10; a rejected value goes as W, never as a live P."""
    receiver = OruReceiver().start()
    try:
        settings = Settings(  # type: ignore[call-arg]
            oru_target=receiver.target, oru_sending_application="RADBRIDGE",
            oru_sending_facility="RBRAD", oru_receiving_application="EHR",
            oru_receiving_facility="RBHOSP", delivery_timeout_s=30, stage="rules",
        )  # fmt: skip
        raw = (
            (HL7_DIR / "chest_ct.hl7")
            .read_bytes()
            .replace(b"\rOBR|", b"\rPV1|1|O|RAD^^^RBHOSP||||1234^Doctor^Dana\rOBR|", 1)
        )
        report, bundle = extracted(raw, HL7, settings)
        deliver_oru_message(bundle, settings, report)
        later = copy.deepcopy(bundle)
        for entry in later["entry"]:
            if entry["resource"]["resourceType"] == "Observation":
                entry["resource"]["issued"] = "2027-01-01T00:00:00+00:00"  # re-extracted later
        deliver_oru_message(later, settings, report)
        rejected = decided(bundle, [(Decision.REJECT, None)])
        deliver_oru_message(rejected, settings, report)
    finally:
        receiver.stop()
    first, resent, after = receiver.messages
    msh = first.segment("MSH")
    assert [str(msh(n)) for n in (3, 4, 5, 6)] == ["RADBRIDGE", "RBRAD", "EHR", "RBHOSP"]
    assert str(first.segment("PID")(3)) == "MRN0001^^^RBH^MR"
    assert str(first.segment("PID")(5)) == "TESTPATIENT^ALPHA"
    assert str(first.segment("PV1")(3)) == "RAD^^^RBHOSP"
    obr = first.segment("OBR")
    assert [str(obr(n)) for n in (2, 3, 4)] == ["PL1001", "ACC1001", "24627-2^Chest CT^LN"]
    assert str(resent.segment("MSH")(10)) == str(msh(10))
    assert str(after.segment("MSH")(10)) != str(msh(10))
    # OBX-11 per value: an OBX with its value's OBX-4 sub-ID is that value's size component
    segments = list(after.segments("OBX"))
    values = [
        o
        for i, o in enumerate(segments)
        if i == 0 or str(o(4)) != str(segments[i - 1](4)) or not str(o(4))
    ]
    statuses = [str(obx(11)) for obx in values]
    assert statuses[0] == "W" and "W" not in statuses[1:]
    assert str(segments[1](11)) == "W"  # the rejected nodule's size component


def test_the_oru_message_is_built_without_a_receiver() -> None:
    """The ORU of a FHIR-sourced report: PID-3 from the identifiers with their system."""
    settings = Settings(stage="rules")  # type: ignore[call-arg]
    report, bundle = extracted(json.dumps(ehr_source_report()).encode(), FHIR_JSON, settings)
    assert report.subject_reference == "Patient/abc"
    message = oru_message(bundle, report, settings).message.decode()
    obr = next(s for s in message.split("\r") if s.startswith("OBR|"))
    assert obr.split("|")[4] == "24627-2^CT Chest^LN"
