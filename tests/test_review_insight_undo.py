"""Undo of an insight decision (issue 20), like Undo of a value decision: the version the
decision was made on comes back as the next version (an accepted follow-up `ServiceRequest`
active -> draft, a rejected one back from entered-in-error) with an UNDO Provenance; on a real
store (SQLite, PostgreSQL where configured) through the review page's form, the worklist counts
it again, the report's Bundle carries it and the EHR write-back sends its Provenance."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.reviews import report_insights, save_review, worklist
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.ui.insight_view import insight_view
from conformance.validate import validate_resource
from mappings.review import (
    INSIGHT_REVIEWS,
    UNDO_ACTIVITY,
    Decision,
    ReviewRefused,
    bundle_with_review,
    review_insight,
    undo_provenance_id,
)
from tests.stores import KINDS, data_dir, open_store
from tests.test_review_insights import INSIGHTS, REVIEWER
from tests.test_ui_insights_browser import SCROTUM_US
from workers.tasks import process_message

DECISIONS = sorted(
    (kind, d) for kind in INSIGHT_REVIEWS for d in (Decision.ACCEPT, Decision.REJECT)
)


def _decided(kind: str, decision: Decision) -> dict[str, Any]:
    first = {**INSIGHTS[kind], "meta": {"versionId": "1"}}
    return review_insight(first, decision, REVIEWER, new_version=2).observation


@pytest.mark.parametrize(("kind", "decision"), DECISIONS)
def test_an_undo_brings_the_version_awaiting_review_back(kind: str, decision: Decision) -> None:
    previous = {**INSIGHTS[kind], "meta": {"versionId": "1"}}
    decided = _decided(kind, decision)
    result = review_insight(
        decided, Decision.UNDO, REVIEWER, new_version=3, decided=True, previous=previous,
        report="DiagnosticReport/r1",
    )  # fmt: skip
    restored = result.observation
    assert restored["status"] == INSIGHTS[kind]["status"]  # draft, active, preliminary, ...
    assert restored["status"] in INSIGHT_REVIEWS[kind].awaiting
    assert restored["meta"]["versionId"] == "3"
    provenance = result.provenance
    assert provenance["id"] == undo_provenance_id(INSIGHTS[kind]["id"], 3)
    assert provenance["activity"] == UNDO_ACTIVITY and provenance["reason"] == [{"text": "undo"}]
    assert provenance["target"] == [{"reference": f"{kind}/{INSIGHTS[kind]['id']}/_history/3"}]
    revisions = [e["what"]["reference"] for e in provenance["entity"] if e["role"] == "revision"]
    assert revisions == [
        f"{kind}/{INSIGHTS[kind]['id']}/_history/2",  # the decision undone
        f"{kind}/{INSIGHTS[kind]['id']}/_history/1",  # the version that comes back
    ]
    for resource in (restored, provenance):
        assert [p for p in validate_resource(resource) if p.severity == "error"] == []


def test_what_cannot_be_undone_is_refused() -> None:
    request = INSIGHTS["ServiceRequest"]
    active = _decided("ServiceRequest", Decision.ACCEPT)
    with pytest.raises(ReviewRefused, match="only a decision can be undone"):  # no decision yet
        review_insight(request, Decision.UNDO, REVIEWER, new_version=2, previous=request)
    with pytest.raises(ReviewRefused, match="only a decision can be undone"):  # not a reviewer's
        review_insight(active, Decision.UNDO, REVIEWER, new_version=3, previous=request)
    with pytest.raises(ReviewRefused, match="not an insight awaiting review"):
        review_insight(active, Decision.UNDO, REVIEWER, new_version=3, decided=True)
    with pytest.raises(ReviewRefused, match="not an insight awaiting review"):  # another one
        review_insight(
            active, Decision.UNDO, REVIEWER, new_version=3, decided=True,
            previous={**request, "id": "other"},
        )  # fmt: skip
    with pytest.raises(ReviewRefused, match="not an insight awaiting review"):  # a decided one
        review_insight(
            active, Decision.UNDO, REVIEWER, new_version=3, decided=True,
            previous={**request, "status": "entered-in-error"},
        )  # fmt: skip


def test_an_undo_goes_to_the_fhir_ehr_with_its_target() -> None:
    from mappings import ehr
    from tests.test_ehr_identity import BASE, GOLDEN

    request = {**INSIGHTS["ServiceRequest"], "subject": {"reference": "Patient/x"}}
    accepted = review_insight(request, Decision.ACCEPT, REVIEWER, new_version=2)
    undone = review_insight(
        accepted.observation, Decision.UNDO, REVIEWER, new_version=3, decided=True,
        previous=request,
    )  # fmt: skip
    bundle = {**GOLDEN, "entry": [*GOLDEN["entry"], {"resource": request}]}
    carried = bundle_with_review(bundle_with_review(bundle, accepted), undone)
    [sent] = [e["resource"] for e in carried["entry"] if e["resource"].get("id") == "sr1"]
    assert sent["status"] == "draft"  # the report's current state: the follow-up awaits review
    written = ehr.Plan(None, None, None, "DiagnosticReport/nc-dr-1", "Patient/abc", {})
    transaction, _ = ehr.review_transaction(
        carried, written, {"ServiceRequest/sr1": "7"}, ehr.IdentityPolicy(), {}, base_url=BASE
    )
    assert transaction is not None
    provenances = {e["resource"]["id"]: e["resource"] for e in transaction["entry"]}
    undo = provenances[undone.provenance["id"]]
    assert undo["activity"] == UNDO_ACTIVITY
    assert undo["target"] == [{"reference": "ServiceRequest/sr1/_history/7"}]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _insights(store: Store, report_id: str) -> dict[str, Any]:
    return {str(i.body["resourceType"]): i for i in report_insights(store, report_id)}


@pytest.mark.parametrize("kind", KINDS)
def test_undo_on_a_stored_insight(tmp_path: Path, kind: str) -> None:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    with open_store(kind, settings) as store:
        message_id = store.accept(
            Incoming(SCROTUM_US, "mllp", "RIS", "RBHOSP", "INSUN1")
        ).message_id
        (bundle_id,) = process_message(store, settings, message_id) or []
        [item] = worklist(store)
        report_id = item.report_id
        source = f"DiagnosticReport/{report_id}"
        found = _insights(store, report_id)
        assert not any(i.undoable for i in found.values())  # nothing decided yet
        for name, decision in (("ServiceRequest", Decision.ACCEPT), ("Flag", Decision.REJECT)):
            result = review_insight(
                found[name].body, decision, REVIEWER, new_version=2, report=source
            )
            save_review(store, result, expected_version=1, reviewer="dr.r", decision=decision.value)
        assert worklist(store) == []
        decided = _insights(store, report_id)
        assert decided["ServiceRequest"].body["status"] == "active"
        assert decided["Flag"].body["status"] == "entered-in-error"
        assert all(i.undoable and insight_view(i).undoable for i in decided.values())
        for name in ("ServiceRequest", "Flag"):
            current = decided[name]
            undone = review_insight(
                current.body, Decision.UNDO, REVIEWER, new_version=3, decided=current.decided,
                previous=current.previous, report=source,
            )  # fmt: skip
            save_review(store, undone, expected_version=2, reviewer="dr.r", decision="undo")
        after = _insights(store, report_id)
        assert after["ServiceRequest"].body["status"] == "draft"
        assert after["Flag"].body["status"] == "active"
        for insight in after.values():
            assert insight.version == 3 and insight.awaiting and not insight.undoable
        [item] = worklist(store)
        assert item.insights_waiting == 2 and item.critical == 1
        bundle = store.get_bundle(bundle_id)
        assert bundle is not None
        carried = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
        for insight in after.values():
            provenance = undo_provenance_id(str(insight.body["id"]), 3)
            assert ("Provenance", provenance) in carried
        assert [p for p in validate_resource(bundle) if p.severity == "error"] == []
        assert store.audit_trail(message_id)[-2:] == ["review_undo", "review_undo"]
        # decided again after the undo: a new decision on version 3
        request = after["ServiceRequest"]
        again = review_insight(
            request.body, Decision.REJECT, REVIEWER, new_version=4, report=source
        )
        save_review(store, again, expected_version=3, reviewer="dr.r", decision="reject")
        assert _insights(store, report_id)["ServiceRequest"].body["status"] == "entered-in-error"


def test_the_review_page_offers_undo_of_an_insight_decision(tmp_path: Path) -> None:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    store = Store.open(settings)
    try:
        message_id = store.accept(
            Incoming(SCROTUM_US, "mllp", "RIS", "RBHOSP", "INSUN2")
        ).message_id
        process_message(store, settings, message_id)
        [item] = worklist(store)
        report_id = item.report_id
        request = _insights(store, report_id)["ServiceRequest"]
        url = f"/ui/reports/{report_id}/insights/ServiceRequest/{request.body['id']}"
        client = TestClient(create_app(settings, store))
        page = client.get(f"/ui/reports/{report_id}")
        assert 'value="undo"' not in page.text  # nothing decided yet
        token = _csrf(page.text)
        accepted = client.post(url, data={"decision": "accept", "version": "1", "csrf": token})
        assert accepted.status_code == 200
        page = client.get(f"/ui/reports/{report_id}")
        article = page.text.split(f'id="insight-{request.body["id"]}"', 1)[1].split("</article>")[0]
        assert 'value="undo"' in article and 'value="accept"' not in article
        stale = client.post(url, data={"decision": "undo", "version": "1", "csrf": token})
        assert stale.status_code == 409
        undone = client.post(url, data={"decision": "undo", "version": "2", "csrf": token})
        assert undone.status_code == 200
        current = _insights(store, report_id)["ServiceRequest"]
        assert (current.version, current.body["status"], current.awaiting) == (3, "draft", True)
        again = client.post(url, data={"decision": "undo", "version": "3", "csrf": token})
        assert again.status_code in (400, 409, 422) and "Nothing was changed" in again.text
        assert _insights(store, report_id)["ServiceRequest"].version == 3
    finally:
        store.close()
