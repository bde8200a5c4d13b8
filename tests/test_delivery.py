"""workers/delivery.py against a real HTTP FHIR server that validates with the R4 schema."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.settings import Settings
from mappings.report import Report
from mappings.template import load_builtin_templates
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from workers.delivery import backoff_seconds, deliver_bundle, deliver_report, parse_retry_after
from workers.errors import DeliveryConflict, DeliveryError, DeliveryRejected, DeliveryRetryable
from workers.process import process_message

GOLDEN = Path(__file__).parent / "fixtures" / "hl7v2" / "chest_ct.fhir.json"


@pytest.fixture
def server() -> Iterator[FhirServer]:
    running = FhirServer().start()
    yield running
    running.stop()


def bundle() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(GOLDEN.read_text("utf-8"))["CT0001-1"]
    return loaded


def test_delivery_and_idempotent_replay(server: FhirServer) -> None:
    settings = Settings(fhir_base_url=server.base_url, fhir_bearer_token="secret-token")  # type: ignore[arg-type]
    first = deliver_bundle(bundle(), settings)
    count = len(server.resources)
    second = deliver_bundle(bundle(), settings)
    assert first.status == second.status == 200
    assert set(first.entry_statuses) == {"201 Created"}
    assert set(second.entry_statuses) == {"200 OK"}
    assert len(server.resources) == count == len(bundle()["entry"])  # type: ignore[arg-type]
    assert server.requests[0]["authorization"] == "Bearer secret-token"


def test_invalid_bundle_is_rejected_with_outcome(server: FhirServer) -> None:
    broken = bundle()
    broken["entry"][3]["resource"]["status"] = "bogus"  # type: ignore[index]
    with pytest.raises(DeliveryRejected) as caught:
        deliver_bundle(broken, Settings(fhir_base_url=server.base_url))  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert (
        caught.value.outcome is not None
        and caught.value.outcome["resourceType"] == "OperationOutcome"
    )


def test_429_and_503_are_retryable_with_retry_after(server: FhirServer) -> None:
    settings = Settings(fhir_base_url=server.base_url)  # type: ignore[arg-type]
    server.script = [(429, {"Retry-After": "7"}, None), (503, {}, None)]
    with pytest.raises(DeliveryRetryable) as first:
        deliver_bundle(bundle(), settings)
    assert (first.value.status, first.value.retry_after) == (429, 7.0)
    with pytest.raises(DeliveryRetryable) as second:
        deliver_bundle(bundle(), settings)
    assert second.value.status == 503 and second.value.retry_after is None
    assert deliver_bundle(bundle(), settings).status == 200


def test_unreachable_server_is_retryable() -> None:
    with pytest.raises(DeliveryRetryable):
        deliver_bundle(
            bundle(), Settings(fhir_base_url="http://127.0.0.1:9/fhir", delivery_timeout_s=2)
        )  # type: ignore[arg-type]
    with pytest.raises(DeliveryError):
        deliver_bundle(bundle(), Settings())


def test_retry_after_formats() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@given(
    attempt=st.integers(0, 20),
    retry_after=st.one_of(st.none(), st.floats(0, 1000)),
    seed=st.integers(),
)
def test_backoff_is_bounded_and_honours_retry_after(
    attempt: int, retry_after: float | None, seed: int
) -> None:
    delay = backoff_seconds(
        attempt, base=2.0, cap=600.0, retry_after=retry_after, rng=random.Random(seed)
    )
    assert 0 <= delay <= max(600.0, retry_after or 0.0)
    if retry_after is not None:
        assert delay >= retry_after


def test_smart_backend_services(server: FhirServer, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from workers.delivery import token_provider

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "key.pem").write_bytes(pem)
    server.public_key = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server.client_id = "radbridge-client"
    settings = Settings(
        fhir_base_url=server.base_url,
        fhir_auth="smart",
        smart_token_url=server.base_url.rsplit("/fhir", 1)[0] + "/auth/token",
        smart_client_id="radbridge-client",
        smart_private_key_path=tmp_path / "key.pem",
        smart_key_id="radbridge-test-key",
    )  # type: ignore[arg-type]
    provider = token_provider(settings)
    assert provider is token_provider(settings)  # one provider per process: tokens are reused
    assert deliver_bundle(bundle(), settings).status == 200
    assert deliver_bundle(bundle(), settings).status == 200
    assert server.token_requests == 1  # cached until shortly before expiry
    server.issued.clear()  # the server forgets the token -> 401 -> a new assertion and token
    assert deliver_bundle(bundle(), settings).status == 200
    assert server.token_requests == 2 and len(server.seen_jti) == 2  # a fresh jti each time


def test_smart_needs_its_settings() -> None:
    from workers.delivery import token_provider

    with pytest.raises(DeliveryError, match="RADBRIDGE_SMART_TOKEN_URL"):
        token_provider(Settings(fhir_auth="smart"))  # type: ignore[arg-type]


def test_oru_retry_resends_the_same_control_id() -> None:
    """Issue 14: a retried ORU keeps its MSH-10 (the receiver de-duplicates on it), and so does
    the same content sent again after a re-extraction (issue 19); a changed result is a new
    message with a new one. A real MLLP receiver answers AE, then AA."""
    import asyncio
    import threading

    from adapter.mllp import FrameEvent, MllpServer
    from mappings.hl7.msh import peek_msh
    from workers.delivery import deliver_oru_message

    received: list[bytes] = []

    async def handler(event: FrameEvent) -> bytes:
        assert event.payload is not None
        received.append(event.payload)
        code = "AE" if len(received) == 1 else "AA"
        return f"MSH|^~\\&|EHR||RB||20260101||ACK^R01^ACK|A{len(received)}|P|2.5\rMSA|{code}|x\r".encode()

    loop = asyncio.new_event_loop()
    server = MllpServer(handler, host="127.0.0.1", port=0)
    port = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        settings = Settings(oru_target=f"mllp://127.0.0.1:{port}", delivery_timeout_s=10)
        with pytest.raises(DeliveryRetryable):
            deliver_oru_message(bundle(), settings)
        deliver_oru_message(bundle(), settings)
        reissued = bundle()  # the same content, extracted again later: the same message
        for entry in reissued["entry"]:  # type: ignore[attr-defined]
            entry["resource"]["issued"] = "2027-01-01T00:00:00+00:00"
        deliver_oru_message(reissued, settings)
        changed = bundle()  # a changed result is a new message
        changed["entry"][3]["resource"]["status"] = "final"  # type: ignore[index]
        deliver_oru_message(changed, settings)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    ids = [peek_msh(payload).control_id for payload in received]
    assert len(ids) == 4 and ids[0] == ids[1] == ids[2] != ids[3]
    assert all(0 < len(i) <= 20 for i in ids)  # MSH-10 is ST(20) in v2.5.1


# the write-back of one report against an EHR that holds its own DiagnosticReport (issue 25)
EHR_PATIENT = {
    "resourceType": "Patient",
    "id": "ehr-p1",
    "identifier": [{"system": EHR_IDENTITY["identifier_systems"]["RBH"], "value": "MRN0001"}],
}
EHR_REPORT = {
    "resourceType": "DiagnosticReport",
    "id": "ehr-dr1",
    "identifier": [{"system": EHR_IDENTITY["accession_systems"]["RBHOSP"], "value": "ACC1001"}],
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "CT Chest"},
    "subject": {"reference": "Patient/ehr-p1"},
    "conclusion": "The EHR's conclusion.",
}


def chest_ct(settings: Settings) -> tuple[Report, dict[str, Any]]:
    """The HL7 chest CT's report and its Bundle, as the worker builds them (rules stage)."""

    def no_model() -> Any:
        raise AssertionError("the rules stage needs no model")

    raw = (GOLDEN.parent / "chest_ct.hl7").read_bytes()
    templates = list(load_builtin_templates().values())
    (result,) = process_message(
        raw, "x-application/hl7-v2+er7", templates, settings, no_model
    ).results
    assert result.bundle is not None
    return result.report, result.bundle


