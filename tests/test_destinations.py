"""Issue 19 items 3 and 4: one table of destinations, ORU result status that follows the
decision and what each destination already got, and per-destination delivery that outlasts an
outage (a real Redis and Celery worker, a real store, a FHIR server and a python-hl7 ORU
receiver on real sockets; rules stage, no model)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapter import destinations
from adapter.reviews import report_observations, save_review
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from mappings.hl7.oru_out import oru_from_bundle, result_statuses
from mappings.review import Correction, Decision, Reviewer, review
from mappings.template import load_builtin_templates
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.helpers.oru_receiver import OruReceiver
from tests.helpers.waiting import wait_for
from tests.stores import KINDS, open_store
from tests.test_ehr_contract import HL7, decided, extracted

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"


# -- the table ------------------------------------------------------------------------------
def test_the_table_lists_every_configured_destination() -> None:
    none = Settings(stage="rules")  # type: ignore[call-arg]
    assert destinations.configured(none) == []
    both = Settings(  # type: ignore[call-arg]
        stage="rules",
        fhir_base_url="http://ehr.invalid/fhir",
        oru_target="mllp://127.0.0.1:1",
        app_ack_target="mllp://127.0.0.1:2",
    )
    assert [d.name for d in destinations.configured(both)] == ["fhir", "oru", "app_ack"]
    assert destinations.required(both) == ["fhir", "oru"]  # the per-Bundle ones
    assert destinations.by_name("oru").env == "RADBRIDGE_ORU_TARGET"


# -- ORU result status (HL7 table 0085) ------------------------------------------------------
def _obx11(message: bytes) -> list[str]:
    return [s.split("|")[11] for s in message.decode().split("\r") if s.startswith("OBX|")]


def _obx11_by_value(message: bytes) -> list[str]:
    """OBX-11 of each value: an OBX whose OBX-4 sub-ID repeats the previous one's is a component
    of that value (a size, issue 20 item 5) and carries its status, so it is left out."""
    statuses: list[str] = []
    previous = None
    for segment in message.decode().split("\r"):
        if not segment.startswith("OBX|"):
            continue
        fields = segment.split("|")
        if fields[4] and fields[4] == previous:
            continue
        previous = fields[4]
        statuses.append(fields[11])
    return statuses


def _obr25(message: bytes) -> str:
    obr = next(s for s in message.decode().split("\r") if s.startswith("OBR|"))
    return obr.split("|")[25]


def _oru(bundle: dict[str, Any], sent: dict[str, str] | None = None) -> bytes:
    return oru_from_bundle(bundle, control_id="T1", sent=sent)


def test_obx11_follows_the_decision_and_what_the_destination_got() -> None:
    settings = Settings(stage="rules")  # type: ignore[call-arg]
    _, bundle = extracted((HL7_DIR / "chest_ct.hl7").read_bytes(), HL7, settings)
    first = _oru(bundle)
    assert set(_obx11(first)) == {"P"} and _obr25(first) == "P"  # before review
    sent_p = result_statuses(bundle)

    accepted = decided(bundle, [(Decision.ACCEPT, None)] * 20)
    message = _oru(accepted, sent_p)
    assert set(_obx11(message)) == {"F"} and _obr25(message) == "F"  # all decided

    # a correction of a value whose F this destination never got: F with the corrected value
    corrected = decided(bundle, [(Decision.CORRECT, Correction(status="absent"))])
    statuses = result_statuses(corrected, sent_p)
    assert next(iter(statuses.values())).startswith("F:")
    # ... and C once its F was sent (a later change of that value)
    sent_f = result_statuses(decided(bundle, [(Decision.ACCEPT, None)]), sent_p)
    again = oru_from_bundle(corrected, control_id="T2", sent=sent_f)
    assert _obx11(again)[0] == "C"
    assert _obr25(again) == "P"  # other values still await review
    all_done = decided(
        bundle, [(Decision.CORRECT, Correction(status="absent"))] + [(Decision.ACCEPT, None)] * 20
    )
    assert _obr25(oru_from_bundle(all_done, control_id="T3", sent=sent_f)) == "C"
    # the same content re-sent keeps its status (and so its MSH-10)
    assert _obx11(_oru(accepted, result_statuses(accepted, sent_p))) == _obx11(message)


def test_a_rejected_value_is_w_and_an_undone_rejection_is_c() -> None:
    settings = Settings(stage="rules")  # type: ignore[call-arg]
    _, bundle = extracted((HL7_DIR / "chest_ct.hl7").read_bytes(), HL7, settings)
    rejected = decided(bundle, [(Decision.REJECT, None)])
    message = _oru(rejected, result_statuses(bundle))
    assert _obx11(message)[:2] == ["W", "W"]  # the nodule and its size component
    assert _obx11_by_value(message)[0] == "W" and "W" not in _obx11_by_value(message)[1:]
    sent_w = result_statuses(rejected, result_statuses(bundle))
    # the rejection undone (the value live and final again): re-sent as a correction
    undone = decided(bundle, [(Decision.ACCEPT, None)])
    assert _obx11(_oru(undone, sent_w))[0] == "C"


# -- the store: one record per destination ---------------------------------------------------
@contextmanager
def _stored(kind: str, settings: Settings) -> Iterator[tuple[Store, int, str]]:
    """A store of `kind` holding the chest CT fixture extracted (rules stage): (store, message
    id, Bundle id)."""
    with open_store(kind, settings) as store:
        yield (store, *_extract(store, settings))


def _extract(store: Store, settings: Settings) -> tuple[int, str]:
    from workers.tasks import process_message

    accepted = store.accept(
        Incoming((HL7_DIR / "chest_ct.hl7").read_bytes().strip(), "mllp", "RIS", "RBHOSP", "C1")
    )
    bundle_ids = process_message(store, settings, accepted.message_id)
    assert bundle_ids
    return accepted.message_id, bundle_ids[0]


@pytest.mark.parametrize("kind", KINDS)
def test_one_refusing_destination_never_makes_the_message_dead(tmp_path: Path, kind: str) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, stage="rules", fhir_base_url="http://ehr.invalid/fhir",
        oru_target="mllp://127.0.0.1:1",
    )  # fmt: skip
    with _stored(kind, settings) as (store, message_id, bundle_id):
        destinations.dispatch(None, settings, store, [bundle_id])
        assert {r["target"]: r["state"] for r in store.delivery_states(message_id)} == {
            "fhir": "queued",
            "oru": "queued",
        }
        store.record_delivery_attempt(
            bundle_id, "fhir", state="refused", status=422, reason="refused: FHIR server refused"
        )
        store.record_delivery_attempt(
            bundle_id, "oru", state="delivered", delivered_message=message_id,
            required=destinations.required(settings),
        )  # fmt: skip
        row = store.get_message(message_id)
        assert row is not None and row.state == "extracted"  # not dead, not delivered either
        health = destinations.health(settings, store)
        assert health["fhir"]["refused"] == 1 and health["oru"]["delivered"] == 1
        # the operator's resend of the refusing destination: queued again with a fresh horizon
        destinations.dispatch(None, settings, store, [bundle_id], ["fhir"], fresh=True)
        states = {r["target"]: r for r in store.delivery_states(message_id)}
        assert states["fhir"]["state"] == "queued" and states["fhir"]["failing_since"] is None
        assert states["oru"]["state"] == "delivered"
        assert store.undelivered("fhir") == [bundle_id] and store.undelivered("oru") == []
        store.record_delivery_attempt(
            bundle_id, "fhir", state="delivered", delivered_message=message_id,
            required=destinations.required(settings),
        )  # fmt: skip
        row = store.get_message(message_id)
        assert row is not None and row.state == "delivered"


@pytest.mark.parametrize("kind", KINDS)
def test_a_failure_run_keeps_its_start_until_delivered(tmp_path: Path, kind: str) -> None:
    settings = Settings(data_dir=tmp_path, stage="rules", oru_target="mllp://127.0.0.1:1")  # type: ignore[call-arg]
    with _stored(kind, settings) as (store, _, bundle_id):
        store.record_delivery_attempt(bundle_id, "oru", state="retry", reason="DeliveryRetryable")
        first = store.delivery(bundle_id, "oru")
        assert first is not None and first["failing_since"] is not None
        destinations.dispatch(None, settings, store, [bundle_id])  # a decision while it fails
        store.record_delivery_attempt(bundle_id, "oru", state="retry", reason="DeliveryRetryable")
        second = store.delivery(bundle_id, "oru")
        assert second is not None and second["failing_since"] == first["failing_since"]
        assert second["attempts"] == 2
        store.record_delivery_attempt(bundle_id, "oru", state="delivered")
        done = store.delivery(bundle_id, "oru")
        assert done is not None and done["failing_since"] is None and done["reason"] is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_decision_saved_during_a_push_is_not_taken_as_delivered(
    tmp_path: Path, kind: str
) -> None:
    """A push reads the Bundle, a reviewer decides meanwhile, the push records its delivery:
    the decision is still owed to the destination (sent again), never lost."""
    from datetime import timedelta

    settings = Settings(data_dir=tmp_path, stage="rules", oru_target="mllp://127.0.0.1:1")  # type: ignore[call-arg]
    with _stored(kind, settings) as (store, message_id, bundle_id):
        job = store.delivery_job(bundle_id, "oru", lease=timedelta(minutes=5))
        assert job is not None and job.stamp is not None and not job.busy
        report_id = _report_id(store, bundle_id)
        first = report_observations(store, report_id)[0]
        time.sleep(0.01)  # the decision's time stamp is later than the read
        result = review(
            first.body, None, Decision.REJECT, Reviewer("dr.jansen"),
            new_version=first.version + 1, report=f"DiagnosticReport/{report_id}",
        )  # fmt: skip
        save_review(
            store, result, expected_version=first.version, reviewer="dr.jansen", decision="reject"
        )
        changed = store.record_delivery_attempt(
            bundle_id, "oru", state="delivered", stamp=job.stamp, delivered_message=message_id,
            required=["oru"],
        )  # fmt: skip
        assert changed  # the task sends it again at once
        assert not store.delivered_already(bundle_id, "oru")
        row = store.get_message(message_id)
        assert row is not None and row.state == "extracted"  # its current result is not delivered
        assert store.undelivered("oru") == [bundle_id]  # reconcile sends it if nothing else does
        again = store.delivery_job(bundle_id, "oru", lease=timedelta(minutes=5))
        assert again is not None and not again.delivered_already and not again.busy


@pytest.mark.parametrize("kind", KINDS)
def test_a_requeue_never_resurrects_a_rejected_value(tmp_path: Path, kind: str) -> None:
    """Reject a value, deliver, requeue the message (extracted again): the ORU built from the
    stored result still sends that value as W, never as a live P."""
    from workers.tasks import process_message

    settings = Settings(data_dir=tmp_path, stage="rules", oru_target="mllp://127.0.0.1:1")  # type: ignore[call-arg]
    with _stored(kind, settings) as (store, message_id, bundle_id):
        report_id = _report_id(store, bundle_id)
        first = report_observations(store, report_id)[0]
        result = review(
            first.body, None, Decision.REJECT, Reviewer("dr.jansen"),
            new_version=first.version + 1, report=f"DiagnosticReport/{report_id}",
        )  # fmt: skip
        save_review(
            store, result, expected_version=first.version, reviewer="dr.jansen", decision="reject"
        )
        store.mark_delivered(message_id)
        store.requeue(message_id)
        assert process_message(store, settings, message_id) is not None
        bundle = store.get_bundle(bundle_id)
        assert bundle is not None
        statuses = result_statuses(bundle, {})
        assert statuses[f"Observation/{first.body['id']}"].startswith("W:")
        assert {v[0] for k, v in statuses.items() if k != f"Observation/{first.body['id']}"} == {
            "P"
        }


# -- an outage longer than the old give-up ---------------------------------------------------
def _accept_first(store: Store, settings: Settings, app: Any, bundle_id: str) -> str:
    """A reviewer accepts the report's first value (as the review UI does); its id."""
    report_id = _report_id(store, bundle_id)
    current = report_observations(store, report_id)[0]
    template_id = next(
        s["valueString"] for ext in current.body["extension"] for s in ext["extension"]
        if s["url"] == "template"
    ).split("|")[0]  # fmt: skip
    result = review(
        current.body, load_builtin_templates()[template_id], Decision.ACCEPT,
        Reviewer("dr.jansen"), new_version=current.version + 1,
        report=f"DiagnosticReport/{report_id}",
    )  # fmt: skip
    saved = save_review(
        store, result, expected_version=current.version, reviewer="dr.jansen", decision="accept"
    )
    destinations.dispatch(app, settings, store, [saved])
    return str(current.body["id"])


