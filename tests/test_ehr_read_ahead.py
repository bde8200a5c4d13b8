"""Issue 25, the reads of a task's reports ahead: `workers.delivery.read_states` reads the EHR
state of several reports in ONE FHIR batch (two entries each, as a report's own read), each
report's refusal its own; `deliver_report` uses it on its first attempt only; reports that
share a Patient identifier or a report key read on their own, at their turn; and
`workers.tasks.deliver_inline` reads ahead for the FHIR destination, each report reading on
its own when that request fails. Real sockets: the test EHR (`FhirServer`), real stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workers.tasks
from adapter.queue import EXTRACT_BATCH_TASK
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from mappings import ehr as ehr_mapping
from mappings.errors import IdentityRefused
from mappings.report import Report
from mappings.template import load_builtin_templates
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from tests.test_inline_delivery import Sent, worker_app
from tests.test_throughput import oru
from workers.delivery import deliver_report, read_states
from workers.errors import DeliveryRejected, DeliveryRetryable
from workers.process import process_message

RBH = EHR_IDENTITY["identifier_systems"]["RBH"]
ACCESSIONS = EHR_IDENTITY["accession_systems"]["RBHOSP"]
BATCHED = ["batch: Patient?identifier", "batch: DiagnosticReport?identifier"]
TEMPLATES = list(load_builtin_templates().values())


@pytest.fixture
def server() -> Iterator[FhirServer]:
    running = FhirServer().start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_paused_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that failed in an earlier test pauses nothing here."""
    monkeypatch.setattr(workers.tasks, "_PAUSED_UNTIL", {})


def settings_for(server: FhirServer, tmp_path: Path | None = None, **changes: Any) -> Settings:
    values: dict[str, Any] = {**EHR_IDENTITY, **changes}
    if tmp_path is not None:
        values["data_dir"] = tmp_path / "data"
    return Settings(fhir_base_url=server.base_url, stage="rules", **values)


def written(n: int, mrn: str) -> tuple[Report, dict[str, Any]]:
    """Message `n` of patient `mrn` (accession ACC-T25-n): its report and Bundle (rules stage)."""

    def no_model() -> Any:
        raise AssertionError("the rules stage needs no model")

    (result,) = process_message(
        oru(n, mrn=mrn), "x-application/hl7-v2+er7", TEMPLATES, Settings(stage="rules"), no_model
    ).results
    assert result.bundle is not None and ehr_mapping.has_content(result.bundle)
    return result.report, result.bundle


def hold_patient(server: FhirServer, mrn: str) -> None:
    with server.lock:
        server.store(
            f"Patient/ehr-{mrn}",
            {
                "resourceType": "Patient",
                "id": f"ehr-{mrn}",
                "identifier": [{"system": RBH, "value": mrn}],
            },
        )


def hold_report(server: FhirServer, n: int, mrn: str) -> str:
    """The EHR's own DiagnosticReport of accession ACC-T25-n; its `Type/id`."""
    url = f"DiagnosticReport/ehr-dr{n}"
    with server.lock:
        server.store(
            url,
            {
                "resourceType": "DiagnosticReport",
                "id": f"ehr-dr{n}",
                "identifier": [{"system": ACCESSIONS, "value": f"ACC-T25-{n}"}],
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
                "subject": {"reference": f"Patient/ehr-{mrn}"},
                "conclusion": "The EHR's conclusion.",
            },
        )
    return url


def patients_with(server: FhirServer, mrn: str) -> list[str]:
    return sorted(
        url
        for url, found in server.resources.items()
        if url.startswith("Patient/")
        and any(i.get("value") == mrn for i in found.get("identifier", []))
    )


# -- workers.delivery: read_states and deliver_report's state ---------------------------------


def test_the_reads_of_several_reports_are_one_batch_then_a_transaction_each(
    server: FhirServer,
) -> None:
    settings = settings_for(server)
    reports = [written(n, f"MRN-A{n}") for n in range(3)]
    states = read_states([report for report, _ in reports], settings)
    assert server.calls == ["POST /fhir/"]  # one request: the batch of six entries
    assert server.reads == BATCHED * 3
    assert all(isinstance(state, ehr_mapping.EhrState) for state in states)
    for (report, bundle), state in zip(reports, states, strict=True):
        assert deliver_report(bundle, report, settings, {}, state=state).sent
    assert server.calls == ["POST /fhir/"] * 4  # then one transaction each, nothing read again
    assert server.reads == BATCHED * 3
    assert (server.transactions, server.conflicts) == (3, 0)
    assert all(len(patients_with(server, f"MRN-A{n}")) == 1 for n in range(3))


