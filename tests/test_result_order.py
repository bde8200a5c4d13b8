"""Out-of-order results for one accession (issue 15 item 1, issue 14 promise 6), on real stores,
the pull API and a real FHIR server: a final (OBR-25 F), then an OLDER preliminary (P) with
"no effusion", then a corrected result (C) that drops the nodule.

- the preliminary never replaces the final: the DiagnosticReport stays final, its `result`
  lists the final's Observations, a search finds "effusion present" only;
- the correction supersedes it: the DiagnosticReport is corrected, and the nodule Observation it
  no longer has is retired (`entered-in-error`), no longer served, and pushed to the EHR so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.stores import KINDS
from workers.tasks import process_message

HL7 = (Path(__file__).parent / "fixtures" / "hl7v2" / "chest_ct.hl7").read_bytes().strip()
PRESENT, ABSENT = "52101004", "2667000"
EFFUSION, NODULE = "Pleural effusion", "Pulmonary nodule"

FINAL = (
    "CT0001",
    "F",
    "20261101084500",
    [
        "FINDINGS:",
        "Small right pleural effusion with adjacent compressive atelectasis.",
        "A 6 mm solid nodule in the right upper lobe.",
    ],
)
OLDER_PRELIMINARY = ("CT0002", "P", "20261101080000", ["FINDINGS:", "No pleural effusion."])
CORRECTED = (
    "CT0003",
    "C",
    "20261101084500",
    ["FINDINGS:", "Small right pleural effusion with adjacent compressive atelectasis."],
)


def result(control_id: str, status: str, observed: str, lines: list[str]) -> Incoming:
    """chest_ct.hl7 (accession ACC1001) with another MSH-10, OBR-7, OBR-25 and report text."""
    segments = HL7.split(b"\r")
    msh = segments[0].replace(b"CT0001", control_id.encode())
    obr = segments[2].split(b"|")
    obr[7], obr[25] = observed.encode(), status.encode()
    obx = [
        f"OBX|{i}|ST|59776-5^Findings^LN|1|{text}||||||{status}".encode()
        for i, text in enumerate(lines, 1)
    ]
    raw = b"\r".join([msh, segments[1], b"|".join(obr), *obx])
    return Incoming(raw, "mllp", "RIS", "RBHOSP", control_id)


def by_finding(observations: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Finding text -> the presence codes of the served Observations."""
    found: dict[str, list[str]] = {}
    for observation in observations:
        value = observation["valueCodeableConcept"]["coding"][0]["code"]
        found.setdefault(observation["code"]["text"], []).append(value)
    return found


def diagnostic_report(store: Store, bundle_id: str) -> dict[str, Any]:
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    stored = store.get_resource("DiagnosticReport", report["id"])
    assert stored is not None
    return stored


