"""mappings/timeline.py: per-patient order and derivedFrom links, in Bundles, in `radbridge
extract` (one run) and in the service task (from the store)."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from conformance.validate import validate_resource
from mappings.fhir_out import build_bundle
from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    PatientIdentifier,
    Report,
    Stage,
)
from mappings.template import load_template
from mappings.timeline import (
    TimelineEntry,
    derived_from,
    link_reports,
    link_stored,
    patient_reference,
    prior_from_resource,
    priors_of,
)
from workers.rules_stage import RULES_MODEL, extract_rules

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = load_template(ROOT / "mappings" / "templates" / "brain_mri_oncology.yaml")
LABELLED = ROOT / "tests" / "fixtures" / "labelled" / "brain_mri_oncology.jsonl"
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
SYSTEM = "urn:oid:2.16.840.1.113883.2.4.6.3"


def _report(
    report_id: str, patient: str | None, when: datetime | None, text: str = "report"
) -> Report:
    return Report(
        source_format="hl7v2",
        report_id=report_id,
        sending_facility="RBHOSP",
        accession_number=f"ACC-{report_id}",
        patient_identifiers=(PatientIdentifier(value=patient, system=SYSTEM),) if patient else (),
        observation_time=when,
        text=text,
    )


def _extraction(report: Report, **statuses: tuple[FindingStatus, str | None]) -> Extraction:
    values = []
    for variable in TEMPLATE.variables:
        status, episode = statuses.get(variable.id, (FindingStatus.NOT_MENTIONED, None))
        values.append(
            FindingValue(
                variable_id=variable.id,
                status=status,
                value=episode,
                evidence=None
                if status is FindingStatus.NOT_MENTIONED
                else Evidence(quote=report.text, start=0, end=len(report.text)),
                stage=Stage.RULES,
            )
        )
    return Extraction(
        report_id=report.report_id,
        template_id=TEMPLATE.id,
        template_version=TEMPLATE.version,
        model=RULES_MODEL,
        stage=Stage.RULES,
        values=tuple(values),
        created=datetime(2025, 1, 1, tzinfo=UTC),
    )


def _entry(report: Report, **statuses: tuple[FindingStatus, str | None]) -> TimelineEntry:
    return TimelineEntry(report, _extraction(report, **statuses), TEMPLATE)


def _observations(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Bundle's Observations by variable id."""
    found: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            prior = prior_from_resource(resource)
            assert prior is not None
            found[prior.variable_id] = resource
    return found


PRESENT = FindingStatus.PRESENT
ABSENT = FindingStatus.ABSENT
DAY = timedelta(days=1)
T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def test_links_follow_observation_time_per_patient_not_input_order() -> None:
    third = _entry(_report("c", "P1", T0 + 200 * DAY), glioma=(PRESENT, "improvement"))
    first = _entry(_report("a", "P1", T0), glioma=(PRESENT, None), stroke=(ABSENT, None))
    second = _entry(_report("b", "P1", T0 + 90 * DAY), glioma=(PRESENT, "progression"))
    other = _entry(_report("x", "P2", T0 + 100 * DAY), glioma=(PRESENT, "stable"))
    links = link_reports([third, other, first, second])
    ref = {
        e.report.report_id: {p.variable_id: p.reference for p in priors_of(e)}
        for e in (first, second, third, other)
    }
    assert links[0] == {"glioma": ref["b"]["glioma"]}  # the most recent earlier, not the first
    assert links[1] == {}  # another patient: nothing earlier
    assert links[2] == {}  # the first report of P1
    assert links[3] == {"glioma": ref["a"]["glioma"]}  # stroke is not in the later report
    assert ref["a"]["stroke"] not in links[3].values()


def test_no_time_no_identifier_and_same_moment_are_not_linked() -> None:
    early = _entry(_report("a", "P1", T0), metastasis=(PRESENT, None))
    no_time = _entry(_report("n", "P1", None), metastasis=(PRESENT, "stable"))
    no_patient = _entry(_report("q", None, T0 + DAY), metastasis=(PRESENT, "stable"))
    same_moment = _entry(_report("s", "P1", T0), metastasis=(PRESENT, "stable"))
    later = _entry(_report("l", "P1", T0 + DAY), metastasis=(FindingStatus.UNCERTAIN, None))
    links = link_reports([early, no_time, no_patient, same_moment, later])
    assert links[:4] == [{}, {}, {}, {}]
    assert set(links[4]) == {"metastasis"}
    assert patient_reference(no_patient.report) is None


def test_naive_times_are_read_in_the_source_zone() -> None:
    amsterdam = timezone(timedelta(hours=1))
    # 09:30 naive in UTC+1 is 08:30 UTC: BEFORE the aware 09:00 UTC report
    naive = _entry(_report("a", "P1", datetime(2024, 1, 15, 9, 30)), lymphoma=(PRESENT, None))
    aware = _entry(_report("b", "P1", datetime(2024, 1, 15, 9, 0, tzinfo=UTC)),
                   lymphoma=(PRESENT, "stable"))  # fmt: skip
    assert link_reports([naive, aware], default_tz=amsterdam)[1] == {
        "lymphoma": priors_of(naive, amsterdam)[0].reference
    }
    assert link_reports([naive, aware], default_tz=UTC)[0] == {
        "lymphoma": priors_of(aware)[0].reference
    }


