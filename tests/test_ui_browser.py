"""The review pages and the operator console in a real browser (issue 13).

Playwright for Python (pinned) drives Debian's `chromium` (never `playwright install`) against a
real `radbridge serve` (embedded Redis, SQLite, a worker, RADBRIDGE_STAGE=rules) that delivers
to the real test FHIR server (`tests/helpers/fhir_server.py`). A reviewer signs in, opens the worklist
and a report, sees the highlighted evidence, accepts one value, corrects another and rejects a
third, and sees the side and grade of a knee radiograph's finding next to its value; the Observations, their versions and Provenance are then checked through `GET /fhir/...`
and on the EHR server. An operator requeues a dead letter and never sees report text.

Screenshots for the README: `RADBRIDGE_UI_SCREENSHOTS=docs pytest tests/test_ui_browser.py`
writes `docs/ui-review.png` and `docs/ui-console.png` (not on ordinary runs; `tests.browser.shoot`).
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


def _knee_message() -> bytes:
    """A left knee radiograph with a graded finding (side and grade on the review page), made
    from the chest CT fixture's header and order with another patient, order and exam."""
    msh, pid, obr = (HL7_DIR / "chest_ct.hl7").read_bytes().decode().splitlines()[:3]
    lines = [
        msh.replace("|CT0001|", "|XR0001|"),
        pid.replace("MRN0001", "MRN0002").replace("ALPHA", "BETA"),
        obr.replace("PL1001", "PL2001").replace("ACC1001", "ACC2001")
        .replace("24627-2^Chest CT^LN", "^XR KNEE LEFT").replace("|CT|", "|CR|")
        .replace("CHEST", "KNEE"),
        "OBX|1|ST|59776-5^Findings^LN|1|XR KNEE LEFT, AP AND LATERAL:||||||F",
        "OBX|2|ST|59776-5^Findings^LN|1|Moderate osteoarthritis, Kellgren-Lawrence grade 3."
        "||||||F",
        "OBX|3|ST|59776-5^Findings^LN|1|No fracture.||||||F",
    ]  # fmt: skip
    return "\r".join(lines).encode()


def _wait(what: str, check: Callable[[], Any], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, FhirServer]]:
    root = tmp_path_factory.mktemp("ui")
    users = root / "users"
    add_user(users, *REVIEWER[:1], "reviewer", REVIEWER[1])
    add_user(users, *OPERATOR[:1], "operator", OPERATOR[1])
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
            bodies = [
                (HL7_DIR / n).read_bytes().strip() for n in ("chest_ct.hl7", "bad_no_narrative.hl7")
            ]
            for body in [*bodies, _knee_message()]:
                answer = httpx.post(f"{running.http}/hl7v2", content=body, timeout=30)
                assert answer.status_code == 200, answer.text
            _wait(
                "the reports to be delivered and the bad one to go dead",
                lambda: (
                    httpx.get(f"{running.http}/jobs/1").json()["state"] == "delivered"
                    and httpx.get(f"{running.http}/jobs/2").json()["state"] == "dead"
                    and httpx.get(f"{running.http}/jobs/3").json()["state"] == "delivered"
                ),
            )
            yield running, fhir
    finally:
        fhir.stop()
    log = (root / "serve.log").read_text()
    assert "TESTPATIENT" not in log and "MRN0001" not in log  # no names or identifiers logged


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched("the browser UI tests") as opened:
        yield opened