def test_a_refused_entry_is_its_own_reports_and_its_own_read_decides(
    server: FhirServer,
) -> None:
    """The batch answers one report's Patient search 403: that report's state is the
    refusal its own read would raise, and its push reads again before a refusal that is
    final (here the EHR answers it: it delivers); the others deliver with theirs."""
    settings = settings_for(server)
    reports = [written(n, f"MRN-E{n}") for n in range(3)]
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "not yours"}],
    }
    none = {"response": {"status": "200 OK"},
            "resource": {"resourceType": "Bundle", "type": "searchset", "entry": []}}  # fmt: skip
    forbidden = {"response": {"status": "403 Forbidden", "outcome": outcome}}
    answer = {"resourceType": "Bundle", "type": "batch-response",
              "entry": [none, none, forbidden, none, none, none]}  # fmt: skip
    server.script = [(200, {}, answer)]
    states = read_states([report for report, _ in reports], settings)
    refused = states[1]
    assert isinstance(refused, DeliveryRejected)
    assert (refused.status, refused.outcome) == (403, outcome)
    assert deliver_report(reports[1][1], reports[1][0], settings, {}, state=refused).sent
    assert server.calls == ["POST /fhir/"] * 3  # the read ahead, its own read, its transaction
    for n in (0, 2):
        deliver_report(reports[n][1], reports[n][0], settings, {}, state=states[n])
    assert server.transactions == 3
    assert len(patients_with(server, "MRN-E1")) == 1


def test_a_report_without_its_patient_is_refused_alone_under_match(server: FhirServer) -> None:
    settings = settings_for(server, ehr_patient="match")
    hold_patient(server, "MRN-M0")
    hold_patient(server, "MRN-M2")
    reports = [written(n, f"MRN-M{n}") for n in range(3)]
    states = read_states([report for report, _ in reports], settings)
    assert server.calls == ["POST /fhir/"]
    assert isinstance(states[1], IdentityRefused)
    with pytest.raises(DeliveryRejected, match="RADBRIDGE_EHR_PATIENT=match") as caught:
        deliver_report(reports[1][1], reports[1][0], settings, {}, state=states[1])
    assert caught.value.outcome is not None  # refused by its own read, which confirmed it
    for n in (0, 2):
        deliver_report(reports[n][1], reports[n][0], settings, {}, state=states[n])
    assert server.calls == ["POST /fhir/"] * 4 and server.transactions == 2


def test_the_batch_request_failing_fails_them_all(server: FhirServer) -> None:
    settings = settings_for(server)
    reports = [written(n, f"MRN-F{n}") for n in range(2)]
    server.script = [(503, {"Retry-After": "4"}, None)]
    with pytest.raises(DeliveryRetryable) as caught:
        read_states([report for report, _ in reports], settings)
    assert (caught.value.status, caught.value.retry_after) == (503, 4.0)


def test_reports_sharing_a_patient_or_a_report_key_read_on_their_own(server: FhirServer) -> None:
    """Two reports of one Patient, two of one accession: each reads at its turn (the first's
    write may create what the second would duplicate); the others are read ahead. Nothing is
    read ahead with RADBRIDGE_EHR_BATCH_READS=false, nor for one report alone."""
    settings = settings_for(server)
    reports = [
        written(1, "MRN-S"),
        written(2, "MRN-S"),  # the same Patient
        written(3, "MRN-S3"),
        written(3, "MRN-S4"),  # the same accession
        written(5, "MRN-S5"),
        written(6, "MRN-S6"),
    ]
    states = read_states([report for report, _ in reports], settings)
    assert [state is not None for state in states] == [False] * 4 + [True] * 2
    assert server.calls == ["POST /fhir/"] and server.reads == BATCHED * 2
    off = settings.model_copy(update={"ehr_batch_reads": False})
    assert read_states([report for report, _ in reports], off) == [None] * len(reports)
    assert read_states([reports[4][0]], settings) == [None]
    assert server.calls == ["POST /fhir/"]


def test_a_conflict_after_a_read_ahead_reads_again(server: FhirServer) -> None:
    """The EHR's report changes after the read ahead: the transaction on the version read is
    refused 412; the second attempt reads afresh and keeps the EHR's change."""
    settings = settings_for(server)
    reports = []
    for n in (1, 2):
        hold_patient(server, f"MRN-C{n}")
        hold_report(server, n, f"MRN-C{n}")
        reports.append(written(n, f"MRN-C{n}"))
    states = read_states([report for report, _ in reports], settings)
    assert server.reads == BATCHED * 2
    url = "DiagnosticReport/ehr-dr1"
    with server.lock:  # a clinician amends it meanwhile
        server.store(url, {**server.resources[url], "conclusion": "Amended."})
    deliver_report(reports[0][1], reports[0][0], settings, {}, state=states[0])
    assert (server.transactions, server.conflicts) == (1, 1)
    assert server.reads == BATCHED * 3  # its own read, at the second attempt
    deliver_report(reports[1][1], reports[1][0], settings, {}, state=states[1])
    assert (server.transactions, server.conflicts) == (2, 1)
    assert server.reads == BATCHED * 3
    for n in (1, 2):
        held = server.resources[f"DiagnosticReport/ehr-dr{n}"]
        assert held["result"] and held["subject"] == {"reference": f"Patient/ehr-MRN-C{n}"}
    assert server.resources[url]["conclusion"] == "Amended."