@pytest.fixture
def ehr(server: FhirServer) -> tuple[FhirServer, Settings]:
    """The test EHR holding the chest CT's Patient and its own DiagnosticReport (by accession)."""
    with server.lock:
        server.store("Patient/ehr-p1", EHR_PATIENT)
        server.store("DiagnosticReport/ehr-dr1", EHR_REPORT)
    settings = Settings(fhir_base_url=server.base_url, stage="rules", **EHR_IDENTITY)  # type: ignore[arg-type]
    return server, settings


def observations(server: FhirServer) -> list[str]:
    return sorted(url for url in server.resources if url.startswith("Observation/"))


SEARCHES = ["/fhir/Patient/_search", "/fhir/DiagnosticReport/_search"]
BATCHED = ["batch: Patient?identifier", "batch: DiagnosticReport?identifier"]


@pytest.mark.parametrize("batch", [True, False])
def test_a_new_report_is_written_back_in_one_batch_read_and_one_transaction(
    ehr: tuple[FhirServer, Settings], batch: bool
) -> None:
    """The EHR's DiagnosticReport gains its results in the transaction that writes them (a PUT
    entry with ifMatch on the version read), not in a PUT after it; its Patient and report are
    read in one batch: two requests (RADBRIDGE_EHR_BATCH_READS=false: two searches, three)."""
    server, settings = ehr
    settings = settings.model_copy(update={"ehr_batch_reads": batch})
    report, bundle = chest_ct(settings)
    deliver_report(bundle, report, settings, {})
    assert server.reads == (BATCHED if batch else SEARCHES)
    reads = ["POST /fhir/"] if batch else [f"POST {path}" for path in SEARCHES]
    assert server.calls == [*reads, "POST /fhir/"]  # the read(s), the transaction
    assert [r["path"] for r in server.requests] == ["/fhir/"]  # one write: the transaction
    assert (server.transactions, server.conflicts) == (1, 0)
    written = server.resources["DiagnosticReport/ehr-dr1"]
    assert written["conclusion"] == "The EHR's conclusion."  # its own fields kept
    assert sorted(r["reference"] for r in written["result"]) == observations(server) != []
    assert server.versions["DiagnosticReport/ehr-dr1"] == 2  # the EHR's, radbridge's update
    assert [u for u in server.resources if u.startswith("DiagnosticReport/")] == [
        "DiagnosticReport/ehr-dr1"
    ]