def test_reviewer_accepts_corrects_and_rejects(
    service: tuple[Service, FhirServer], browser: Any
) -> None:
    running, fhir = service
    page = sign_in(browser, running.http, REVIEWER, accept_dialogs=True)
    page.goto(f"{running.http}/ui/review")
    page.locator("table.list tr", has_text="ACC1001").locator("a").first.click()  # the chest CT
    page.wait_for_url("**/ui/reports/**")
    report_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    marks = page.locator("mark[data-evidence]")
    assert marks.count() >= 3
    rows = page.locator("article[data-observation]")
    ids = [rows.nth(i).get_attribute("data-observation") for i in range(rows.count())]
    first, second, third = ids[:3]
    # hovering a value lights its evidence span in the report text
    page.locator(f'article[data-observation="{first}"] h3').hover()
    lit = page.locator(f'mark.lit[data-evidence~="{first}"]')
    assert lit.count() >= 1
    shoot(page, "ui-review.png")
    before = httpx.get(f"{running.http}/fhir/Observation/{second}").json()
    was_present = before["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    corrected_to = "absent" if was_present else "present"

    row = page.locator(f'article[data-observation="{first}"]')
    row.get_by_role("button", name="Accept", exact=True).click()
    page.wait_for_load_state()
    row = page.locator(f'article[data-observation="{second}"]')
    row.get_by_label("Value").select_option(corrected_to)
    row.get_by_role("button", name="Correct", exact=True).click()
    page.wait_for_load_state()
    row = page.locator(f'article[data-observation="{third}"]')
    row.get_by_role("button", name="Reject", exact=True).click()
    page.wait_for_load_state()
    assert "Saved: reject" in page.content()

    api = running.http
    accepted = httpx.get(f"{api}/fhir/Observation/{first}").json()
    assert accepted["status"] == "final" and accepted["meta"]["versionId"] == "2"
    corrected = httpx.get(f"{api}/fhir/Observation/{second}").json()
    expected_code = "2667000" if corrected_to == "absent" else "52101004"
    assert corrected["status"] == "final"
    assert corrected["valueCodeableConcept"]["coding"][0]["code"] == expected_code
    evidence = next(
        e for e in corrected["extension"] if e["url"].endswith("/StructureDefinition/evidence")
    )
    ai = [s for s in evidence["extension"] if s["url"] == "ai-value"]
    assert ai == [{"url": "ai-value", "valueCodeableConcept": before["valueCodeableConcept"]}]
    assert corrected["meta"]["security"][0]["code"] == "AIAST"
    assert corrected.get("bodySite") == before.get("bodySite")  # the location was preselected
    rejected = httpx.get(f"{api}/fhir/Observation/{third}").json()
    assert rejected["status"] == "entered-in-error"
    old = httpx.get(f"{api}/fhir/Observation/{first}/_history/1").json()
    assert old["status"] == "preliminary"
    for oid in (first, second, third):
        found = httpx.get(f"{api}/fhir/Provenance", params={"target": f"Observation/{oid}"}).json()
        verify = [e["resource"] for e in found["entry"] if "activity" in e["resource"]]
        assert len(verify) == 1 and verify[0]["activity"]["text"] == "VERIFY"
        assert verify[0]["target"] == [{"reference": f"Observation/{oid}/_history/2"}]
        assert verify[0]["agent"][0]["who"]["display"] == REVIEWER[0]
    # the EHR received the new versions with the same ids
    _wait(
        "the EHR to receive the decisions",
        lambda: (
            fhir.resources.get(f"Observation/{first}", {}).get("status") == "final"
            and fhir.resources.get(f"Observation/{second}", {}).get("status") == "final"
            and fhir.resources.get(f"Observation/{third}", {}).get("status") == "entered-in-error"
        ),
        60,
    )
    assert any(
        r.get("resourceType") == "Provenance" and r.get("activity", {}).get("text") == "VERIFY"
        for r in fhir.resources.values()
    )
    # a decision made on a page loaded before someone else decided: refused, nothing changed
    fourth = ids[3]
    stale_page = sign_in(browser, running.http, REVIEWER, accept_dialogs=True)
    stale_page.goto(f"{running.http}/ui/reports/{report_id}")
    page.goto(f"{running.http}/ui/reports/{report_id}")
    page.locator(f'article[data-observation="{fourth}"]').get_by_role(
        "button", name="Reject", exact=True
    ).click()
    page.wait_for_load_state()
    stale_page.locator(f'article[data-observation="{fourth}"]').get_by_role(
        "button", name="Accept", exact=True
    ).click()
    stale_page.wait_for_load_state()
    assert "changed since the page was loaded" in stale_page.content()
    still = httpx.get(f"{api}/fhir/Observation/{fourth}").json()
    assert still["status"] == "entered-in-error" and still["meta"]["versionId"] == "2"


def test_the_review_page_shows_the_side_and_the_grade_of_each_value(
    service: tuple[Service, FhirServer], browser: Any
) -> None:
    running, _ = service
    page = sign_in(browser, running.http, REVIEWER)
    page.goto(f"{running.http}/ui/review")
    page.locator("table.list tr", has_text="ACC2001").locator("a").first.click()
    page.wait_for_url("**/ui/reports/**")
    row = page.locator("article[data-observation]", has_text="Osteoarthritis")
    side = row.locator("dd.laterality")
    assert side.inner_text().split()[0] == "left"  # next to the value, as the report states it
    assert "7771000" in str(side.text_content())  # its code, behind the codes toggle
    value = str(row.locator("dd.value").text_content())
    assert "Kellgren-Lawrence grade 3" in value and "Severity Moderate" in value
    # a finding stated absent has no side
    absent = page.locator("article[data-observation]", has_text="Fracture")
    assert absent.locator("dd.laterality").count() == 0


def test_operator_requeues_a_dead_letter_and_sees_no_report_text(
    service: tuple[Service, FhirServer], browser: Any
) -> None:
    running, _ = service
    page = sign_in(browser, running.http, OPERATOR, accept_dialogs=True)
    page.goto(f"{running.http}/ui/messages")
    content = page.content()
    assert "CT0001" in content or "chest_ct" in content
    shoot(page, "ui-console.png")
    segments = (HL7_DIR / "chest_ct.hl7").read_text().replace("\r", "\n").splitlines()
    narrative = " ".join(s.split("|")[5] for s in segments if s.startswith("OBX|"))
    words = [w for w in narrative.split() if len(w) > 6 and w.isalpha()]
    assert words and not any(w in content for w in words[:10])
    page.get_by_role("link", name="1", exact=True).click()  # message 1's detail
    detail = page.content()
    assert "State history" in detail and "delivered" in detail and "MSA" in detail
    assert not any(w in detail for w in words[:10])
    page.goto(f"{running.http}/ui/reports/any")
    assert "reviewer role" in page.content()
    page.goto(f"{running.http}/ui/dead-letters")
    page.get_by_role("button", name="Requeue message 2").click()
    page.wait_for_load_state()
    assert "Requeued: 2" in page.content()
    history = httpx.get(f"{running.http}/jobs/2").json()
    assert history["state"] in ("accepted", "processing", "dead")