def test_derived_from_picks_the_latest_earlier_of_the_same_template() -> None:
    entry = _entry(_report("a", "P1", T0), glioma=(PRESENT, None))
    prior = priors_of(entry)[0]
    foreign = prior.__class__("brain_mri_memory", "glioma", "Observation/x", T0)
    assert derived_from([prior, foreign], TEMPLATE.id, ["glioma"], T0 + DAY) == {
        "glioma": prior.reference
    }
    assert derived_from([prior], TEMPLATE.id, ["glioma"], T0) == {}


def test_bundles_carry_derived_from_the_earlier_bundles_observation() -> None:
    first = _entry(_report("a", "P1", T0, "Glioblastoma."), glioma=(PRESENT, None))
    # the later report gives no episode: none is invented from the earlier report
    second = _entry(_report("b", "P1", T0 + 90 * DAY, "Glioblastoma."), glioma=(PRESENT, None))
    links = link_reports([first, second])
    bundles = [
        build_bundle(e.report, e.extraction, e.template, derived_from=link)
        for e, link in zip([first, second], links, strict=True)
    ]
    for bundle in bundles:
        assert validate_resource(bundle) == []
    earlier, later = (_observations(b)["glioma"] for b in bundles)
    assert "derivedFrom" not in earlier
    assert later["derivedFrom"] == [{"reference": f"Observation/{earlier['id']}"}]
    assert later["subject"] == earlier["subject"]
    assert later["subject"]["reference"] == patient_reference(second.report)
    assert "component" not in later


def test_stored_observations_give_the_same_links_as_one_run() -> None:
    first = _entry(_report("a", "P1", T0), metastasis=(PRESENT, None), stroke=(ABSENT, None))
    second = _entry(_report("b", "P1", T0 + DAY), metastasis=(PRESENT, "progression"))
    third = _entry(_report("c", "P1", T0 + 2 * DAY), metastasis=(PRESENT, "stable"),
                   stroke=(PRESENT, None))  # fmt: skip
    other_patient = _entry(_report("x", "P2", T0), stroke=(PRESENT, None))
    stored = [
        resource
        for entry in (first, second, other_patient)
        for resource in _observations(
            build_bundle(entry.report, entry.extraction, entry.template)
        ).values()
    ]
    expected = link_reports([first, second, third, other_patient])[2]
    assert link_stored(third, stored) == expected
    assert set(expected) == {"metastasis", "stroke"}


# --- `radbridge extract --stage rules` over successive reports of one patient ------------------


def _diagnostic_report(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": row["id"],
        "status": "final",
        "identifier": [{"system": "urn:radbridge:test:accession", "value": f"ACC{index}"}],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "24587-8",
                    "display": "Brain MRI W and WO contrast IV",
                }
            ]
        },
        "subject": {"identifier": {"system": SYSTEM, "value": row["patient"]}},
        "effectiveDateTime": f"{row['time']}T09:00:00+01:00",
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(row["text"].encode("utf-8")).decode("ascii"),
            }
        ],
    }


def _labelled(patient: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in LABELLED.read_text("utf-8").splitlines() if line]
    return sorted((r for r in rows if r.get("patient") == patient), key=lambda r: r["time"])


