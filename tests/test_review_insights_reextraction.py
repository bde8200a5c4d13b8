"""A re-extraction must not undo a clinician's decision on an insight either (issue 20 item 7
follow-up), on real stores (SQLite and PostgreSQL) through the worker's `process_message`:

- the SAME report extracted again (requeue, resend with a new MSH-10): the decided insights
  stay (no new version, nothing delivered again when everything was decided);
- a superseding report (OBR-25 C): a new version of each decided insight, awaiting review again;
- a report first stored without a template whose correction routes to a template: the insights
  the corrected report no longer has are retired, not left in force.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.reviews import report_insights, save_review, worklist
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from mappings.review import Decision, Reviewer, review_insight
from tests.stores import KINDS, data_dir, open_store
from tests.test_review_reextraction import extract, extraction_notes, report_of
from tests.test_ui_insights_browser import SCROTUM_US
from workers.tasks import process_message

REVIEWER = Reviewer("dr.review")
CHEST_CT_SEGMENTS = [  # the same accession as SCROTUM_US, a chest CT without insights
    "OBR|1|PL9101|ACC9101|24627-2^Chest CT^LN|||20261102100000|||||||||||||||20261102111400||CT|C",
    "OBX|1|ST|59776-5^Findings^LN|1|FINDINGS:||||||F",
    "OBX|2|ST|59776-5^Findings^LN|1|Small right pleural effusion.||||||F",
]


def message(control_id: str, status: bytes = b"F") -> Incoming:
    """SCROTUM_US with another MSH-10 (and OBR-25)."""
    segments = SCROTUM_US.split(b"\r")
    segments[0] = segments[0].replace(b"INSUI01", control_id.encode())
    segments[2] = segments[2][: segments[2].rindex(b"|") + 1] + status
    if status != b"F":  # a corrected report: other text, the follow-up no longer recommended
        segments[3] = segments[3].replace(b"~Recommend follow-up ultrasound in 6 weeks.", b"")
    return Incoming(b"\r".join(segments), "mllp", "RIS", "RBHOSP", control_id)


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    with open_store(request.param, settings) as opened:
        yield opened, settings


def states(store: Store, report_id: str) -> dict[str, tuple[str, int, bool]]:
    """ "Type/id" -> (status, version, decided) of the report's insights."""
    return {
        f"{i.body['resourceType']}/{i.body['id']}": (str(i.body["status"]), i.version, i.decided)
        for i in report_insights(store, report_id)
    }


def decide(store: Store, report_id: str, only: str | None = None) -> None:
    """Accept the follow-up, reject the critical result's Flag (or decide only type `only`)."""
    plan = {"ServiceRequest": Decision.ACCEPT, "Flag": Decision.REJECT}
    for insight in report_insights(store, report_id):
        kind = str(insight.body["resourceType"])
        if kind not in plan or (only is not None and kind != only) or not insight.awaiting:
            continue
        result = review_insight(
            insight.body,
            plan[kind],
            REVIEWER,
            new_version=insight.version + 1,
            report=f"DiagnosticReport/{report_id}",
        )
        save_review(
            store,
            result,
            expected_version=insight.version,
            reviewer=REVIEWER.username,
            decision=plan[kind].value,
        )


@pytest.mark.parametrize("how", ["requeue", "resend with a new MSH-10"])
def test_the_same_report_again_keeps_every_insight_decision(
    setup: tuple[Store, Settings], how: str
) -> None:
    store, settings = setup
    message_id, (bundle_id,) = extract(store, settings, message("INSRE01"))
    report_id = report_of(store, bundle_id)
    decide(store, report_id)
    decided = states(store, report_id)
    assert {k.split("/")[0]: v for k, v in decided.items()} == {
        "Flag": ("entered-in-error", 2, True),
        "ServiceRequest": ("active", 2, True),
    }
    reviewed_bundle = store.get_bundle(bundle_id)
    store.mark_delivered(message_id)

    if how == "requeue":
        store.requeue(message_id)
        again, bundle_ids = message_id, process_message(store, settings, message_id)
    else:
        again, bundle_ids = extract(store, settings, message("INSRE09"))
    assert bundle_ids == [], "nothing new to deliver: every insight of the report was decided"
    assert states(store, report_id) == decided, "no new version, nothing awaiting review"
    assert store.get_bundle(bundle_id) == reviewed_bundle, "the ORU's Bundle keeps the decisions"
    assert worklist(store) == []
    note = extraction_notes(store, again)[-1]
    assert sorted(note["kept"]) == sorted(k.split("/")[1] for k in decided)


def test_a_partly_decided_report_keeps_the_decided_insight(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    message_id, (bundle_id,) = extract(store, settings, message("INSRE01"))
    report_id = report_of(store, bundle_id)
    decide(store, report_id, only="ServiceRequest")
    store.mark_delivered(message_id)
    store.requeue(message_id)
    assert process_message(store, settings, message_id) == [bundle_id]  # the Flag rewritten
    after = {k.split("/")[0]: v for k, v in states(store, report_id).items()}
    assert after["ServiceRequest"] == ("active", 2, True), "the decision is not rewritten"
    assert after["Flag"][0] == "active" and not after["Flag"][2]
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    carried = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert carried["ServiceRequest"]["status"] == "active", "the ORU never gets it undone"
    provenances = [e["resource"] for e in bundle["entry"] if "activity" in e["resource"]]
    assert [p["target"][0]["reference"].split("/")[0] for p in provenances] == ["ServiceRequest"]
    [item] = worklist(store)
    assert item.insights_waiting == 1  # the Flag still waits


def test_a_corrected_report_reopens_the_insight_decisions(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    _, (bundle_id,) = extract(store, settings, message("INSRE01"))
    report_id = report_of(store, bundle_id)
    decide(store, report_id)
    assert worklist(store) == []

    corrected, bundle_ids = extract(store, settings, message("INSRE02", b"C"))
    assert bundle_ids == [bundle_id]
    after = {k.split("/")[0]: v for k, v in states(store, report_id).items()}
    assert after["Flag"] == ("active", 3, False), "a new version, awaiting review again"
    assert after["ServiceRequest"] == ("entered-in-error", 3, False), "no longer recommended"
    [item] = worklist(store)
    assert item.report_id == report_id and item.insights_waiting == 1
    assert "reopened" in extraction_notes(store, corrected)[-1]


def test_a_correction_routed_to_a_template_retires_the_report_only_insights(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    _, (first,) = extract(store, settings, message("INSRE01"))
    report_id = report_of(store, first)
    before = states(store, report_id)
    assert {k.split("/")[0] for k in before} == {"Flag", "ServiceRequest"}

    segments = SCROTUM_US.decode().split("\r")
    segments[0] = segments[0].replace("INSUI01", "INSRE03")
    chest = "\r".join(segments[:2] + CHEST_CT_SEGMENTS).encode()
    _, (second,) = extract(store, settings, Incoming(chest, "mllp", "RIS", "RBHOSP", "INSRE03"))
    assert second != first, "the corrected report has a template: a Bundle of its own"
    assert report_of(store, second) == report_id
    for key in before:
        kind, rid = key.split("/")
        stored = store.get_resource(kind, rid)
        assert stored is not None and stored["status"] == "entered-in-error", key
    bundle = store.get_bundle(second)
    assert bundle is not None
    retired = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["resource"].get("status") == "entered-in-error"
    }
    assert set(before) <= retired, "the destinations are told the insights are withdrawn"
    assert all(item.insights_waiting == 0 for item in worklist(store))
