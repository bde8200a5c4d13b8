"""A re-extraction must not undo a clinician's decision (issue 13 follow-up), on real stores
(SQLite and PostgreSQL) through the worker's `process_message` and the store's Bundle saving.

- the SAME report extracted again (an operator's requeue of a delivered message, a dead-letter
  requeue, reconcile, a resend with a new MSH-10): the reviewed versions stay (no new version,
  nothing delivered again when every value was decided), the extraction record notes it;
- a superseding report (OBR-25 C, a corrected result with other text): a new preliminary
  version of each reviewed value, back on the worklist, and it can be reviewed again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapter.reviews import report_observations, save_review, worklist
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.tables import extractions
from mappings.review import Correction, Decision, Reviewer, review
from mappings.template import load_builtin_templates
from tests.stores import KINDS, data_dir, open_store
from workers.tasks import process_message

HL7 = (Path(__file__).parent / "fixtures" / "hl7v2" / "chest_ct.hl7").read_bytes().strip()
TEMPLATE = load_builtin_templates()["chest_ct"]


def message(control_id: str, status: bytes = b"F", drop_nodule: bool = False) -> Incoming:
    """chest_ct.hl7 with another MSH-10 (and OBR-25 / without the nodule sentences)."""
    segments = HL7.split(b"\r")
    segments[0] = segments[0].replace(b"CT0001", control_id.encode())
    obr = segments[2].split(b"|")
    obr[25] = status
    segments[2] = b"|".join(obr)
    if drop_nodule:
        segments = [s for s in segments if b"nodule" not in s]
    return Incoming(b"\r".join(segments), "mllp", "RIS", "RBHOSP", control_id)


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    with open_store(request.param, settings) as opened:
        yield opened, settings


def extract(store: Store, settings: Settings, incoming: Incoming) -> tuple[int, list[str]]:
    message_id = store.accept(incoming).message_id
    bundle_ids = process_message(store, settings, message_id)
    assert bundle_ids is not None
    return message_id, bundle_ids


def report_of(store: Store, bundle_id: str) -> str:
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    return next(
        str(e["resource"]["id"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )


def decide(store: Store, report_id: str, count: int | None = None) -> dict[str, tuple[str, int]]:
    """Accept the first value, correct the second, reject the third, accept the rest (or only
    the first `count`); returns id -> (status, version) after the decisions."""
    reviewer = Reviewer("dr.review")
    plan = [
        (Decision.ACCEPT, None),
        (Decision.CORRECT, Correction(status="uncertain")),
        (Decision.REJECT, None),
    ]
    waiting = [
        o for o in report_observations(store, report_id) if o.body["status"] == "preliminary"
    ]
    for n, stored in enumerate(waiting[:count]):
        decision, correction = plan[n] if n < len(plan) else (Decision.ACCEPT, None)
        result = review(
            stored.body,
            TEMPLATE,
            decision,
            reviewer,
            new_version=stored.version + 1,
            correction=correction,
            report=f"DiagnosticReport/{report_id}",
        )
        save_review(
            store,
            result,
            expected_version=stored.version,
            reviewer=reviewer.username,
            decision=decision.value,
        )
    return states(store, report_id)


def states(store: Store, report_id: str) -> dict[str, tuple[str, int]]:
    return {
        str(o.body["id"]): (str(o.body["status"]), o.version)
        for o in report_observations(store, report_id)
    }


def bundle_statuses(store: Store, bundle_id: str) -> dict[str, str]:
    """Observation id -> status as the stored Bundle (what the EHR gets) carries it."""
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    return {
        str(e["resource"]["id"]): str(e["resource"]["status"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }


def extraction_notes(store: Store, message_id: int) -> list[dict[str, Any]]:
    with store.transaction() as connection:
        payloads = connection.execute(
            sa.select(extractions.c.payload)
            .where(extractions.c.message_id == message_id)
            .order_by(extractions.c.id)
        ).scalars()
        return [json.loads(p).get("review") or {} for p in payloads]


@pytest.mark.parametrize("how", ["requeue", "dead-letter requeue", "resend with a new MSH-10"])
def test_the_same_report_again_keeps_every_decision(
    setup: tuple[Store, Settings], how: str
) -> None:
    store, settings = setup
    message_id, (bundle_id,) = extract(store, settings, message("CT0001"))
    report_id = report_of(store, bundle_id)
    decided = decide(store, report_id)
    assert {status for status, _ in decided.values()} == {"final", "entered-in-error"}
    assert {version for _, version in decided.values()} == {2}
    reviewed_bundle = store.get_bundle(bundle_id)
    store.mark_delivered(message_id)  # the decisions went to the EHR

    if how == "requeue":  # `radbridge requeue` of a delivered message
        store.requeue(message_id)
        again, bundle_ids = message_id, process_message(store, settings, message_id)
    elif how == "dead-letter requeue":
        store.requeue(message_id)
        assert store.claim(message_id)
        store.mark_failed(message_id, "test", dead=True)
        store.requeue(message_id)
        again, bundle_ids = message_id, process_message(store, settings, message_id)
    else:
        again, bundle_ids = extract(store, settings, message("CT0009"))
        assert again != message_id

    assert bundle_ids == [], "nothing new to deliver: every value of the report was decided"
    assert states(store, report_id) == decided, "no new version, no preliminary"
    assert store.get_bundle(bundle_id) == reviewed_bundle, "the EHR's Bundle keeps the decisions"
    assert worklist(store) == []
    note = extraction_notes(store, again)[-1]
    assert sorted(note["kept"]) == sorted(decided) and "same report" in note["rule"]
    assert "review_kept" in store.audit_trail(again)


def test_a_partly_reviewed_report_keeps_the_decided_values(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    message_id, (bundle_id,) = extract(store, settings, message("CT0001"))
    report_id = report_of(store, bundle_id)
    decided = decide(store, report_id, count=1)
    (first,) = [oid for oid, (status, _) in decided.items() if status == "final"]
    store.mark_delivered(message_id)
    store.requeue(message_id)
    assert process_message(store, settings, message_id) == [bundle_id]  # the others changed
    after = states(store, report_id)
    assert after[first] == ("final", 2), "the decided value is not rewritten"
    assert bundle_statuses(store, bundle_id)[first] == "final", "the EHR never gets it undone"
    assert {status for oid, (status, _) in after.items() if oid != first} == {"preliminary"}
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    provenances = [e["resource"] for e in bundle["entry"] if "activity" in e["resource"]]
    assert [p["target"] for p in provenances] == [
        [{"reference": f"Observation/{first}/_history/2"}]
    ], "the decision's Provenance stays in the Bundle"
    assert [item.report_id for item in worklist(store)] == [report_id]  # the rest still waits
    assert extraction_notes(store, message_id)[-1]["kept"] == [first]


def test_a_corrected_report_needs_review_again(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    _, (bundle_id,) = extract(store, settings, message("CT0001"))
    report_id = report_of(store, bundle_id)
    decided = decide(store, report_id)
    assert worklist(store) == []

    corrected, bundle_ids = extract(store, settings, message("CT0002", b"C", drop_nodule=True))
    assert bundle_ids == [bundle_id]
    after = states(store, report_id)
    kept = {oid: state for oid, state in after.items() if state[0] == "preliminary"}
    assert kept and all(version == 3 for _, version in kept.values()), "a new version each"
    retired = set(decided) - set(kept)  # the nodule: retired, no longer in the report
    for oid in retired:
        stored = store.get_resource("Observation", oid)
        assert stored is not None and stored["status"] == "entered-in-error"
    assert retired and all(oid not in after for oid in retired)
    assert set(bundle_statuses(store, bundle_id).values()) <= {"preliminary", "entered-in-error"}
    assert [item.report_id for item in worklist(store)] == [report_id], "on the worklist again"
    note = extraction_notes(store, corrected)[-1]
    assert sorted(note["reopened"]) == sorted(decided) and "superseding" in note["rule"]
    assert "review_reopened" in store.audit_trail(corrected)

    # reviewed again, then the corrected message requeued: the new decisions stay
    again = decide(store, report_id)
    assert all(version == 4 for oid, (_, version) in again.items() if oid in kept)
    store.mark_delivered(corrected)
    store.requeue(corrected)
    assert process_message(store, settings, corrected) == []
    assert states(store, report_id) == again


def fhir_report(status: str, text: str) -> Incoming:
    """A FHIR DiagnosticReport (chest CT, text in presentedForm) as the HTTP endpoint stores it."""
    import base64

    resource = {
        "resourceType": "DiagnosticReport",
        "id": "dr-review-1",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "Chest CT"},
        "subject": {"identifier": {"system": "urn:radbridge:test:mrn", "value": "MRN0001"}},
        "effectiveDateTime": "2026-11-01T08:45:00+00:00",
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            }
        ],
    }
    raw = json.dumps(resource).encode("utf-8")
    return Incoming(raw, "http", "FHIR", "RBHOSP", f"dr-review-1-{status}", "application/fhir+json")


def test_a_fhir_report_amended_needs_review_again_and_a_requeue_does_not(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    text = (
        "FINDINGS: Small right pleural effusion with adjacent compressive atelectasis. "
        "A 6 mm solid nodule in the right upper lobe."
    )
    final, (bundle_id,) = extract(store, settings, fhir_report("final", text))
    report_id = report_of(store, bundle_id)
    decided = decide(store, report_id)
    store.mark_delivered(final)
    store.requeue(final)  # the same FHIR report again: kept
    assert process_message(store, settings, final) == []
    assert states(store, report_id) == decided

    amended, bundle_ids = extract(store, settings, fhir_report("amended", text))
    assert bundle_ids == [bundle_id]
    assert {state for state in states(store, report_id).values()} == {("preliminary", 3)}
    assert set(bundle_statuses(store, bundle_id).values()) == {"preliminary"}
    assert [item.report_id for item in worklist(store)] == [report_id]
    assert sorted(extraction_notes(store, amended)[-1]["reopened"]) == sorted(decided)


def test_the_ehr_never_gets_a_preliminary_over_a_decision(tmp_path: Path, redis_url: str) -> None:
    """With a Celery worker and a real FHIR server: the report delivered, every value decided
    and delivered, then the message requeued (as `radbridge requeue` does): nothing is pushed
    again, and the EHR's last version of every value is still the decision."""
    import time

    from celery.contrib.testing.worker import start_worker

    from adapter import destinations
    from adapter.queue import enqueue_extract
    from adapter.tables import bundles
    from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
    from tests.helpers.waiting import wait_for
    from workers.tasks import make_worker_app, store_for

    server = FhirServer().start()
    settings = Settings(  # type: ignore[call-arg]
        data_dir=data_dir(tmp_path),
        redis_url=redis_url,
        fhir_base_url=server.base_url,
        **EHR_IDENTITY,
        stage="rules",
    )
    store = store_for(settings)
    app = make_worker_app(settings)

    def state(message_id: int) -> str:
        row = store.get_message(message_id)
        return row.state if row else "missing"

    def ehr_statuses() -> dict[str, str]:
        return {
            url.removeprefix("Observation/"): history[-1]["status"]
            for url, history in server.history.items()
            if url.startswith("Observation/")
        }

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            message_id = store.accept(message("CT0001")).message_id
            enqueue_extract(app, message_id)
            wait_for(lambda: state(message_id) == "delivered", timeout=60)
            assert set(ehr_statuses().values()) == {"preliminary"}
            with store.transaction() as connection:
                bundle_id = str(
                    connection.execute(
                        sa.select(bundles.c.id).where(bundles.c.message_id == message_id)
                    ).scalar_one()
                )
            report_id = report_of(store, bundle_id)
            decided = decide(store, report_id)
            destinations.dispatch(app, settings, store, [bundle_id])  # as the review page does
            wanted = {oid: status for oid, (status, _) in decided.items()}
            wait_for(lambda: ehr_statuses() == wanted, timeout=60)
            # the decisions' Provenance follows the Observations in a second transaction
            wait_for(lambda: store.delivered_already(bundle_id, "fhir"), timeout=60)
            pushed = server.transactions

            store.requeue(message_id)  # `radbridge requeue` of the delivered message
            enqueue_extract(app, message_id)
            wait_for(lambda: state(message_id) in ("extracted", "delivered"), timeout=60)
            time.sleep(2)  # a push would land now
    finally:
        server.stop()
    assert ehr_statuses() == wanted, "the EHR's last version is the decision"
    assert server.transactions == pushed, "nothing pushed again"
    row = store.get_message(message_id)
    assert row is not None and (row.reason or "").startswith("kept: every value")
    assert states(store, report_id) == decided
