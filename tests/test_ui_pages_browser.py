"""Pages radiologists and operators can use (issue 23 item 4), in a real browser.

Playwright for Python drives Debian's `chromium` against a real `radbridge serve` (embedded Redis,
SQLite, a worker, RADBRIDGE_STAGE=rules) that delivers to the test FHIR server, as in
tests/test_ui_browser.py. A reviewer finds the report by patient, MRN, accession, exam and exam
date; the review page shows the patient banner, keeps the report text in view beside the values,
hides the codes behind a toggle, asks before Reject and Accept all, undoes a decision (a new
version and Provenance) and works from the keyboard. An operator searches the console by MSH-10,
accession and sender as the column shows it, sees a control_id_conflict in the list, and
discards and resolves dead letters with a reason (audited; the stored message stays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.ui.auth import add_user
from tests.browser import launched, shoot, sign_in
from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.serve_process import Service, running_serve

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
ROOT = Path(__file__).resolve().parents[1]
REVIEWER = ("rita", "reviewer-password")
OPERATOR = ("otto", "operator-password")
BAD = (HL7_DIR / "bad_no_narrative.hl7").read_bytes().strip()
MESSAGES = (
    (HL7_DIR / "chest_ct.hl7").read_bytes().strip(),  # 1: delivered, on the worklist
    BAD,  # 2: dead (RIS/RBHOSP, BAD0002, accession ACC2)
    BAD.replace(b"|RBHOSP|RADBRIDGE", b"|DEKLINIK|RADBRIDGE")  # 3: dead, from RIS/DEKLINIK
    .replace(b"BAD0002", b"BAD0003")
    .replace(b"|ACC2|", b"|ACC3|"),
    BAD.replace(b"|ACC2|", b"|ACC4|"),  # 4: MSH-10 BAD0002 again, other content: a conflict
)


def _wait(what: str, check: Callable[[], Any], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _state(base: str, message_id: int) -> str:
    return str(httpx.get(f"{base}/jobs/{message_id}", timeout=30).json()["state"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("ui-pages")
    users = root / "users"
    add_user(users, REVIEWER[0], "reviewer", REVIEWER[1])
    add_user(users, OPERATOR[0], "operator", OPERATOR[1])
    fhir = FhirServer().start()
    settings = {
        "RADBRIDGE_FHIR_BASE_URL": fhir.base_url,
        **EHR_IDENTITY_ENV,
        "RADBRIDGE_STAGE": "rules",
        "RADBRIDGE_UI_USERS_FILE": str(users),
        "RADBRIDGE_UI_SESSION_SECRET": "browser-test-session-secret-0123456789",
        "RADBRIDGE_TASK_MAX_RETRIES": "0",
    }
    try:
        with running_serve(root, settings, ready_s=90) as running:
            for body in MESSAGES:
                answer = httpx.post(f"{running.http}/hl7v2", content=body, timeout=30)
                assert answer.status_code == 200, answer.text
            _wait(
                "the report to be delivered and the bad ones to go dead",
                lambda: (
                    [_state(running.http, i) for i in (1, 2, 3, 4)]
                    == ["delivered", "dead", "dead", "dead"]
                ),
            )
            yield running
    finally:
        fhir.stop()
    log = (root / "serve.log").read_text()
    assert "TESTPATIENT" not in log and "MRN0001" not in log  # no names or identifiers logged


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched("the browser UI tests") as opened:
        yield opened


def _observation(base: str, oid: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/fhir/Observation/{oid}", timeout=30).json())


def _answer_next_dialog(page: Any, accept: bool) -> list[str]:
    """Answer the next confirmation (accept or dismiss); the list gets its question."""
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", answer)
    return asked


def test_worklist_names_the_patient_and_exam(service: Service, browser: Any) -> None:
    page = sign_in(browser, service.http, REVIEWER)
    page.goto(f"{service.http}/ui/review")
    row = page.locator("table.worklist tbody tr").first
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:4] == ["TESTPATIENT, ALPHA", "MRN0001", "ACC1001", "Chest CT"]
    assert cells[4].startswith("2026-11-01")
    shoot(page, "ui-worklist.png")
    headers = page.locator("table.worklist th").all_inner_texts()
    assert headers[:5] == ["Patient", "MRN", "Accession", "Exam", "Exam date"]
    row.get_by_role("link", name="TESTPATIENT, ALPHA").click()
    page.wait_for_url("**/ui/reports/**")
    banner = page.locator("section.banner")
    assert banner.locator('[data-field="patient"]').inner_text() == "TESTPATIENT, ALPHA"
    assert banner.locator('[data-field="mrn"]').inner_text() == "MRN0001"
    assert banner.locator('[data-field="accession"]').inner_text() == "ACC1001"
    assert banner.locator('[data-field="exam"]').inner_text() == "Chest CT"
    assert banner.locator('[data-field="exam-date"]').inner_text().startswith("2026-11-01")


def _report_page(page: Any, base: str) -> tuple[str, list[str]]:
    page.goto(f"{base}/ui/review")
    page.locator("table.worklist td a").first.click()
    page.wait_for_url("**/ui/reports/**")
    rows = page.locator("article[data-observation]")
    ids = [str(rows.nth(i).get_attribute("data-observation")) for i in range(rows.count())]
    return page.url.rsplit("/", 1)[-1].split("?")[0], ids


def test_report_text_stays_in_view_and_codes_are_behind_a_toggle(
    service: Service, browser: Any
) -> None:
    page = sign_in(browser, service.http, REVIEWER, height=450)
    _report_page(page, service.http)
    text = page.locator("section.report")
    values = page.locator("section.values")
    assert page.evaluate("document.documentElement.scrollHeight > window.innerHeight + 300")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("window.scrollY > 300")
    box, beside = text.bounding_box(), values.bounding_box()
    assert box is not None and beside is not None
    assert 0 <= box["y"] < 450 and box["y"] + box["height"] > 0, "the text scrolled out of view"
    assert box["x"] + box["width"] <= beside["x"], "the text is beside the values"
    # codes: hidden until the toggle is switched on (click or the `t` key)
    code = page.locator("article[data-observation] h3 .code").first
    assert not code.is_visible()
    page.get_by_label("Show codes").check()
    assert code.is_visible() and "(" in code.inner_text()
    page.locator("h1").click()
    page.keyboard.press("t")
    assert not code.is_visible()


def test_reject_asks_first_and_a_decision_can_be_undone(service: Service, browser: Any) -> None:
    base = service.http
    page = sign_in(browser, base, REVIEWER)
    report_id, ids = _report_page(page, base)
    first = ids[0]
    before = _observation(base, first)
    reject = page.locator(f'article[data-observation="{first}"]').get_by_role(
        "button", name="Reject", exact=True
    )
    asked = _answer_next_dialog(page, accept=False)
    reject.click()
    page.wait_for_timeout(300)
    assert asked and "Reject" in asked[0]
    assert _observation(base, first)["meta"]["versionId"] == before["meta"]["versionId"]
    _answer_next_dialog(page, accept=True)
    reject.click()
    page.wait_for_url("**done=reject**")
    assert _observation(base, first)["status"] == "entered-in-error"
    # undo: the AI's value comes back, awaiting review, as a new version with its Provenance
    page.locator(f'article[data-observation="{first}"]').get_by_role(
        "button", name="Undo", exact=True
    ).click()
    page.wait_for_url("**done=undo**")
    back = _observation(base, first)
    assert back["status"] == "preliminary" and back["meta"]["versionId"] == "3"
    assert back.get("valueCodeableConcept") == before.get("valueCodeableConcept")
    found = httpx.get(
        f"{base}/fhir/Provenance", params={"target": f"Observation/{first}"}, timeout=30
    ).json()
    undone = [
        e["resource"] for e in found["entry"] if e["resource"].get("activity") == {"text": "UNDO"}
    ]
    assert len(undone) == 1
    assert undone[0]["target"] == [{"reference": f"Observation/{first}/_history/3"}]
    assert undone[0]["agent"][0]["who"]["display"] == REVIEWER[0]
    row = page.locator(f'article[data-observation="{first}"]')
    assert row.get_by_role("button", name="Accept", exact=True).is_visible()
    assert report_id


def test_keyboard_decisions_and_accept_all_asks_first(service: Service, browser: Any) -> None:
    base = service.http
    page = sign_in(browser, base, REVIEWER)
    _, ids = _report_page(page, base)
    waiting = [oid for oid in ids if _observation(base, oid)["status"] == "preliminary"]
    assert len(waiting) >= 3
    page.locator("h1").click()
    page.keyboard.press("j")
    focused = "document.activeElement.dataset.observation"
    assert page.evaluate(focused) == ids[0]
    page.keyboard.press("j")
    assert page.evaluate(focused) == ids[1]
    page.keyboard.press("k")
    page.keyboard.press("j")
    target = ids[1]
    if _observation(base, target)["status"] != "preliminary":  # decided by another test
        target = next(oid for oid in waiting if oid != ids[0])
        page.locator(f'article[data-observation="{target}"]').focus()
    page.keyboard.press("a")
    page.wait_for_url("**done=accept**")
    assert _observation(base, target)["status"] == "final"
    # Accept all: dismissed, nothing changes; confirmed, every waiting value is final
    left = [oid for oid in ids if _observation(base, oid)["status"] == "preliminary"]
    assert left
    asked = _answer_next_dialog(page, accept=False)
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_timeout(300)
    assert asked and f"Accept all {len(left)} values" in asked[0]
    assert all(_observation(base, oid)["status"] == "preliminary" for oid in left)
    _answer_next_dialog(page, accept=True)
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_url("**done=accept-all**")
    assert all(_observation(base, oid)["status"] == "final" for oid in left)


def _filter(page: Any, base: str, **fields: str) -> list[str]:
    """Fill the console's filters, submit, and return the ids listed."""
    page.goto(f"{base}/ui/messages")
    for label, value in fields.items():
        if label == "conflicts":
            page.get_by_label("MSH-10 conflicts only").check()
        else:
            page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    listed = page.locator("table.list").first.locator("tbody tr td:first-child")
    return [t.strip() for t in listed.all_inner_texts()]


