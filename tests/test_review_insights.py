"""Decisions on a report's insights (issue 20 item 7) without a browser: the pure transitions
of `mappings.review.review_insight` (one row of INSIGHT_REVIEWS per resource type), and on a
real store (SQLite, PostgreSQL where configured) with the real rules-stage extraction of a
report no template applies to: the worklist lists it first (critical result), a decision makes
a new version with its Provenance in the report's Bundle, and a decided insight leaves the
worklist. A stale version is refused and changes nothing.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.reviews import StoredInsight, report_insights, save_review, worklist
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.ui.insight_view import insight_view
from conformance.validate import validate_resource
from mappings.review import (
    INSIGHT_REVIEWS,
    Decision,
    ReviewConflict,
    Reviewer,
    ReviewRefused,
    review_insight,
)
from tests.stores import KINDS, data_dir, open_store
from tests.test_ui_insights_browser import SCROTUM_US
from workers.tasks import process_message

REVIEWER = Reviewer("dr.review")
SUBJECT = {"reference": "Patient/p1"}
REPORT = {"reference": "DiagnosticReport/r1"}
INSIGHTS: dict[str, dict[str, Any]] = {
    "ServiceRequest": {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "draft",
        "intent": "proposal",
        "subject": SUBJECT,
        "code": {"text": "ultrasound"},
    },
    "Flag": {
        "resourceType": "Flag",
        "id": "f1",
        "status": "active",
        "subject": SUBJECT,
        "code": {"text": "Critical result: torsion"},
    },
    "DetectedIssue": {
        "resourceType": "DetectedIssue",
        "id": "d1",
        "status": "preliminary",
        "code": {"text": "laterality mismatch"},
        "implicated": [REPORT],
    },
    "Communication": {
        "resourceType": "Communication",
        "id": "c1",
        "status": "completed",
        "subject": SUBJECT,
    },
}
EXPECTED = {  # (resource type, decision) -> status of the next version
    ("ServiceRequest", Decision.ACCEPT): "active",
    ("ServiceRequest", Decision.REJECT): "entered-in-error",
    ("Flag", Decision.ACCEPT): "active",
    ("Flag", Decision.REJECT): "entered-in-error",
    ("DetectedIssue", Decision.ACCEPT): "final",
    ("DetectedIssue", Decision.REJECT): "entered-in-error",
    ("Communication", Decision.ACCEPT): "completed",
    ("Communication", Decision.REJECT): "entered-in-error",
}


def test_every_reviewable_insight_type_has_its_expected_transitions() -> None:
    assert {kind for kind, _ in EXPECTED} == set(INSIGHT_REVIEWS)


@pytest.mark.parametrize(("kind", "decision"), sorted(EXPECTED))
def test_a_decision_makes_the_next_version_and_its_provenance(
    kind: str, decision: Decision
) -> None:
    result = review_insight(
        INSIGHTS[kind], decision, REVIEWER, new_version=2, report="DiagnosticReport/r1"
    )
    assert result.observation["status"] == EXPECTED[(kind, decision)]
    assert result.observation["meta"]["versionId"] == "2"
    assert INSIGHTS[kind]["status"] == INSIGHT_REVIEWS[kind].awaiting[0]  # not changed in place
    provenance = result.provenance
    assert provenance["target"] == [{"reference": f"{kind}/{INSIGHTS[kind]['id']}/_history/2"}]
    assert provenance["entity"][0]["what"]["reference"].endswith(
        f"{kind}/{INSIGHTS[kind]['id']}/_history/1"
    )
    assert provenance["reason"] == [{"text": decision.value}]
    assert provenance["agent"][0]["who"]["display"] == "dr.review"
    for resource in (result.observation, provenance):
        assert [p for p in validate_resource(resource) if p.severity == "error"] == []


def test_what_cannot_be_decided_is_refused() -> None:
    flag = INSIGHTS["Flag"]
    with pytest.raises(ReviewRefused, match="accepted or rejected"):
        review_insight(flag, Decision.CORRECT, REVIEWER, new_version=2)
    with pytest.raises(ReviewRefused, match="only a decision can be undone"):
        review_insight(flag, Decision.UNDO, REVIEWER, new_version=2)
    with pytest.raises(ReviewRefused, match="not awaiting review"):
        review_insight(flag, Decision.ACCEPT, REVIEWER, new_version=3, decided=True)
    with pytest.raises(ReviewRefused, match="not awaiting review"):
        review_insight(
            {**flag, "status": "entered-in-error"}, Decision.REJECT, REVIEWER, new_version=2
        )
    with pytest.raises(ReviewRefused, match="not a reviewable insight"):
        review_insight(
            {"resourceType": "Patient", "id": "p"}, Decision.ACCEPT, REVIEWER, new_version=2
        )


@pytest.mark.parametrize("kind", KINDS)
def test_decisions_on_stored_insights(tmp_path: Path, kind: str) -> None:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    with open_store(kind, settings) as store:
        message_id = store.accept(
            Incoming(SCROTUM_US, "mllp", "RIS", "RBHOSP", "INSUI01")
        ).message_id
        (bundle_id,) = process_message(store, settings, message_id) or []
        [item] = worklist(store)
        assert (item.waiting, item.insights_waiting, item.critical) == (0, 2, 1)
        assert item.needs_attention and item.templates == ()
        assert worklist(store, template="chest_ct") == []  # a report with insights only
        report_id = item.report_id
        found = {str(i.body["resourceType"]): i for i in report_insights(store, report_id)}
        assert list(found) == ["Flag", "ServiceRequest"]  # INSIGHT_REVIEWS order
        assert all(i.awaiting and not i.decided and i.version == 1 for i in found.values())

        request = found["ServiceRequest"]
        accepted = review_insight(
            request.body,
            Decision.ACCEPT,
            REVIEWER,
            new_version=2,
            report=f"DiagnosticReport/{report_id}",
        )
        assert (
            save_review(
                store, accepted, expected_version=1, reviewer="dr.review", decision="accept"
            )
            == bundle_id
        )
        with pytest.raises(ReviewConflict):  # a second decision made on version 1
            save_review(
                store, accepted, expected_version=1, reviewer="dr.review", decision="accept"
            )
        stored = store.get_resource("ServiceRequest", str(request.body["id"]))
        assert stored is not None and stored["status"] == "active"
        bundle = store.get_bundle(bundle_id)
        assert bundle is not None
        carried = {
            (e["resource"]["resourceType"], e["resource"]["id"]): e["resource"]
            for e in bundle["entry"]
        }
        assert carried[("ServiceRequest", request.body["id"])]["status"] == "active"
        assert ("Provenance", accepted.provenance["id"]) in carried
        assert [p for p in validate_resource(bundle) if p.severity == "error"] == []

        after = {str(i.body["resourceType"]): i for i in report_insights(store, report_id)}
        assert after["ServiceRequest"].decided and not after["ServiceRequest"].awaiting
        assert after["ServiceRequest"].version == 2
        [item] = worklist(store)
        assert item.insights_waiting == 1  # the Flag still waits

        flag = after["Flag"]
        kept = review_insight(flag.body, Decision.ACCEPT, REVIEWER, new_version=2)
        save_review(store, kept, expected_version=1, reviewer="dr.review", decision="accept")
        decided = {str(i.body["resourceType"]): i for i in report_insights(store, report_id)}
        assert decided["Flag"].decided and decided["Flag"].body["status"] == "active"
        assert worklist(store) == []  # an accepted Flag is decided although it stays active
        with pytest.raises(ReviewRefused):
            review_insight(
                decided["Flag"].body, Decision.REJECT, REVIEWER, new_version=3, decided=True
            )


def test_an_insight_decision_is_sent_to_the_fhir_ehr_with_its_target() -> None:
    """The EHR write-back (mappings.ehr) sends the insights like the Observations, so a
    decision's Provenance on an insight goes too, its target the version the EHR returned; a
    decision whose target the write-back does not send stays out (it would dangle there)."""
    from mappings import ehr
    from mappings.review import bundle_with_review
    from tests.test_ehr_identity import BASE, GOLDEN

    request = {**INSIGHTS["ServiceRequest"], "subject": {"reference": "Patient/x"}}
    bundle = {**GOLDEN, "entry": [*GOLDEN["entry"], {"resource": request}]}
    decided = bundle_with_review(
        bundle, review_insight(request, Decision.ACCEPT, REVIEWER, new_version=2)
    )
    written = ehr.Plan(None, None, None, "DiagnosticReport/nc-dr-1", "Patient/abc", {})
    policy = ehr.IdentityPolicy()
    versions = {"ServiceRequest/sr1": "4"}
    transaction, hashes = ehr.review_transaction(
        decided, written, versions, policy, {}, base_url=BASE
    )
    assert transaction is not None
    (provenance,) = [e["resource"] for e in transaction["entry"]]
    assert provenance["target"] == [{"reference": "ServiceRequest/sr1/_history/4"}]
    assert list(hashes) == [f"Provenance/{provenance['id']}"]
    elsewhere = copy.deepcopy(decided)
    for entry in elsewhere["entry"]:
        if entry["resource"]["id"] == provenance["id"]:
            entry["resource"]["target"] = [{"reference": "Patient/x"}]
    assert ehr.review_transaction(elsewhere, written, {}, policy, {}, base_url=BASE) == (None, {})


def test_an_insight_heading_names_its_kind_once() -> None:
    """A Flag's code text starts with its kind ("Critical result: torsion", the wording the EHR
    and the ORU carry); the page's heading is `kind: what`, so `what` drops the repeated kind."""
    flag = insight_view(StoredInsight(INSIGHTS["Flag"], 1, "b1", decided=False))
    assert (flag.kind, flag.what) == ("Critical result", "torsion")
    issue = insight_view(StoredInsight(INSIGHTS["DetectedIssue"], 1, "b1", decided=False))
    assert (issue.kind, issue.what) == ("Mismatch", "laterality mismatch")  # not a prefix: kept
    bare = {**INSIGHTS["Flag"], "code": {"text": "Critical result:"}}
    assert insight_view(StoredInsight(bare, 1, "b1", decided=False)).what == "Flag"


def test_the_page_of_a_report_with_only_insights(tmp_path: Path) -> None:
    """The review page of a report no template applies to: each insight's heading names its
    kind once, and no empty "Extracted values" heading stands under the insights."""
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    store = Store.open(settings)
    try:
        message_id = store.accept(
            Incoming(SCROTUM_US, "mllp", "RIS", "RBHOSP", "INSUI01")
        ).message_id
        process_message(store, settings, message_id)
        [item] = worklist(store)
        page = TestClient(create_app(settings, store)).get(f"/ui/reports/{item.report_id}")
    finally:
        store.close()
    assert page.status_code == 200
    headings = re.findall(r"<h3>([^<]*)</h3>", page.text)
    assert "Critical result: Testicular torsion" in headings, headings
    assert not [h for h in headings if h.count("Critical result") > 1]
    assert "Extracted values" not in page.text and 'id="values-heading"' not in page.text
    labelled = re.findall(r'aria-labelledby="([^"]+)"', page.text)
    assert labelled and all(f'id="{name}"' in page.text for name in labelled)
