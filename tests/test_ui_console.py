"""The store side of the pages radiologists and operators use (issue 23 item 4), without a browser:
the worklist's identity columns and attention order, undo of a decision, the console's MSH-10,
accession, sender and conflict filters, and closing a dead letter with a reason.

Real parts: SQLite (and PostgreSQL where configured) stores, the real extraction of the chest CT
fixture (RADBRIDGE_STAGE=rules). The browser side is in tests/test_ui_pages_browser.py.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapter.errors import StoreError
from adapter.reviews import (
    console_messages,
    earlier_versions,
    report_observations,
    save_review,
    undoable,
    worklist,
)
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.ui.identity import Identities
from mappings.review import (
    Decision,
    Reviewer,
    ReviewRefused,
    evidence,
    review,
    review_provenance_id,
    undo_provenance_id,
)
from mappings.template import load_builtin_templates
from tests.stores import KINDS, data_dir, open_store

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
CHEST_CT = (HL7_DIR / "chest_ct.hl7").read_bytes().strip()


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[arg-type]


def _extract(store: Store, settings: Settings, raw: bytes = CHEST_CT) -> tuple[int, str]:
    """Store and extract a message in-process (rules stage); (message id, report id)."""
    from workers.tasks import process_message

    message_id = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "CT0001")).message_id
    bundle_ids = process_message(store, settings, message_id)
    assert bundle_ids
    bundle = store.get_bundle(bundle_ids[0])
    assert bundle is not None
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    return message_id, str(report["id"])


def _dead(store: Store, raw: bytes, app: str, facility: str, control_id: str) -> int:
    message_id = store.accept(Incoming(raw, "mllp", app, facility, control_id)).message_id
    store.mark_failed(message_id, "no narrative text", dead=True)
    return message_id


def _dead_raw(control_id: str, accession: str) -> bytes:
    return (
        f"MSH|^~\\&|RIS|DEKLINIK|RADBRIDGE|RBHOSP|20261101093000||ORU^R01^ORU_R01|{control_id}|P|"
        f"2.5.1\rPID|1||MRN0009^^^RBH^MR||TESTPATIENT^BETA\rOBR|1|PL9|{accession}|24627-2^Chest "
        "CT^LN\r"
    ).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_worklist_identity_and_attention(tmp_path: Path, kind: str) -> None:
    settings = _settings(tmp_path)
    with open_store(kind, settings) as store:
        message_id, report_id = _extract(store, settings)
        who = Identities(store, settings).of(report_id)
        assert who.patient_name == "TESTPATIENT, ALPHA"
        assert (who.mrn, who.accession, who.exam) == ("MRN0001", "ACC1001", "Chest CT")
        assert who.exam_date.startswith("2026-11-01")
        [item] = worklist(store)
        assert (item.critical, item.mismatches) == (0, 0)
        # a critical result's Flag in the report's Bundle (issue 20) puts the report first
        stored = report_observations(store, report_id)
        bundle = store.get_bundle(stored[0].bundle_id)
        assert bundle is not None
        patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        flag_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flag-{report_id}"))
        flag = {
            "resourceType": "Flag",
            "id": flag_id,
            "status": "active",
            "code": {"text": "pneumothorax"},
            "subject": {"reference": f"Patient/{patient['resource']['id']}"},
        }
        bundle = copy.deepcopy(bundle)
        bundle["entry"].append(
            {
                "fullUrl": f"urn:uuid:{flag_id}",
                "resource": flag,
                "request": {"method": "PUT", "url": f"Flag/{flag_id}"},
            }
        )
        store.save_result(message_id, report_id, bundle)
        assert store.get_resource("Flag", flag_id) is not None
        [item] = worklist(store)
        assert item.critical == 1 and item.needs_attention


@pytest.mark.parametrize("kind", KINDS)
def test_undo_brings_the_ai_value_back_as_a_new_version(tmp_path: Path, kind: str) -> None:
    settings = _settings(tmp_path)
    with open_store(kind, settings) as store:
        message_id, report_id = _extract(store, settings)
        first = report_observations(store, report_id)[0]
        oid = str(first.body["id"])
        template = load_builtin_templates()["chest_ct"]
        with pytest.raises(ReviewRefused, match="only a decision can be undone"):
            review(first.body, template, Decision.UNDO, Reviewer("rita"), new_version=2)
        rejected = review(first.body, template, Decision.REJECT, Reviewer("rita"), new_version=2)
        save_review(store, rejected, expected_version=1, reviewer="rita", decision="reject")
        now = report_observations(store, report_id)[0]
        assert now.body["status"] == "entered-in-error" and undoable(store, [now]) == {oid}
        previous = earlier_versions(store, [(oid, 1)])[oid]
        result = review(
            now.body,
            template,
            Decision.UNDO,
            Reviewer("rita"),
            new_version=3,
            previous=previous,
            report=f"DiagnosticReport/{report_id}",
        )
        save_review(store, result, expected_version=2, reviewer="rita", decision="undo")
        back = report_observations(store, report_id)[0]
        assert back.version == 3 and back.body["status"] == "preliminary"
        for key in ("valueCodeableConcept", "code", "bodySite"):
            assert back.body.get(key) == first.body.get(key)
        assert evidence(back.body) == evidence(first.body)
        assert undoable(store, [back]) == set()
        provenance = store.get_resource("Provenance", undo_provenance_id(oid, 3))
        assert provenance is not None
        assert provenance["activity"] == {"text": "UNDO"}
        assert provenance["target"] == [{"reference": f"Observation/{oid}/_history/3"}]
        revised = [e["what"]["reference"] for e in provenance["entity"] if e["role"] == "revision"]
        assert revised == [f"Observation/{oid}/_history/2", f"Observation/{oid}/_history/1"]
        # not a decision's Provenance: a re-extraction treats the value as awaiting review
        assert undo_provenance_id(oid, 3) != review_provenance_id(oid, 3)
        assert store.audit_trail(message_id)[-2:] == ["review_reject", "review_undo"]
        # an undone value can be decided again
        again = review(back.body, template, Decision.ACCEPT, Reviewer("rita"), new_version=4)
        save_review(store, again, expected_version=3, reviewer="rita", decision="accept")
        assert report_observations(store, report_id)[0].body["status"] == "final"


@pytest.mark.parametrize("kind", KINDS)
def test_console_filters_msh10_accession_sender_and_conflicts(tmp_path: Path, kind: str) -> None:
    settings = _settings(tmp_path)
    with open_store(kind, settings) as store:
        extracted, _ = _extract(store, settings)
        dead = _dead(store, _dead_raw("DK0001", "ACC2002"), "RIS", "DEKLINIK", "DK0001")
        resent = store.accept(
            Incoming(_dead_raw("DK0001", "ACC2003"), "mllp", "RIS", "DEKLINIK", "DK0001")
        )
        assert resent.conflict

        def ids(**filters: Any) -> list[int]:
            return [row.id for row in console_messages(store, **filters)[0]]

        assert ids(control_id="CT0001") == [extracted]
        assert ids(control_id="CT000") == []
        assert ids(accession="ACC1001") == [extracted]  # through the stored report
        assert ids(accession="ACC2002") == [dead]  # a dead letter: through its OBR-3
        assert ids(accession="ACC200") == []  # never a substring
        assert ids(accession="PL9") == []  # the placer number is not the accession
        # the sender filter matches what the column shows
        rows, _ = console_messages(store, message_id=dead)
        assert rows[0].sender == "RIS/DEKLINIK"
        assert ids(sender="RIS/DEKLINIK") == [resent.message_id, dead]
        assert ids(sender="DEKLINIK") == [resent.message_id, dead]
        assert ids(sender="RIS/RBHOSP") == [extracted]
        assert ids(sender="RBHOSP/DEKLINIK") == []
        assert ids(conflicts_only=True) == [resent.message_id]
        assert [r.conflict for r in console_messages(store)[0]] == [True, False, False]


@pytest.mark.parametrize("kind", KINDS)
def test_a_dead_letter_is_discarded_or_resolved_with_a_reason(tmp_path: Path, kind: str) -> None:
    settings = _settings(tmp_path)
    with open_store(kind, settings) as store:
        raw = _dead_raw("DK0002", "ACC2004")
        one = _dead(store, raw, "RIS", "DEKLINIK", "DK0002")
        two = _dead(store, _dead_raw("DK0003", "ACC2005"), "RIS", "DEKLINIK", "DK0003")
        store.close_dead_letter(one, "discarded", "test message from the RIS vendor", "otto")
        store.close_dead_letter(two, "resolved", "entered by hand in the EHR", "otto")
        row = store.get_message(one)
        assert row is not None and row.state == "discarded"
        assert row.reason == "no narrative text"  # why it failed stays
        assert store.raw(one) == raw  # the stored message is never deleted
        assert store.audit_trail(one)[-1] == "discarded"
        assert [r.id for r in store.dead_letters()] == []
        closed = {row.id: (row.state, detail) for row, detail in store.closed_dead_letters()}
        assert closed == {
            one: ("discarded", "by otto: test message from the RIS vendor"),
            two: ("resolved", "by otto: entered by hand in the EHR"),
        }
        with pytest.raises(StoreError, match="cannot go from discarded"):
            store.close_dead_letter(one, "resolved", "again", "otto")
        with pytest.raises(StoreError):
            store.close_dead_letter(two, "deleted", "no such outcome", "otto")
        store.requeue(one)  # still possible: the message was kept
        assert store.counts_by_state()["accepted"] == 1


def test_the_routes_undo_close_and_search(tmp_path: Path) -> None:
    """The same through the pages (development mode: open, both roles), refusals included."""
    import re

    from fastapi.testclient import TestClient

    from adapter.api import create_app

    settings = _settings(tmp_path)
    store = Store.open(settings)
    try:
        extracted, report_id = _extract(store, settings)
        client = TestClient(create_app(settings, store))
        page = client.get(f"/ui/reports/{report_id}")
        assert 'data-field="patient">TESTPATIENT, ALPHA<' in page.text
        csrf = re.findall(r'name="csrf" value="([^"]+)"', page.text)[0]
        oid = str(report_observations(store, report_id)[0].body["id"])
        url = f"/ui/reports/{report_id}/observations/{oid}"
        early = client.post(url, data={"decision": "undo", "version": "1", "csrf": csrf})
        assert early.status_code == 422 and "only a decision can be undone" in early.text
        client.post(url, data={"decision": "accept", "version": "1", "csrf": csrf})
        assert 'value="undo" class="undo"' in client.get(f"/ui/reports/{report_id}").text
        undone = client.post(url, data={"decision": "undo", "version": "2", "csrf": csrf})
        assert undone.status_code == 200
        back = report_observations(store, report_id)[0]
        assert (back.version, back.body["status"]) == (3, "preliminary")
        # dead letters: a reason and a known outcome are required; only a dead letter closes
        dead = _dead(store, _dead_raw("DK0009", "ACC2009"), "RIS", "DEKLINIK", "DK0009")
        close = f"/ui/dead-letters/{dead}/close"
        for data, status in (
            ({"outcome": "discarded", "reason": "  "}, 400),
            ({"outcome": "deleted", "reason": "why"}, 400),
            ({"outcome": "discarded", "reason": "x" * 501}, 400),
        ):
            answer = client.post(close, data={"csrf": csrf, **data})
            assert answer.status_code == status, answer.text
        assert store.get_message(dead).state == "dead"  # type: ignore[union-attr]
        not_dead = client.post(
            f"/ui/dead-letters/{extracted}/close",
            data={"csrf": csrf, "outcome": "resolved", "reason": "done"},
        )
        assert not_dead.status_code == 409 and "not a dead letter" in not_dead.text
        closed = client.post(
            close, data={"csrf": csrf, "outcome": "resolved", "reason": "sent by fax"}
        )
        assert closed.status_code == 200 and ": sent by fax" in closed.text
        assert store.get_message(dead).state == "resolved"  # type: ignore[union-attr]
        console = client.get("/ui/messages", params={"accession": "ACC2009"}).text
        assert f'href="/ui/messages/{dead}"' in console and "TESTPATIENT" not in console
        assert f'href="/ui/messages/{extracted}"' not in console
    finally:
        store.close()


def test_a_fhir_report_names_its_patient_from_the_patient_sent(tmp_path: Path) -> None:
    import json

    from workers.tasks import process_message

    sent = json.loads((HL7_DIR.parent / "fhir" / "bundle_collection.json").read_text())
    patient = next(
        e["resource"] for e in sent["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["name"] = [{"family": "TESTPATIENT", "given": ["GAMMA", "G"]}]
    settings = _settings(tmp_path)
    store = Store.open(settings)
    try:
        raw = json.dumps(sent).encode()
        incoming = Incoming(raw, "http", content_type="application/fhir+json")
        message_id = store.accept(incoming).message_id
        [bundle_id] = process_message(store, settings, message_id)
        bundle = store.get_bundle(bundle_id)
        assert bundle is not None
        report_id = next(
            str(e["resource"]["id"])
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DiagnosticReport"
        )
        who = Identities(store, settings).of(report_id)
        assert who.patient_name == "TESTPATIENT, GAMMA G"
        assert (who.mrn, who.accession, who.exam) == ("MRN-F1", "ACC-F1", "Chest X-ray")
    finally:
        store.close()


def test_a_re_extraction_after_an_undo_treats_the_value_as_awaiting_review(
    tmp_path: Path,
) -> None:
    from workers.tasks import process_message

    settings = _settings(tmp_path)
    store = Store.open(settings)
    try:
        message_id, report_id = _extract(store, settings)
        first = report_observations(store, report_id)[0]
        oid = str(first.body["id"])
        template = load_builtin_templates()["chest_ct"]
        accepted = review(first.body, template, Decision.ACCEPT, Reviewer("rita"), new_version=2)
        save_review(store, accepted, expected_version=1, reviewer="rita", decision="accept")
        decided = report_observations(store, report_id)[0]
        previous = earlier_versions(store, [(oid, 1)])[oid]
        undo = review(
            decided.body,
            template,
            Decision.UNDO,
            Reviewer("rita"),
            new_version=3,
            previous=previous,
        )
        save_review(store, undo, expected_version=2, reviewer="rita", decision="undo")
        store.mark_delivered(message_id)
        store.requeue(message_id)  # `radbridge requeue`: the same report again
        assert process_message(store, settings, message_id)
        again = report_observations(store, report_id)[0]
        assert again.body["status"] == "preliminary" and again.version >= 3  # not kept as decided
        assert "review_kept" not in store.audit_trail(message_id)
        assert [item.report_id for item in worklist(store)] == [report_id]
    finally:
        store.close()