def test_console_search_sender_and_conflicts(service: Service, browser: Any) -> None:
    base = service.http
    page = sign_in(browser, base, OPERATOR)
    page.goto(f"{base}/ui/messages")
    assert "TESTPATIENT" not in page.content()  # operators never see names
    assert _filter(page, base, **{"MSH-10": "CT0001"}) == ["1"]
    assert _filter(page, base, **{"MSH-10": "BAD0002"}) == ["4", "2"]
    assert _filter(page, base, Accession="ACC1001") == ["1"]
    assert _filter(page, base, Accession="ACC3") == ["3"]  # a dead letter's OBR-3
    shown = page.locator("table.list").first.locator("tbody tr td:nth-child(4)").first.inner_text()
    assert shown == "RIS/DEKLINIK"
    assert _filter(page, base, Sender="RIS/DEKLINIK") == ["3"]  # what the column shows
    assert _filter(page, base, Sender="RIS/RBHOSP") == ["4", "2", "1"]
    page.goto(f"{base}/ui/messages")
    conflict = page.locator("table.list").first.locator("tbody tr", has_text="control_id_conflict")
    assert [t.strip() for t in conflict.locator("td:first-child").all_inner_texts()] == ["4"]
    assert _filter(page, base, conflicts="1") == ["4"]


