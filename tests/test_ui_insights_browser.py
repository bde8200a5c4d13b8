"""Insights on the review pages in a real browser (issue 20 item 7).

Playwright for Python drives Debian's `chromium` against a real `radbridge serve` (embedded
Redis, SQLite, a worker, RADBRIDGE_STAGE=rules) that delivers ORU^R01 over MLLP to a receiver
that is not ours (`tests/helpers/oru_receiver.py`, python-hl7) and writes back to a FHIR EHR (the
project's test EHR `tests/helpers/fhir_server.py`, checking each resource against the R4 JSON schema).
A scrotal ultrasound no template applies
to says "Left testicular torsion" (a critical result: Flag) and recommends a follow-up
ultrasound (a draft ServiceRequest). The worklist lists the report first (it has only insights
awaiting review, one a critical result); its review page lists both insights with their
evidence highlighted in the text; accepting the follow-up makes the stored ServiceRequest
`active` and the delivered ORU's follow-up OBX final (`F`, was `P`), rejecting the Flag makes it
`entered-in-error` and its OBX withdrawn (`W`), each decision with a verify Provenance; the
FHIR EHR, given the draft ServiceRequest and the active Flag at first, then holds them active
and entered-in-error with both decisions' Provenance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from adapter.settings import Settings
from adapter.store import Store
from adapter.ui.auth import add_user
from tests.browser import launched, shoot, sign_in
from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.helpers.oru_receiver import OruReceiver
from tests.serve_process import Service, running_serve

REVIEWER = ("rita", "reviewer-password")
SCROTUM_US = "\r".join(
    [
        "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20261102101500||ORU^R01|INSUI01|P|2.3",
        "PID|1||MRN-INSUI^^^RBH^MR||TESTPATIENT^DELTA||19800101|M",
        "OBR|1|PL9101|ACC9101|76870^US SCROTUM^CPT|||20261102100000|||||||||||||||"
        "20261102101400||US|F",
        "OBX|1|TX|&GDT||US SCROTUM~IMPRESSION: Left testicular torsion.~"
        "Recommend follow-up ultrasound in 6 weeks.||||||F",
    ]
).encode()
FOLLOW_UP, CRITICAL = "Follow-up recommendation", "Critical result"


def _wait(what: str, check: Callable[[], Any], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _at_ehr(fhir: FhirServer, kind: str) -> dict[str, str]:
    """What the FHIR EHR holds of one resource type: `id` -> status."""
    with fhir.lock:
        return {
            url.split("/", 1)[1]: str(resource.get("status"))
            for url, resource in fhir.resources.items()
            if url.startswith(f"{kind}/")
        }


def _insight_statuses(receiver: OruReceiver) -> list[dict[str, str]]:
    """Per ORU received: OBX-3 text -> OBX-11 of its insight OBX."""
    return [
        {str(obx(3)).lstrip("^"): str(obx(11)) for obx in message.segments("OBX")}
        for message in receiver.messages
    ]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Service, OruReceiver, FhirServer]]:
    root = tmp_path_factory.mktemp("ui-insights")
    users = root / "users"
    add_user(users, REVIEWER[0], "reviewer", REVIEWER[1])
    receiver = OruReceiver().start()
    fhir = FhirServer().start()
    settings = {
        "RADBRIDGE_ORU_TARGET": receiver.target,
        "RADBRIDGE_FHIR_BASE_URL": fhir.base_url,
        **EHR_IDENTITY_ENV,
        "RADBRIDGE_STAGE": "rules",
        "RADBRIDGE_UI_USERS_FILE": str(users),
        "RADBRIDGE_UI_SESSION_SECRET": "browser-test-session-secret-0123456789",
        "RADBRIDGE_TASK_MAX_RETRIES": "0",
    }
    try:
        with running_serve(root, settings, ready_s=90) as running:
            answer = httpx.post(f"{running.http}/hl7v2", content=SCROTUM_US, timeout=30)
            assert answer.status_code == 200, answer.text
            _wait("the report's ORU to be delivered", lambda: receiver.messages)
            _wait("the report's write-back", lambda: _at_ehr(fhir, "Flag"))
            yield running, receiver, fhir
    finally:
        receiver.stop()
        fhir.stop()
    log = (root / "serve.log").read_text()
    assert "TESTPATIENT" not in log and "MRN-INSUI" not in log and "torsion" not in log


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched("the browser UI tests") as opened:
        yield opened


def test_review_page_shows_insights_and_a_decision_changes_what_is_delivered(
    service: tuple[Service, OruReceiver, FhirServer], browser: Any
) -> None:
    running, receiver, fhir = service
    api = running.http
    first_sent = _insight_statuses(receiver)[0]
    assert (first_sent[FOLLOW_UP], first_sent[CRITICAL]) == ("P", "F")
    assert list(_at_ehr(fhir, "ServiceRequest").values()) == ["draft"]
    assert list(_at_ehr(fhir, "Flag").values()) == ["active"]  # a critical result: at once
    page = sign_in(browser, api, REVIEWER, accept_dialogs=True)
    page.goto(f"{api}/ui/review")
    first = page.locator("table.list tbody tr").first
    assert "critical result" in first.inner_text()  # flagged: first, though it has no values
    assert "2 insights" in first.inner_text()
    first.locator("a").click()
    page.wait_for_url("**/ui/reports/**")
    assert page.locator("article[data-insight]").count() == 2
    follow_up = page.locator('article[data-type="ServiceRequest"]')
    flag = page.locator('article[data-type="Flag"]')
    request_id = str(follow_up.get_attribute("data-insight"))
    flag_id = str(flag.get_attribute("data-insight"))
    assert "Follow-up" in follow_up.inner_text() and "Due" in follow_up.inner_text()
    assert "Recommend follow-up ultrasound in 6 weeks" in follow_up.inner_text()
    assert flag.locator("h3").inner_text() == "Critical result: Testicular torsion"  # kind once
    assert page.locator("#values-heading").count() == 0  # no values: no empty heading
    # hovering an insight lights its evidence in the report text
    follow_up.locator("h3").hover()
    lit = page.locator(f'mark.lit[data-evidence~="{request_id}"]')
    assert lit.count() >= 1 and "6 weeks" in lit.first.inner_text()
    shoot(page, "ui-review-insights.png")

    follow_up.get_by_role("button", name="Accept", exact=True).click()
    page.wait_for_load_state()
    assert "Saved: accept" in page.content()
    page.locator('article[data-type="Flag"]').get_by_role(
        "button", name="Reject", exact=True
    ).click()
    page.wait_for_load_state()
    assert "Saved: reject" in page.content()
    decided_page = page.url
    assert page.locator("article[data-insight] button.accept").count() == 0  # both decided
    assert page.locator("article[data-insight] button.reject").count() == 0
    assert page.locator("article[data-insight] button.undo").count() == 2  # each can be undone

    # what the receiver gets now: the follow-up final, the critical result withdrawn
    _wait(
        "the decisions to be delivered",
        lambda: any(
            (sent.get(FOLLOW_UP), sent.get(CRITICAL)) == ("F", "W")
            for sent in _insight_statuses(receiver)
        ),
        60,
    )
    store = Store.open(Settings(data_dir=running.data_dir))  # type: ignore[call-arg]
    try:
        accepted = store.get_resource("ServiceRequest", request_id)
        rejected = store.get_resource("Flag", flag_id)
        assert accepted is not None and accepted["status"] == "active"
        assert accepted["meta"]["security"][0]["code"] == "AIAST"
        assert rejected is not None and rejected["status"] == "entered-in-error"
    finally:
        store.close()
    for kind, rid in (("ServiceRequest", request_id), ("Flag", flag_id)):
        found = httpx.get(f"{api}/fhir/Provenance", params={"target": f"{kind}/{rid}"}).json()
        verify = [e["resource"] for e in found.get("entry", []) if "activity" in e["resource"]]
        assert [v["target"] for v in verify] == [[{"reference": f"{kind}/{rid}/_history/2"}]]
        assert verify[0]["agent"][0]["who"]["display"] == REVIEWER[0]

    # what the FHIR EHR holds now: the same decisions, each with its Provenance (posted after
    # the decision's transaction, in the same delivery)
    def decided() -> list[str]:
        with fhir.lock:
            return sorted(
                ref["reference"].split("/_history", 1)[0]
                for url, resource in fhir.resources.items()
                if url.startswith("Provenance/") and "activity" in resource
                for ref in resource["target"]
            )

    _wait(
        "the decisions and their Provenance to be written back",
        lambda: (
            _at_ehr(fhir, "ServiceRequest") == {request_id: "active"}
            and _at_ehr(fhir, "Flag") == {flag_id: "entered-in-error"}
            and len(decided()) >= 2
        ),
        60,
    )
    assert decided() == sorted([f"ServiceRequest/{request_id}", f"Flag/{flag_id}"])
    assert fhir.refused == 0
    page.goto(f"{api}/ui/review")
    assert "Nothing awaits review" in page.content()

    # Undo of the follow-up's decision: a draft awaiting review again, at the ORU and the EHR
    page.goto(decided_page)
    follow_up = page.locator('article[data-type="ServiceRequest"]')
    follow_up.get_by_role("button", name="Undo", exact=True).click()
    page.wait_for_load_state()
    assert "Saved: undo" in page.content()
    follow_up = page.locator('article[data-type="ServiceRequest"]')
    assert follow_up.get_by_role("button", name="Accept", exact=True).count() == 1
    assert "draft (version 3)" in follow_up.inner_text()
    _wait(
        "the undo to be delivered",
        lambda: (
            _insight_statuses(receiver)[-1].get(FOLLOW_UP) == "P"
            and _at_ehr(fhir, "ServiceRequest") == {request_id: "draft"}
        ),
        60,
    )
    page.goto(f"{api}/ui/review")
    assert "Nothing awaits review" not in page.content()