# -- workers.tasks.deliver_inline: a task's reports ---------------------------------------------


def accept(store: Store, n: int, mrn: str) -> int:
    return store.accept(Incoming(oru(n, mrn=mrn), "mllp", "RIS", "RBHOSP", f"RA{n}")).message_id


def states_of(store: Store, ids: list[int]) -> list[str]:
    return [record["state"] for m in ids for record in store.delivery_states(m)]


def test_a_batch_task_reads_its_reports_in_one_request(
    store: Store, server: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = worker_app(store, settings_for(server, tmp_path), monkeypatch)
    sent = Sent(app, monkeypatch)
    ids = [accept(store, n, f"MRN-T{n}") for n in range(4)]
    assert len(app.tasks[EXTRACT_BATCH_TASK](ids)) == 4
    # one batch read (eight entries), then one transaction per report: 5 requests, not 8
    assert server.calls == ["POST /fhir/"] * 5
    assert server.reads == BATCHED * 4
    assert server.transactions == 4 and sent.tasks == []
    assert states_of(store, ids) == ["delivered"] * 4


def test_two_reports_of_one_new_patient_in_a_task_create_one_patient(
    store: Store, server: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RADBRIDGE_EHR_PATIENT=create: the second report of a new Patient reads at its turn,
    after the first's transaction created it, so only one transaction creates it."""
    transactions: list[dict[str, Any]] = []
    server.refuse = lambda bundle: transactions.append(bundle) or None  # records, refuses none
    app = worker_app(store, settings_for(server, tmp_path), monkeypatch)
    Sent(app, monkeypatch)
    ids = [accept(store, 1, "MRN-N"), accept(store, 2, "MRN-N")]
    ids += [accept(store, 3, "MRN-N3"), accept(store, 4, "MRN-N4")]
    app.tasks[EXTRACT_BATCH_TASK](ids)
    assert states_of(store, ids) == ["delivered"] * 4
    assert len(patients_with(server, "MRN-N")) == 1
    creates = [
        entry
        for bundle in transactions
        for entry in bundle["entry"]
        if (entry["request"]["method"], entry["request"]["url"]) == ("POST", "Patient")
        and entry["resource"]["identifier"][0]["value"] == "MRN-N"
    ]
    assert len(creates) == 1
    # the read ahead of the two others; each of MRN-N's reports its own read; four transactions
    assert server.calls == ["POST /fhir/"] * 7
    assert server.reads == BATCHED * 4


def test_a_refused_report_in_a_task_leaves_the_others_delivered(
    store: Store, server: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(server, tmp_path, ehr_patient="match")
    hold_patient(server, "MRN-R0")
    hold_patient(server, "MRN-R2")
    app = worker_app(store, settings, monkeypatch)
    sent = Sent(app, monkeypatch)
    ids = [accept(store, n, f"MRN-R{n}") for n in range(3)]
    app.tasks[EXTRACT_BATCH_TASK](ids)
    assert states_of(store, ids) == ["delivered", "refused", "delivered"]
    # the read ahead, the refused report's own read (its refusal is final), two transactions
    assert server.calls == ["POST /fhir/"] * 4
    assert sent.tasks == [] and not workers.tasks._paused("fhir")


def test_a_failing_read_ahead_leaves_each_report_to_read_on_its_own(
    store: Store, server: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch read ahead answered 503: nothing paused, each report reads on its own and
    delivers."""
    app = worker_app(store, settings_for(server, tmp_path), monkeypatch)
    sent = Sent(app, monkeypatch)
    ids = [accept(store, n, f"MRN-D{n}") for n in range(3)]
    server.script = [(503, {}, None)]
    app.tasks[EXTRACT_BATCH_TASK](ids)
    assert states_of(store, ids) == ["delivered"] * 3
    assert server.calls == ["POST /fhir/"] * (1 + 2 * 3)
    assert server.reads == BATCHED * 3  # the reads each report made on its own
    assert sent.tasks == [] and not workers.tasks._paused("fhir")