def test_dead_letters_are_discarded_or_resolved_with_a_reason(
    service: Service, browser: Any
) -> None:
    base = service.http
    page = sign_in(browser, base, OPERATOR)
    page.goto(f"{base}/ui/dead-letters")
    page.get_by_label("Reason for message 2").fill("a test message the RIS sent by mistake")
    asked = _answer_next_dialog(page, accept=True)
    page.get_by_role("button", name="Discard message 2").click()
    page.wait_for_url("**closed=**")
    assert asked and "Discard message 2" in asked[0]
    assert "Closed: discarded 2" in page.content()
    page.get_by_label("Reason for message 3").fill("entered by hand in the EHR")
    page.get_by_role("button", name="Resolve message 3").click()
    page.wait_for_url("**closed=resolved**")
    closed = page.locator("table.list", has_text="Closed (by, reason)")
    text = closed.inner_text()
    assert "by otto: a test message the RIS sent by mistake" in text
    assert "by otto: entered by hand in the EHR" in text
    shoot(page, "ui-dead-letters.png")
    assert [
        t.strip()
        for t in page.locator("table.list").first.locator("tbody td:nth-child(2)").all_inner_texts()
    ] == ["4"]  # only message 4 is still a dead letter
    assert _state(base, 2) == "discarded" and _state(base, 3) == "resolved"
    page.goto(f"{base}/ui/messages/2")
    detail = page.content()
    assert "discarded" in detail and "a test message the RIS sent by mistake" in detail
    # the stored message is kept (the console still shows it) and a reason is required
    page.goto(f"{base}/ui/dead-letters")
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    refused = page.request.post(
        f"{base}/ui/dead-letters/4/close", form={"csrf": token, "outcome": "discarded"}
    )
    assert refused.status == 400 and _state(base, 4) == "dead"
