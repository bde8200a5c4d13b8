"""Issue 25 (throughput), on real stores (SQLite and PostgreSQL) and a real FHIR server: the
store round trips of one message (counted by an SQLAlchemy event listener), the timeline lookup
that reads one Observation per finding whatever the patient's history (and links exactly as
reading the whole history did), the migration that indexes the Observations already stored, the
worker pool's default, and a Bundle failing its output check never leaving."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapter.settings import Settings
from adapter.store import Store
from adapter.store.connection import run_migrations
from adapter.store.messages import Incoming
from adapter.tables import resources
from mappings.timeline import TimelineEntry, link_reports, link_stored, patient_reference
from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
from workers.engine_registry import cpu_cores, worker_pool
from workers.process import process_message as run_message
from workers.tasks import make_worker_app, process_message, timeline_links

CHEST_XRAY = (Path(__file__).parent / "fixtures" / "hl7v2" / "chest_xray.hl7").read_bytes().strip()
FINDINGS = (
    "FINDINGS: Small right pleural effusion. No pneumothorax. Heart size is enlarged.",
    "FINDINGS: Right pleural effusion has resolved. Stable cardiomegaly. Right pneumothorax.",
    "FINDINGS: No pleural effusion. Normal heart size. No focal consolidation.",
)


def oru(n: int, *, mrn: str = "MRN-T25", day: int = 0, findings: str | None = None) -> bytes:
    """chest_xray.hl7 as message `n` of patient `mrn`, observed on day `day`."""
    segments = CHEST_XRAY.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    msh, pid, obr = (segments[i].split(b"|") for i in range(3))
    msh[9] = f"T25-{n}".encode()
    pid[3] = f"{mrn}^^^RBH^MR".encode()
    stamp = (datetime(2026, 1, 1, 8) + timedelta(days=day)).strftime("%Y%m%d%H%M%S").encode()
    obr[3], obr[7] = f"ACC-T25-{n}".encode(), stamp
    text = findings or FINDINGS[n % len(FINDINGS)]
    obx = f"OBX|1|TX|59776-5^Findings^LN|1|{text}||||||F".encode()
    return b"\r".join([b"|".join(msh), b"|".join(pid), b"|".join(obr), obx])


class Transactions:
    """Counts the transactions (BEGIN) an engine runs."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        sa.event.listen(store.engine, "begin", self.begin)

    def begin(self, _connection: Any) -> None:
        self.count += 1


def accept(store: Store, raw: bytes, n: int) -> int:
    return store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", f"T25-{n}")).message_id


# -- round trips ------------------------------------------------------------------------------