def test_a_stale_version_refuses_the_whole_transaction_then_a_reread_succeeds(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """The EHR's report changes between the read and the write: 412 for the whole transaction,
    nothing of it stored; radbridge reads again and its second transaction, on the new version,
    keeps the EHR's change. Twice stale: DeliveryConflict, still nothing stored."""
    server, settings = ehr
    report, bundle = chest_ct(settings)
    matches: list[str] = []  # the ifMatch of each transaction
    stale = [2]  # how many transactions find the report changed

    def amend(request: httpx.Request) -> None:  # a clinician amends the report meanwhile
        sent = json.loads(request.content) if request.method == "POST" else {}
        if request.url.path == "/fhir/" and sent.get("type") == "transaction":
            (update,) = [e for e in sent["entry"]
                         if e["request"]["url"] == "DiagnosticReport/ehr-dr1"]  # fmt: skip
            matches.append(update["request"]["ifMatch"])
            if stale[0] > 0:
                stale[0] -= 1
                with server.lock:
                    url = "DiagnosticReport/ehr-dr1"
                    changed = {**server.resources[url]}
                    changed["conclusion"] = f"Amended after version {len(server.history[url])}."
                    server.store(url, changed)

    with httpx.Client(event_hooks={"request": [amend]}) as client:
        with pytest.raises(DeliveryConflict, match="412"):
            deliver_report(bundle, report, settings, {}, client=client)
        assert matches == ['W/"1"', 'W/"2"']
        assert (server.transactions, server.conflicts) == (0, 2)
        assert observations(server) == []  # nothing of either transaction stored
        assert "result" not in server.resources["DiagnosticReport/ehr-dr1"]

        stale[0], matches[:] = 1, []
        server.reads.clear()
        deliver_report(bundle, report, settings, {}, client=client)
    assert matches == ['W/"3"', 'W/"4"']
    assert server.reads == BATCHED * 2
    assert (server.transactions, server.conflicts) == (1, 3)
    assert observations(server) != []
    assert all(server.puts[url] == 1 for url in observations(server))  # stored once
    written = server.resources["DiagnosticReport/ehr-dr1"]
    assert written["conclusion"] == "Amended after version 3."  # the EHR's change kept
    assert sorted(r["reference"] for r in written["result"]) == observations(server)


def test_a_failed_entry_in_a_2xx_transaction_response_is_that_failure(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """A server that answers a transaction like a batch (200, one entry 412) did not write the
    report's link: a conflict (read again, retried once), never a delivery recorded."""
    server, settings = ehr
    report, bundle = chest_ct(settings)
    failed = {"resourceType": "Bundle", "type": "transaction-response",
              "entry": [{"response": {"status": "200 OK"}},
                        {"response": {"status": "412 Precondition Failed"}}]}  # fmt: skip
    settings = settings.model_copy(update={"ehr_batch_reads": False})  # script: writes only
    server.script.extend([(200, {}, failed), (200, {}, failed)])
    with pytest.raises(DeliveryConflict, match="412"):
        deliver_report(bundle, report, settings, {})
    server.script.append((200, {}, failed))
    deliver_report(bundle, report, settings, {})  # read again, the second try goes through
    assert server.transactions == 1


def test_two_patients_matching_in_the_batch_answer_are_refused(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """Two EHR Patients with the report's identifier, found by the batch read: refused as the
    separate search refused them (none picked), nothing written."""
    server, settings = ehr
    with server.lock:
        server.store("Patient/ehr-p2", {**EHR_PATIENT, "id": "ehr-p2"})
    report, bundle = chest_ct(settings)
    with pytest.raises(DeliveryRejected, match="2 Patient resources at the EHR match") as caught:
        deliver_report(bundle, report, settings, {})
    assert caught.value.outcome is not None
    assert server.calls == ["POST /fhir/"] and server.reads == BATCHED  # the batch, no write
    assert server.requests == [] and observations(server) == []


def test_a_503_or_429_answer_to_the_batch_read_is_retryable(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """The batch read answered 503, 429 (Retry-After), or a 503 entry inside it: retryable, as
    the search's answer was; nothing written. Then the write-back goes through."""
    server, settings = ehr
    report, bundle = chest_ct(settings)
    server.script = [(503, {}, None), (429, {"Retry-After": "7"}, None)]
    with pytest.raises(DeliveryRetryable) as first:
        deliver_report(bundle, report, settings, {})
    assert (first.value.status, first.value.retry_after) == (503, None)
    with pytest.raises(DeliveryRetryable) as second:
        deliver_report(bundle, report, settings, {})
    assert (second.value.status, second.value.retry_after) == (429, 7.0)
    busy = {"resourceType": "Bundle", "type": "batch-response",
            "entry": [{"response": {"status": "200 OK"},
                       "resource": {"resourceType": "Bundle", "type": "searchset", "entry": []}},
                      {"response": {"status": "503 Service Unavailable"}}]}  # fmt: skip
    server.script = [(200, {"Retry-After": "3"}, busy)]
    with pytest.raises(DeliveryRetryable, match="DiagnosticReport search") as third:
        deliver_report(bundle, report, settings, {})
    assert (third.value.status, third.value.retry_after) == (503, 3.0)
    assert server.requests == [] and server.transactions == 0
    deliver_report(bundle, report, settings, {})
    assert server.transactions == 1


def test_a_4xx_entry_in_the_batch_read_is_refused_with_its_outcome(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """A batch entry answered 400 with an OperationOutcome: refused with that outcome, as the
    search's own 400 would be."""
    server, settings = ehr
    report, bundle = chest_ct(settings)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad search"}],
    }
    refused = {"resourceType": "Bundle", "type": "batch-response",
               "entry": [{"response": {"status": "400 Bad Request", "outcome": outcome}},
                         {"response": {"status": "200 OK"}}]}  # fmt: skip
    server.script = [(200, {}, refused)]
    with pytest.raises(DeliveryRejected, match="Patient search") as caught:
        deliver_report(bundle, report, settings, {})
    assert caught.value.status == 400 and caught.value.outcome == outcome
    assert server.requests == []


def test_a_known_report_is_read_in_the_batch_and_a_404_entry_falls_back_to_its_search(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """The report's reference known, its Patient by identifier: the batch reads the report
    (`GET DiagnosticReport/<id>`); a 404 entry means no such report, then its accession is
    searched as before."""
    from mappings import ehr as ehr_mapping
    from workers.delivery import _Ehr, _read_state, identity_policy

    server, settings = ehr
    patient = ehr_mapping.Key(EHR_IDENTITY["identifier_systems"]["RBH"], "MRN0001")
    accession = ehr_mapping.Key(EHR_IDENTITY["accession_systems"]["RBHOSP"], "ACC1001")

    def who(reference: str) -> ehr_mapping.Identity:
        return ehr_mapping.Identity(None, patient, (patient,), reference, accession, ())

    with httpx.Client() as http:
        client = _Ehr(http, server.base_url, None)
        found = _read_state(client, who("DiagnosticReport/ehr-dr1"), identity_policy(settings))
        assert (found.patient, found.report_version) == ("Patient/ehr-p1", "1")
        assert server.calls == ["POST /fhir/"]
        assert server.reads == ["batch: Patient?identifier", "batch: DiagnosticReport/ehr-dr1"]
        server.calls.clear()
        found = _read_state(client, who("DiagnosticReport/gone"), identity_policy(settings))
    assert found.report is not None and found.report["id"] == "ehr-dr1"  # by its accession
    assert server.calls == ["POST /fhir/", "POST /fhir/DiagnosticReport/_search"]


def test_a_401_entry_in_the_batch_read_gets_one_new_token(
    ehr: tuple[FhirServer, Settings],
) -> None:
    """An entry answered 401 inside the batch: the provider fetches a new token and the batch
    is sent once more, as a 401 to the request itself would be."""
    from workers.smart_auth import StaticBearer

    class Counting(StaticBearer):
        invalidated = 0

        def invalidate(self) -> None:
            Counting.invalidated += 1

    server, settings = ehr
    report, bundle = chest_ct(settings)
    unauthorized = {"resourceType": "Bundle", "type": "batch-response",
                    "entry": [{"response": {"status": "401 Unauthorized"}},
                              {"response": {"status": "401 Unauthorized"}}]}  # fmt: skip
    server.script = [(200, {}, unauthorized)]
    deliver_report(bundle, report, settings, {}, auth=Counting("t"))
    assert Counting.invalidated == 1 and server.transactions == 1
    server.script = [(200, {}, unauthorized)] * 2
    with pytest.raises(DeliveryRejected, match="Patient search"):
        deliver_report(bundle, report, settings, {}, auth=Counting("t"))
    assert Counting.invalidated == 2