def test_an_outage_longer_than_the_old_give_up_loses_nothing_and_keeps_order(
    tmp_path: Path, redis_url: str
) -> None:
    """Both destinations down (FHIR 503, ORU NAK AE) for more attempts than the old give-up
    (RADBRIDGE_TASK_MAX_RETRIES=1: 2 attempts), a decision made during the outage; after
    recovery everything is delivered, the decision last, nothing dead."""
    from celery.contrib.testing.worker import start_worker

    from workers.tasks import make_worker_app, store_for

    server = FhirServer().start()
    receiver = OruReceiver().start()
    server.script = [(503, {}, None)] * 10_000  # down until cleared
    receiver.answers = ["AE"] * 10_000
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", redis_url=redis_url, stage="rules",
        fhir_base_url=server.base_url, oru_target=receiver.target, task_max_retries=1,
        delivery_retry_for=900, delivery_retry_max_interval_s=0.3, delivery_timeout_s=30,
        **EHR_IDENTITY,
    )  # fmt: skip
    store = store_for(settings)
    app = make_worker_app(settings)
    message = store.accept(
        Incoming((HL7_DIR / "chest_ct.hl7").read_bytes().strip(), "mllp", "RIS", "RBHOSP", "C9")
    )
    from adapter.queue import enqueue_extract

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, message.message_id)
            wait_for(lambda: len(store.delivery_states(message.message_id)) == 2, 180)
            (bundle_id,) = store.bundles_of_message(message.message_id)

            def attempts(target: str) -> int:
                record = store.delivery(bundle_id, target)
                return int(record["attempts"]) if record else 0

            wait_for(lambda: attempts("fhir") >= 3 and attempts("oru") >= 3, 180)
            health = destinations.health(settings, store)
            assert health["fhir"]["failing"] and health["oru"]["failing"]
            accepted_id = _accept_first(store, settings, app, bundle_id)
            wait_for(lambda: attempts("fhir") >= 5 and attempts("oru") >= 5, 180)
            retrying = {r["target"]: r for r in store.delivery_states(message.message_id)}
            assert {r["state"] for r in retrying.values()} <= {"retry", "sending", "queued"}
            assert all(r["reason"] for r in retrying.values() if r["state"] == "retry")
            with server.lock:
                server.script.clear()  # the EHR is back
            receiver.answers.clear()
            wait_for(
                lambda: store.get_message(message.message_id).state == "delivered",  # type: ignore[union-attr]
                180,
            )
    finally:
        server.stop()
        receiver.stop()
    final = {r["target"]: r for r in store.delivery_states(message.message_id)}
    assert {r["state"] for r in final.values()} == {"delivered"}
    assert all(r["failing_since"] is None for r in final.values())
    assert not destinations.health(settings, store)["fhir"]["failing"]
    # the FHIR server holds the decision
    observation = server.read(f"Observation/{accepted_id}")
    assert observation is not None and observation["status"] == "final"
    # the ORU receiver: nothing after the decision undoes it (no P after its F)
    statuses = [str(received.segments("OBX")[0](11)) for received in receiver.messages]
    assert statuses[-1] == "F"
    assert "P" not in statuses[statuses.index("F") :]
    assert store.audit_trail(message.message_id).count("processing") == 1  # never re-extracted