def test_extract_cli_links_a_patients_successive_reports(tmp_path: Path) -> None:
    rows = _labelled("P-ONC-001")
    assert len(rows) == 3
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for index, row in enumerate(rows):
        # file names in reverse time order: the link follows time, not input order
        name = f"{len(rows) - index}-{row['id']}.json"
        (inputs / name).write_text(json.dumps(_diagnostic_report(row, index)), "utf-8")
    result = subprocess.run(
        [*RADBRIDGE, "extract", str(inputs), "--out", str(out), "--stage", "rules",
         "--template", "brain_mri_oncology"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    bundles = [json.loads((out / f"{row['id']}.json").read_text("utf-8")) for row in rows]
    gliomas = [_observations(bundle)["glioma"] for bundle in bundles]
    assert "derivedFrom" not in gliomas[0]
    for earlier, later in itertools.pairwise(gliomas):
        assert later["derivedFrom"] == [{"reference": f"Observation/{earlier['id']}"}]
    # each report's own episode, from its own text
    episodes = [g.get("component", [{}])[0].get("valueCodeableConcept", {}) for g in gliomas]
    assert [e.get("text") for e in episodes] == [None, "Progression", "Improvement"]
    # the third report's stroke links to the first report's (absent) stroke: the second is silent
    first_stroke = _observations(bundles[0])["stroke"]  # absent in the first report
    third_stroke = _observations(bundles[2])["stroke"]
    assert third_stroke["derivedFrom"] == [{"reference": f"Observation/{first_stroke['id']}"}]
    for bundle in bundles:
        assert validate_resource(bundle) == []


# --- the service: workers.tasks.process_message reads earlier Observations from the store ------


def test_task_links_to_the_patients_earlier_report_in_the_store(tmp_path: Path) -> None:
    from workers.tasks import process_message

    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    store = Store.open(settings)
    rows = _labelled("P-ONC-002")
    try:
        ids = []
        for index, row in enumerate(rows):
            raw = json.dumps(_diagnostic_report(row, index)).encode("utf-8")
            accepted = store.accept(
                Incoming(raw, "http", "FHIR", "RBHOSP", row["id"], "application/fhir+json")
            )
            ids.append(accepted.message_id)
        # the later message is processed first: it has nothing earlier in the store yet
        process_message(store, settings, ids[1])
        process_message(store, settings, ids[0])
        process_message(store, settings, ids[2])
        reports = [_report_of(row) for row in rows]
        patient = patient_reference(reports[0])
        assert patient is not None
        by_report: dict[str, dict[str, Any]] = {}
        for resource in store.observations_of_subject(patient):
            prior = prior_from_resource(resource)
            if prior and (prior.template_id, prior.variable_id) == (TEMPLATE.id, "metastasis"):
                by_report[str(prior.effective.date())] = resource
        first, second, third = (by_report[row["time"]] for row in rows)
        assert "derivedFrom" not in first
        assert "derivedFrom" not in second  # its earlier report was not in the store yet
        assert third["derivedFrom"] == [{"reference": f"Observation/{second['id']}"}]
        # replaying the second message now links it to the first
        store.mark_failed(ids[1], "replay")
        process_message(store, settings, ids[1])
        replayed = store.get_resource("Observation", second["id"])
        assert replayed is not None
        assert replayed["derivedFrom"] == [{"reference": f"Observation/{first['id']}"}]
    finally:
        store.close()


CHEST_CT = (ROOT / "tests" / "fixtures" / "hl7v2" / "chest_ct.hl7").read_bytes().strip()


def _chest_ct(n: int) -> Incoming:
    """chest_ct.hl7 as its patient's n-th report: its own MSH-10, order and accession numbers,
    observed n days after the first."""
    segments = CHEST_CT.split(b"\r")
    msh = segments[0].replace(b"CT0001", f"CT{n:04d}".encode())
    obr = segments[2].split(b"|")
    obr[2], obr[3] = f"PL{n:04d}".encode(), f"ACC{n:04d}".encode()
    observed = datetime(2026, 1, 1, 8, 45) + timedelta(days=n)
    obr[7] = observed.strftime("%Y%m%d%H%M%S").encode()
    raw = b"\r".join([msh, segments[1], b"|".join(obr), *segments[3:]])
    return Incoming(raw, "mllp", "RIS", "RBHOSP", f"CT{n:04d}")


def test_a_reports_store_work_does_not_grow_with_the_patients_history(tmp_path: Path) -> None:
    """Issue 25: the worker reads for a report what its links need (the latest earlier
    Observation per finding), never the patient's history. Measured in SQLite's virtual-machine
    steps (rows read and written; the machine's load aside): the patient's 41st report costs
    what its 2nd did (reading every earlier Observation, as before issue 25, cost 40 times the
    rows by then), and it is linked to the 40th."""
    import sqlalchemy as sa

    from workers.tasks import process_message

    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    store = Store.open(settings)
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0  # go on

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def count(conn: Any, *_: Any) -> None:
        conn.connection.dbapi_connection.set_progress_handler(step, 1)

    try:
        ids = [store.accept(_chest_ct(n)).message_id for n in range(41)]
        cost = {}
        for n, message_id in enumerate(ids):
            before = steps[0]
            process_message(store, settings, message_id)
            cost[n] = steps[0] - before
        assert cost[40] <= 1.1 * cost[1], cost
        linked = [o for o in store.search_observations(limit=1000) if "derivedFrom" in o]
        assert len(linked) >= 40  # every report after the first links to its previous one
    finally:
        store.close()


def _report_of(row: dict[str, Any]) -> Report:
    from mappings.fhir_in import reports_from_fhir

    return reports_from_fhir(_diagnostic_report(row, 0))[0]


@pytest.mark.parametrize("patient", ["P-ONC-001", "P-ONC-002", "P-ONC-003"])
def test_labelled_timeline_patients_link_in_order(patient: str) -> None:
    rows = _labelled(patient)
    assert len(rows) >= 2
    entries = []
    for index, row in enumerate(rows):
        report = _report_of(row).model_copy(update={"accession_number": f"ACC{index}"})
        entries.append(TimelineEntry(report, extract_rules(report, TEMPLATE), TEMPLATE))
    links = link_reports(entries)
    diagnosis = next(v for v, _ in rows[0]["gold"]["_episodes"])
    assert diagnosis not in links[0]
    for earlier, later, link in zip(entries, entries[1:], links[1:], strict=False):
        assert link[diagnosis] == next(
            p.reference for p in priors_of(earlier) if p.variable_id == diagnosis
        )
        assert later.report.observation_time is not None