def test_an_older_preliminary_never_replaces_a_final_and_a_correction_retires(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    final = store.accept(result(*FINAL)).message_id
    (bundle_id,) = process_message(store, settings, final) or []
    final_report = diagnostic_report(store, bundle_id)
    final_results = final_report["result"]
    assert by_finding(store.search_observations()) == {
        "Atelectasis": [PRESENT],
        EFFUSION: [PRESENT],
        NODULE: [PRESENT],
    }

    preliminary = store.accept(result(*OLDER_PRELIMINARY)).message_id
    assert process_message(store, settings, preliminary) == []
    after = diagnostic_report(store, bundle_id)
    assert (after["status"], after["result"]) == ("final", final_results)
    assert by_finding(store.search_observations())[EFFUSION] == [PRESENT]
    row = store.get_message(preliminary)
    assert row is not None and row.state == "extracted"
    assert row.reason == "superseded: a final result is stored"
    assert "superseded" in store.audit_trail(preliminary)  # its extraction record is kept

    corrected = store.accept(result(*CORRECTED)).message_id
    assert process_message(store, settings, corrected) == [bundle_id]
    after = diagnostic_report(store, bundle_id)
    assert after["status"] == "corrected"
    served = store.search_observations()
    assert by_finding(served) == {"Atelectasis": [PRESENT], EFFUSION: [PRESENT]}
    assert store.count_observations() == len(served) == len(after["result"])
    nodule_ref = next(
        r["reference"] for r in final_results if r["reference"] not in str(after["result"])
    )
    retired = store.get_resource("Observation", nodule_ref.split("/")[1])
    assert retired is not None and retired["status"] == "entered-in-error"
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    assert {
        e["request"]["url"]: e["resource"]["status"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }[nodule_ref] == "entered-in-error"  # the EHR gets the retirement too
    assert store.message_of_bundle(bundle_id) == corrected  # its delivery marks the correction
    subject = served[0]["subject"]["reference"]
    assert all(o["status"] != "entered-in-error" for o in store.observations_of_subject(subject))


def test_between_preliminaries_the_later_observation_time_wins(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    newer = store.accept(
        result("CT0011", "P", "20261101090000", ["FINDINGS:", "No pleural effusion."])
    ).message_id
    older = store.accept(
        result("CT0012", "P", "20261101080000", ["FINDINGS:", "Small right pleural effusion."])
    ).message_id
    assert process_message(store, settings, newer)
    assert process_message(store, settings, older) == []
    assert by_finding(store.search_observations()) == {EFFUSION: [ABSENT]}
    final = store.accept(
        result("CT0013", "F", "20261101080000", ["FINDINGS:", "Small right pleural effusion."])
    ).message_id
    assert process_message(store, settings, final)  # a final supersedes any preliminary
    assert by_finding(store.search_observations()) == {EFFUSION: [PRESENT]}
    replaced = store.get_message(newer)  # its result is gone: it says so, nothing to deliver
    assert replaced is not None and replaced.state == "extracted"
    assert replaced.reason == f"superseded: its result was replaced by message {final}"
    assert "superseded" in " ".join(store.audit_trail(newer))


def test_the_pull_api_serves_the_final_then_the_correction(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    store = Store.open(settings)
    client = TestClient(create_app(settings, store), raise_server_exceptions=False)
    try:
        for message in (FINAL, OLDER_PRELIMINARY):
            process_message(store, settings, store.accept(result(*message)).message_id)
        search = client.get("/fhir/Observation", params={"code": "60046008"}).json()
        assert search["total"] == 1
        assert search["entry"][0]["resource"]["valueCodeableConcept"]["coding"][0]["code"] == (
            PRESENT
        )
        report_ref = "DiagnosticReport/" + search["entry"][0]["resource"]["id"]
        reports = store.search_observations()
        nodule = next(o for o in reports if o["code"]["text"] == NODULE)
        process_message(store, settings, store.accept(result(*CORRECTED)).message_id)
        everything = client.get("/fhir/Observation").json()
        assert everything["total"] == 2
        assert NODULE not in {e["resource"]["code"]["text"] for e in everything["entry"]}
        read = client.get(f"/fhir/Observation/{nodule['id']}").json()
        assert read["status"] == "entered-in-error"  # still readable by id, as FHIR servers do
        assert report_ref
    finally:
        store.close()


def test_the_ehr_gets_the_final_never_the_older_preliminary_then_the_retirement(
    tmp_path: Path, redis_url: str
) -> None:
    from celery.contrib.testing.worker import start_worker

    from adapter.queue import enqueue_extract
    from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
    from tests.helpers.waiting import wait_for
    from workers.tasks import make_worker_app, store_for

    server = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        fhir_base_url=server.base_url,
        **EHR_IDENTITY,
        stage="rules",
    )  # type: ignore[arg-type]
    store = store_for(settings)
    app = make_worker_app(settings)

    def state(message_id: int) -> str:
        row = store.get_message(message_id)
        return row.state if row else "missing"

    def ehr(kind: str) -> dict[str, dict[str, Any]]:
        return {u: r for u, r in server.resources.items() if u.startswith(f"{kind}/")}

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            final = store.accept(result(*FINAL)).message_id
            enqueue_extract(app, final)
            wait_for(lambda: state(final) == "delivered", timeout=60)
            pushed_after_final = len(server.requests)
            preliminary = store.accept(result(*OLDER_PRELIMINARY)).message_id
            enqueue_extract(app, preliminary)
            wait_for(lambda: state(preliminary) == "extracted", timeout=60)
            assert len(server.requests) == pushed_after_final  # nothing pushed for it
            (report,) = ehr("DiagnosticReport").values()
            assert report["status"] == "final"
            assert by_finding(list(ehr("Observation").values()))[EFFUSION] == [PRESENT]
            corrected = store.accept(result(*CORRECTED)).message_id
            enqueue_extract(app, corrected)
            wait_for(lambda: state(corrected) == "delivered", timeout=60)
    finally:
        server.stop()
    (report,) = ehr("DiagnosticReport").values()
    assert report["status"] == "corrected"
    statuses = {o["code"]["text"]: o["status"] for o in ehr("Observation").values()}
    assert statuses == {
        "Atelectasis": "preliminary",
        EFFUSION: "preliminary",
        NODULE: "entered-in-error",
    }


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_through_serve_the_ehr_never_gets_a_preliminary_over_a_final(
    kind: str, tmp_path: Path
) -> None:
    """The EHR push with real processes (`radbridge serve` over MLLP, SQLite or PostgreSQL): a
    preliminary whose delivery was refused (503) and retried only after the final arrived, and
    a later preliminary after the final, never show at the EHR; the correction supersedes."""
    from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
    from tests.helpers.waiting import wait_for
    from tests.promises import SERVE_DOWN, database, make_serve, msa, send_mllp

    ehr = FhirServer().start()
    ehr.script.append((503, {"Retry-After": "2"}, None))  # the first push: come back in 2 s
    first_preliminary = ("CT0021", "P", "20261101080000", ["FINDINGS:", "No pleural effusion."])
    later_preliminary = ("CT0022", "P", "20261101093000", ["FINDINGS:", "No pleural effusion."])
    with database(kind, tmp_path) as db:
        serve = make_serve(
            tmp_path, {"RADBRIDGE_FHIR_BASE_URL": ehr.base_url, **EHR_IDENTITY_ENV, **db}
        )

        def send(message: tuple[str, str, str, list[str]]) -> None:
            (ack,) = send_mllp(serve.mllp_port, [result(*message).raw])
            assert msa(ack) == ("CA", message[0])

        try:
            serve.start().ready()
            send(first_preliminary)
            wait_for(
                lambda: not ehr.script,  # the 503 answered the push's first request (its read)
                60,
                "the refused push",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            send(FINAL)
            wait_for(
                lambda: serve.job(2)["state"] == "delivered",
                60,
                "the final pushed",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            # the refused push's retry (due 2 s after the 503) finds the Bundle, now the final's,
            # already delivered and pushes nothing
            time.sleep(4)
            assert len(ehr.requests) == 1  # the final's transaction (the refused push: no write)
            after_final = ehr.transactions
            send(later_preliminary)
            wait_for(
                lambda: serve.job(3)["state"] == "extracted",
                60,
                "the later one",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            superseded = serve.job(3)["reason"]
            time.sleep(2)  # a push of it would land now
            after_later = ehr.transactions
            send(CORRECTED)
            wait_for(
                lambda: serve.job(4)["state"] == "delivered",
                60,
                "the correction",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
        finally:
            serve.stop()
            ehr.stop()
    (report_url,) = [u for u in ehr.history if u.startswith("DiagnosticReport/")]
    versions = [r["status"] for r in ehr.history[report_url]]
    observations = [
        (o["code"]["text"], o["status"], o["valueCodeableConcept"]["coding"][0]["code"])
        for u, history in ehr.history.items()
        if u.startswith("Observation/")
        for o in history
    ]
    print(
        f"promise 6 EHR push ({kind}): DiagnosticReport versions {versions}, "
        f"{ehr.puts[report_url]} PUTs, {ehr.transactions} transactions, "
        f"{len(ehr.requests)} requests"
    )
    assert superseded == "superseded: a final result is stored"
    assert after_later == after_final  # nothing pushed for the later preliminary
    assert versions == ["final", "corrected"]  # never a preliminary version at the EHR
    assert (EFFUSION, "preliminary", ABSENT) not in observations  # "no effusion" never served
    nodule = [status for text, status, _ in observations if text == NODULE]
    assert nodule == ["preliminary", "entered-in-error"]  # the correction retired it