# -- console, /readyz, /metrics and the CLI ---------------------------------------------------
def test_console_readyz_metrics_and_cli_show_each_destination(tmp_path: Path) -> None:
    import re

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from adapter.api import create_app
    from app.cli import app as cli

    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", stage="rules", fhir_base_url="http://ehr.invalid/fhir",
        oru_target="mllp://127.0.0.1:1",
    )  # fmt: skip
    with _stored("sqlite", settings) as (store, message_id, bundle_id):
        client = TestClient(create_app(settings, store))
        report_id = _report_id(store, bundle_id)
        page = client.get(f"/ui/reports/{report_id}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        first = report_observations(store, report_id)[0]
        decided_ = client.post(
            f"/ui/reports/{report_id}/observations/{first.body['id']}",
            data={"decision": "reject", "version": str(first.version), "csrf": csrf.group(1)},
        )
        assert decided_.status_code == 200
        # the decision reaches every configured destination (no broker: queued for reconcile)
        assert {r["target"]: r["state"] for r in store.delivery_states(message_id)} == {
            "fhir": "queued",
            "oru": "queued",
        }
        store.record_delivery_attempt(
            bundle_id, "fhir", state="refused", status=422, reason="refused: FHIR server refused"
        )
        store.record_delivery_attempt(bundle_id, "oru", state="retry", reason="DeliveryRetryable")

        job = client.get(f"/jobs/{message_id}").json()
        assert {d["destination"]: d["state"] for d in job["deliveries"]} == {
            "fhir": "refused",
            "oru": "retrying",
        }
        ready = client.get("/readyz")
        assert ready.status_code == 200  # a failing EHR never makes radbridge unready
        body = ready.json()
        assert (
            body["destinations"]["oru"]["failing"] and body["destinations"]["oru"]["retrying"] == 1
        )
        assert body["destinations"]["fhir"]["refused"] == 1
        metrics = client.get("/metrics").text
        assert 'radbridge_destination_failing{destination="oru"} 1' in metrics
        assert 'radbridge_deliveries{destination="fhir",state="refused"} 1' in metrics

        console = client.get("/ui/messages")
        assert "Destinations" in console.text and "FAILING" in console.text
        detail = client.get(f"/ui/messages/{message_id}")
        assert detail.status_code == 200
        assert "refused: FHIR server refused" in detail.text and "retrying" in detail.text
        assert "Resend to FHIR push (fhir)" in detail.text
        env = {
            "RADBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "RADBRIDGE_FHIR_BASE_URL": "http://ehr.invalid/fhir",
            "RADBRIDGE_ORU_TARGET": "mllp://127.0.0.1:1",
            "RADBRIDGE_STAGE": "rules",
        }
        letters = CliRunner().invoke(cli, ["dead-letters"], env=env)
        assert letters.exit_code == 0, letters.output
        assert "deliveries given up on" in letters.output and "refused" in letters.output
        resent = client.post(
            f"/ui/messages/{message_id}/resend",
            data={"destination": "fhir", "csrf": csrf.group(1)},
        )
        assert resent.status_code == 200 and "Resend to fhir queued" in resent.text
        states = {r["target"]: r["state"] for r in store.delivery_states(message_id)}
        assert states == {"fhir": "queued", "oru": "retry"}  # only that destination
        unknown = client.post(
            f"/ui/messages/{message_id}/resend",
            data={"destination": "app_ack", "csrf": csrf.group(1)},
        )
        assert unknown.status_code == 400
        trail = store.audit_trail(message_id)
        assert (
            trail.count("processing") == 1 and trail[-1] == "resend_by_operator"
        )  # no re-extraction

        shown = CliRunner().invoke(cli, ["show", "--message", str(message_id)], env=env)
        assert shown.exit_code == 0, shown.output
        assert "retrying" in shown.output and "queued" in shown.output
        again = CliRunner().invoke(cli, ["resend", str(message_id), "--to", "oru"], env=env)
        assert again.exit_code == 0, again.output
        assert {r["target"]: r["state"] for r in store.delivery_states(message_id)}[
            "oru"
        ] == "queued"
        wrong = CliRunner().invoke(cli, ["resend", str(message_id), "--to", "app_ack"], env=env)
        assert wrong.exit_code != 0


def _report_id(store: Store, bundle_id: str) -> str:
    """The DiagnosticReport id of a stored Bundle."""
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    return next(
        str(e["resource"]["id"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )


def test_bad_input_gives_each_destination_a_visible_state(tmp_path: Path, redis_url: str) -> None:
    """Issue 19's bad input, per destination: two EHR Patients match one identifier (FHIR
    refused with the reason, nothing written, never one picked) while the ORU receiver first
    never answers, then NAKs AE, then takes it (retried: the same MSH-10 each time, delivered);
    a second message NAKed AR is refused for ORU only."""
    from celery.contrib.testing.worker import start_worker

    from adapter.queue import enqueue_extract
    from workers.tasks import make_worker_app, store_for

    server = FhirServer().start()
    system = EHR_IDENTITY["identifier_systems"]["RBH"]
    for twin in ("twin-1", "twin-2"):
        server.store(
            f"Patient/{twin}",
            {
                "resourceType": "Patient",
                "id": twin,
                "identifier": [{"system": system, "value": "MRN0001"}],
            },
        )
    receiver = OruReceiver().start()
    receiver.answers = [None, "AE"]  # silent (connection closed), then a NAK, then AA
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", redis_url=redis_url, stage="rules",
        fhir_base_url=server.base_url, oru_target=receiver.target,
        delivery_retry_max_interval_s=0.3, delivery_timeout_s=5, **EHR_IDENTITY,
    )  # fmt: skip
    store = store_for(settings)
    app = make_worker_app(settings)
    raw = (HL7_DIR / "chest_ct.hl7").read_bytes().strip()
    first = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "B1"))

    def states(message_id: int) -> dict[str, str]:
        return {str(r["target"]): str(r["state"]) for r in store.delivery_states(message_id)}

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            enqueue_extract(app, first.message_id)
            wait_for(
                lambda: states(first.message_id) == {"fhir": "refused", "oru": "delivered"}, 180
            )
            receiver.answers = ["AR"]
            second = store.accept(
                Incoming(raw.replace(b"ACC1001", b"ACC1002"), "mllp", "RIS", "RBHOSP", "B2")
            )
            enqueue_extract(app, second.message_id)
            wait_for(lambda: states(second.message_id).get("oru") == "refused", 180)
    finally:
        server.stop()
        receiver.stop()
    records = {str(r["target"]): r for r in store.delivery_states(first.message_id)}
    assert "2 Patient resources at the EHR match one identifier" in records["fhir"]["reason"]
    assert "MRN0001" not in records["fhir"]["reason"]  # names the system, never the value
    assert sorted(server.resources) == ["Patient/twin-1", "Patient/twin-2"]  # nothing written
    assert records["oru"]["attempts"] == 3 and records["oru"]["reason"] is None
    sent = [str(m.segment("MSH")(10)) for m in receiver.messages[:3]]
    assert len(set(sent)) == 1  # the retries carry one MSH-10: the receiver can de-duplicate
    row = store.get_message(first.message_id)
    assert row is not None and row.state == "extracted"  # not dead: FHIR refused, ORU delivered
    oru = {str(r["target"]): r for r in store.delivery_states(second.message_id)}["oru"]
    assert oru["reason"] == "refused: ORU target rejected the message (AR)"