def test_a_message_takes_three_store_transactions_and_its_delivery_two(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before issue 25: eight transactions to extract one report and five to deliver it."""
    import workers.tasks

    ehr = FhirServer().start()
    try:
        settings = Settings(
            data_dir=tmp_path / "data", stage="rules", fhir_base_url=ehr.base_url, **EHR_IDENTITY
        )
        message_id = accept(store, oru(1), 1)
        count = Transactions(store)
        (bundle_id,) = process_message(store, settings, message_id) or []
        assert count.count == 3  # the claim, the timeline lookup, the results with the state
        # the deliver task as the worker runs it, on this store
        monkeypatch.setattr(workers.tasks, "store_for", lambda _settings: store)
        app = make_worker_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
        count.count = 0
        assert app.tasks["radbridge.deliver"](bundle_id) == "delivered"
        assert count.count == 2  # the job (Bundle, message, delivered?) and the record
        row = store.get_message(message_id)
        assert row is not None and row.state == "delivered"
        assert store.audit_trail(message_id) == ["processing", "extracted", "delivered"]
        assert ehr.transactions == 1
    finally:
        ehr.stop()


def test_a_message_is_saved_all_or_nothing(store: Store, tmp_path: Path) -> None:
    """Its results and its state are one transaction: a message no longer `processing` (another
    worker reclaimed it meanwhile) keeps nothing of this attempt."""
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    message_id = accept(store, oru(2), 2)
    claim = store.claim_message(message_id)
    assert claim.outcome == "claimed" and claim.raw.startswith(b"MSH")
    store.mark_failed(message_id, "reclaimed")  # the state moved on under this attempt
    outcome = run_message(claim.raw, claim.content_type, _templates(), settings, _no_engine)
    from adapter.errors import StoreError
    from workers.tasks import _output

    with pytest.raises(StoreError, match="no longer processing"):
        store.finish_extraction(message_id, [_output(r) for r in outcome.results])
    assert store.search_observations() == []


# -- the timeline -----------------------------------------------------------------------------


def test_the_timeline_reads_one_observation_per_finding_and_links_as_the_whole_history(
    store: Store, tmp_path: Path
) -> None:
    """Reports of one patient processed out of time order: each lookup returns at most one
    Observation per finding, and the links are those computed from every stored Observation of
    the patient (what the worker read before issue 25, a cost that grew with the history)."""
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    days = list(range(24))
    random.Random(25).shuffle(days)
    for n, day in enumerate(days):
        raw = oru(100 + n, day=day, findings=FINDINGS[day % 3])
        message_id = accept(store, raw, 100 + n)
        claim = store.claim_message(message_id)
        compared: list[tuple[dict[str, str], dict[str, str]]] = []

        def links(
            entry: TimelineEntry, compared: list[tuple[dict[str, str], dict[str, str]]] = compared
        ) -> dict[str, str]:
            patient = patient_reference(entry.report)
            assert patient is not None and entry.report.observation_time is not None
            emitted = [
                v.variable_id for v in entry.extraction.values if v.status != "not_mentioned"
            ]
            before = entry.report.observation_time.replace(tzinfo=UTC)
            found = store.latest_observations(patient, entry.template.id, emitted, before)
            assert len(found) <= len(set(emitted))
            bounded = timeline_links(store, settings, entry)
            whole = link_stored(entry, store.observations_of_subject(patient))
            compared.append((bounded, whole))
            return bounded

        outcome = run_message(
            claim.raw, claim.content_type, _templates(), settings, _no_engine, stored_links=links
        )
        from workers.tasks import _output

        store.finish_extraction(message_id, [_output(r) for r in outcome.results])
        for bounded, whole in compared:
            assert bounded == whole
    linked = [o for o in store.search_observations(limit=1000) if "derivedFrom" in o]
    assert linked, "later reports link to earlier ones"


def test_the_timeline_lookup_is_an_index_seek(tmp_path: Path) -> None:
    store = Store.open(Settings(data_dir=tmp_path / "data"))
    try:
        from adapter.store.search import LATEST_OBSERVATION

        query = LATEST_OBSERVATION.params(
            subject="Patient/x",
            template_id="chest_findings",
            variable_id="pleural_effusion",
            before=datetime(2026, 1, 1),
        )
        sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
        assert any("ix_resources_timeline" in str(row) for row in plan), plan
        assert not any("TEMP B-TREE" in str(row) for row in plan), plan  # nothing sorted
        # the lookup of three variables in one statement: a seek per variable, nothing sorted
        from adapter.store.search import _latest_observations

        union = _latest_observations(3).params(
            subject="Patient/x",
            template_id="chest_findings",
            before=datetime(2026, 1, 1),
            variable_0="pleural_effusion",
            variable_1="pneumothorax",
            variable_2="cardiomegaly",
        )
        sql = str(union.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
        seeks = [row for row in plan if "ix_resources_timeline" in str(row)]
        assert len(seeks) == 3, plan
        # (SQLite reads each seek's one row back from its co-routine: `SCAN anon_N`)
        assert not any("TEMP B-TREE" in str(row) or "SCAN resources" in str(row) for row in plan)
    finally:
        store.close()


def test_no_statement_of_a_message_reads_the_whole_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's plan of every statement the worker runs for a message and its delivery: an
    index seek, never a scan of a table or of every Observation (before issue 25, the search of
    a Bundle's earlier Observations and the re-extraction check read every Observation of the
    store for each message: the cost of a report grew with the store)."""
    import workers.tasks

    ehr = FhirServer().start()
    settings = Settings(
        data_dir=tmp_path / "data", stage="rules", fhir_base_url=ehr.base_url, **EHR_IDENTITY
    )
    store = Store.open(settings)
    monkeypatch.setattr(workers.tasks, "store_for", lambda _settings: store)
    whole: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def plan(conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            return
        dbapi = conn.connection.dbapi_connection
        for row in dbapi.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall():
            detail = str(row[3])
            if detail.startswith("SCAN anon_"):  # a seek's rows read back from its co-routine
                continue
            if detail.startswith("SCAN") or detail.endswith("(resource_type=?)"):
                whole.append(f"{detail}: {' '.join(statement.split())[:100]}")

    try:
        app = make_worker_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
        for n in range(3):  # the same patient, a re-extraction of the first message too
            message_id = accept(store, oru(500 + n, day=n), 500 + n)
            for bundle_id in process_message(store, settings, message_id) or []:
                assert app.tasks["radbridge.deliver"](bundle_id) == "delivered"
        store.requeue(1)
        process_message(store, settings, 1)
    finally:
        store.close()
        ehr.stop()
    assert whole == []


def test_link_reports_follows_the_derived_from_rule(tmp_path: Path) -> None:
    """`radbridge extract`'s timeline (sorted once per finding, a binary search per report) gives
    what `derived_from` gives over all the patient's other reports, ties and out of order too."""
    from mappings.inbound import parse_message
    from mappings.media_types import HL7_ER7
    from mappings.timeline import _aware, _emitted, derived_from, priors_of

    settings = Settings(stage="rules")
    rng = random.Random(7)
    raws = [
        oru(
            200 + n,
            mrn=rng.choice(["P1", "P2", "P3"]),
            day=rng.randrange(6),
            findings=rng.choice(FINDINGS),
        )
        for n in range(40)
    ]
    outcome = _results(
        [
            r
            for raw in raws
            for r in parse_message(raw, HL7_ER7, default_charset="utf-8", default_language="en")
        ],
        settings,
    )
    entries = [TimelineEntry(r.report, r.extraction, r.template) for r in outcome]
    links = link_reports(entries)
    for entry, found in zip(entries, links, strict=True):
        patient = patient_reference(entry.report)
        same = [e for e in entries if patient_reference(e.report) == patient]
        priors = [p for e in same for p in priors_of(e)]
        assert entry.report.observation_time is not None
        expected = derived_from(
            priors,
            entry.template.id,
            _emitted(entry.extraction),
            _aware(entry.report.observation_time, UTC),
        )
        assert found == expected
    assert any(links)


# -- the migration ----------------------------------------------------------------------------


def _timeline_columns(connection: Any) -> list[Any]:
    """Each stored Observation's id and timeline columns, sorted."""
    query = sa.select(
        resources.c.id, resources.c.template_id, resources.c.variable_id, resources.c.effective
    ).where(resources.c.resource_type == "Observation")
    return sorted(connection.execute(query).all())


def test_migration_0006_indexes_the_observations_already_stored(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    store = Store.open(settings)
    try:
        for n in range(3):
            process_message(store, settings, accept(store, oru(300 + n, day=n), 300 + n))
        with store.engine.begin() as connection:
            expected = _timeline_columns(connection)
            # a store of before issue 25: no timeline columns filled, at revision 0005
            connection.execute(
                resources.update().values(template_id=None, variable_id=None, effective=None)
            )
            connection.exec_driver_sql(
                "UPDATE alembic_version SET version_num = '0005_fhir_search_index'"
            )
        run_migrations(store.engine)
        with store.engine.begin() as connection:
            filled = _timeline_columns(connection)
        assert expected and all(row.template_id == "chest_findings" for row in expected)
        assert filled == expected
    finally:
        store.close()


# -- the worker pool --------------------------------------------------------------------------


def test_the_rules_stage_gets_a_prefork_pool_sized_to_the_cores() -> None:
    cores = cpu_cores()
    assert worker_pool(Settings(stage="rules")) == ("prefork" if cores > 1 else "solo", cores)
    assert worker_pool(Settings(stage="rules", worker_processes=3)) == ("prefork", 3)
    assert worker_pool(Settings(stage="rules", worker_processes=3), 1) == (
        "solo",
        1,
    )  # --concurrency
    # a model in each process: one process unless asked (the engine registry will decide)
    assert worker_pool(Settings(stage="hybrid")) == ("solo", 1)
    assert worker_pool(Settings(stage="llm", engine="openai", llm_concurrency=5)) == ("threads", 5)


# -- the output check -------------------------------------------------------------------------


def test_a_bundle_failing_its_output_check_never_leaves(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A built DiagnosticReport with a status outside its value set: the message is rejected
    (dead, with the check's message, which names the element, not the value), nothing is
    stored, nothing is delivered, and it is not retried."""
    import mappings.fhir_out as fhir_out

    built = fhir_out._diagnostic_report

    def broken(*args: Any) -> dict[str, Any]:
        return {**built(*args), "status": "not-a-status"}

    monkeypatch.setattr(fhir_out, "_diagnostic_report", broken)
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    message_id = accept(store, oru(400), 400)
    assert process_message(store, settings, message_id) == []
    row = store.get_message(message_id)
    assert row is not None and row.state == "dead" and row.attempts == 1
    assert row.reason is not None and row.reason.startswith("rejected: invalid_output: built ")
    assert "DiagnosticReport" in row.reason and "status" in row.reason
    assert "not-a-status" not in row.reason
    assert store.search_observations() == [] and store.undelivered("fhir") == []


def _templates() -> list[Any]:
    from mappings.template import load_builtin_templates

    return list(load_builtin_templates().values())


def _no_engine() -> Any:
    raise AssertionError("the rules stage asked for a model")


def _results(reports: list[Any], settings: Settings) -> list[Any]:
    from workers.process import process_reports

    return process_reports(reports, _templates(), settings, _no_engine).results
