"""Clinician review without a browser (issue 13): Observation versions, decisions, Provenance,
optimistic concurrency, corrections outside the template's options, CSRF, roles, users file.

Real parts: a SQLite (and PostgreSQL where configured) store, the real extraction of a fixture
report (RADBRIDGE_STAGE=rules), the FastAPI app through Starlette's TestClient.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.errors import ConfigError
from adapter.reviews import report_observations, save_review
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from adapter.ui.auth import add_user, read_users
from conformance.validate import validate_resource
from mappings.review import (
    Correction,
    Decision,
    ReviewConflict,
    Reviewer,
    ReviewRefused,
    evidence,
    review,
)
from mappings.template import load_builtin_templates
from tests.stores import KINDS, data_dir, open_store

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"


def _extract(store: Store, settings: Settings) -> tuple[int, str]:
    """Store and extract the chest CT fixture in-process (rules stage); (message id, report id)."""
    from workers.tasks import process_message

    raw = (HL7_DIR / "chest_ct.hl7").read_bytes().strip()
    message_id = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "CT0001")).message_id
    bundle_ids = process_message(store, settings, message_id)
    assert bundle_ids
    bundle = store.get_bundle(bundle_ids[0])
    assert bundle is not None
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    return message_id, str(report["id"])


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(data_dir=data_dir(tmp_path), stage="rules", **extra)  # type: ignore[arg-type]


def _by_type(store: Store, report_id: str) -> dict[str, list[dict[str, Any]]]:
    """The report's Observations grouped by variable type (presence / ordinal / ...)."""
    templates = load_builtin_templates()
    grouped: dict[str, list[dict[str, Any]]] = {}
    for stored in report_observations(store, report_id):
        subs = evidence(stored.body)
        template = templates[str(subs["template"][0]).split("|")[0]]
        variable = template.variable(str(subs["variable"][0]))
        grouped.setdefault(variable.type.value, []).append(stored.body)
    return grouped


@pytest.mark.parametrize("kind", KINDS)
def test_decisions_make_versions_and_provenance(tmp_path: Path, kind: str) -> None:
    settings = _settings(tmp_path)
    with open_store(kind, settings) as store:
        message_id, report_id = _extract(store, settings)
        observations = [o.body for o in report_observations(store, report_id)]
        assert len(observations) >= 3, "the fixture gives at least three values"
        template = load_builtin_templates()["chest_ct"]
        first, second, third = observations[:3]
        reviewer = Reviewer("dr.review")
        decisions = [
            (first, Decision.ACCEPT, None),
            (second, Decision.CORRECT, Correction(status="uncertain")),
            (third, Decision.REJECT, None),
        ]
        for body, decision, correction in decisions:
            result = review(
                body,
                template,
                decision,
                reviewer,
                new_version=2,
                correction=correction,
                report=f"DiagnosticReport/{report_id}",
            )
            bundle_id = save_review(
                store,
                result,
                expected_version=1,
                reviewer=reviewer.username,
                decision=decision.value,
            )
            delivered = store.get_bundle(bundle_id)  # what the EHR gets: valid R4
            assert [p for p in validate_resource(delivered) if p.severity == "error"] == []
        client = TestClient(create_app(settings, store))
        accepted = client.get(f"/fhir/Observation/{first['id']}").json()
        assert accepted["status"] == "final" and accepted["meta"]["versionId"] == "2"
        assert accepted["meta"]["security"][0]["code"] == "AIAST"
        old = client.get(f"/fhir/Observation/{first['id']}/_history/1").json()
        assert old["status"] == "preliminary" and old["meta"]["versionId"] == "1"
        corrected = client.get(f"/fhir/Observation/{second['id']}").json()
        assert corrected["status"] == "final"
        assert corrected["valueCodeableConcept"]["coding"][0]["code"] == "42425007"  # Equivocal
        ai_value = evidence(corrected)["ai-value"][0]
        assert ai_value == second["valueCodeableConcept"]
        rejected = client.get(f"/fhir/Observation/{third['id']}").json()
        assert rejected["status"] == "entered-in-error"
        provenance = client.get(f"/fhir/Provenance?target=Observation/{first['id']}").json()
        activities = [e["resource"].get("activity", {}).get("text") for e in provenance["entry"]]
        assert "VERIFY" in activities and len(activities) == 2  # the AI's and the review's
        verify = next(e["resource"] for e in provenance["entry"] if "activity" in e["resource"])
        assert verify["target"] == [{"reference": f"Observation/{first['id']}/_history/2"}]
        assert verify["agent"][0]["who"]["display"] == "dr.review"
        assert verify["agent"][0]["who"]["reference"].startswith("Practitioner/")
        assert verify["recorded"]
        assert client.get(f"/fhir/Observation/{first['id']}/_history/3").status_code == 404
        trail = store.audit_trail(message_id)
        assert trail[-3:] == ["review_accept", "review_correct", "review_reject"]


def test_a_stale_version_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with open_store("sqlite", settings) as store:
        _, report_id = _extract(store, settings)
        body = report_observations(store, report_id)[0].body
        template = load_builtin_templates()["chest_ct"]
        first = review(body, template, Decision.ACCEPT, Reviewer("a"), new_version=2)
        save_review(
            store,
            first,
            expected_version=1,
            reviewer="a",
            decision="accept",
        )
        # a second reviewer decided on the page they loaded before: version 1
        late = review(body, template, Decision.REJECT, Reviewer("b"), new_version=2)
        with pytest.raises(ReviewConflict, match="changed since the page was loaded"):
            save_review(
                store,
                late,
                expected_version=1,
                reviewer="b",
                decision="reject",
            )
        stored = store.get_resource("Observation", body["id"], served=True)
        assert stored is not None
        assert stored["status"] == "final" and stored["meta"]["versionId"] == "2"


def test_a_correction_outside_the_template_options_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with open_store("sqlite", settings) as store:
        _, report_id = _extract(store, settings)
        body = report_observations(store, report_id)[0].body
        template = load_builtin_templates()["chest_ct"]
        with pytest.raises(ReviewRefused, match="not an option"):
            review(
                body,
                template,
                Decision.CORRECT,
                Reviewer("a"),
                new_version=2,
                correction=Correction(status="probably"),
            )
        with pytest.raises(ReviewRefused, match="not an option"):
            review(
                body,
                template,
                Decision.CORRECT,
                Reviewer("a"),
                new_version=2,
                correction=Correction(status="present", location="left_knee"),
            )


def test_a_re_extraction_with_a_new_body_is_a_new_version(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with open_store("sqlite", settings) as store:
        _, report_id = _extract(store, settings)
        stored = report_observations(store, report_id)[0]
        assert stored.version == 1
        bundle = store.get_bundle(stored.bundle_id)
        assert bundle is not None
        store.save_result(None, report_id, bundle)  # the same body: the same version
        assert report_observations(store, report_id)[0].version == 1
        for entry in bundle["entry"]:
            if entry["resource"]["id"] == stored.body["id"]:
                entry["resource"]["issued"] = "2030-01-01T00:00:00+00:00"
        store.save_result(None, report_id, bundle)
        assert report_observations(store, report_id)[0].version == 2


# -- the UI's forms without a browser ----------------------------------------------------------
def _ui(tmp_path: Path, **extra: Any) -> tuple[TestClient, Store, str, Settings]:
    settings = _settings(tmp_path, **extra)
    store = Store.open(settings)
    _, report_id = _extract(store, settings)
    return TestClient(create_app(settings, store)), store, report_id, settings


def _users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, "rita", "reviewer", "reviewer-password")
    add_user(path, "otto", "operator", "operator-password")
    return path


def _login(client: TestClient, name: str, password: str) -> None:
    form = client.get("/ui/login")  # the sign-in form's CSRF token (and its cookie)
    answer = client.post(
        "/ui/login",
        data={"username": name, "password": password, "next": "/ui", "csrf": _csrf(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_development_mode_is_open_and_says_so(tmp_path: Path) -> None:
    client, store, report_id, _ = _ui(tmp_path)
    page = client.get(f"/ui/reports/{report_id}")
    assert page.status_code == 200 and "DEVELOPMENT" in page.text
    assert "<mark data-evidence=" in page.text
    for name in ("Accept", "Correct", "Reject"):
        assert f">{name}</button>" in page.text
    store.close()


def test_forged_form_stale_version_and_missing_role_change_nothing(tmp_path: Path) -> None:
    users = _users(tmp_path)
    client, store, report_id, _ = _ui(tmp_path, ui_users_file=users, ui_session_secret="s" * 32)
    assert client.get("/ui/review", follow_redirects=False).status_code == 303  # to login
    _login(client, "rita", "reviewer-password")
    page = client.get(f"/ui/reports/{report_id}")
    assert page.status_code == 200 and "DEVELOPMENT" not in page.text
    oid = str(report_observations(store, report_id)[0].body["id"])
    url = f"/ui/reports/{report_id}/observations/{oid}"
    forged = client.post(url, data={"decision": "accept", "version": "1"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    stale = client.post(url, data={"decision": "accept", "version": "0", "csrf": _csrf(page.text)})
    assert stale.status_code == 409 and "changed since the page was loaded" in stale.text
    outside = client.post(
        url,
        data={"decision": "correct", "version": "1", "status": "maybe", "csrf": _csrf(page.text)},
    )
    assert outside.status_code == 422 and "not an option" in outside.text
    assert report_observations(store, report_id)[0].body["status"] == "preliminary"
    assert report_observations(store, report_id)[0].version == 1
    # an operator may not review, and sees no report text
    operator = TestClient(client.app)
    _login(operator, "otto", "operator-password")
    refused = operator.get(f"/ui/reports/{report_id}")
    assert refused.status_code == 403 and "reviewer role" in refused.text
    console = operator.get("/ui/messages")
    assert console.status_code == 200 and "CT0001" in console.text
    token = _csrf(console.text)
    no_role = operator.post(url, data={"decision": "accept", "version": "1", "csrf": token})
    assert no_role.status_code == 403 and "reviewer role" in no_role.text
    assert report_observations(store, report_id)[0].version == 1
    ok = client.post(url, data={"decision": "accept", "version": "1", "csrf": _csrf(page.text)})
    assert ok.status_code == 200 and report_observations(store, report_id)[0].version == 2
    store.close()


def test_wrong_password_and_users_file(tmp_path: Path) -> None:
    users = _users(tmp_path)
    assert set(read_users(users)) == {"rita", "otto"}
    assert "reviewer-password" not in users.read_text()
    client, store, _, _ = _ui(tmp_path, ui_users_file=users, ui_session_secret="s" * 32)
    token = _csrf(client.get("/ui/login").text)
    answer = client.post(
        "/ui/login", data={"username": "rita", "password": "nope-nope", "csrf": token}
    )
    assert answer.status_code == 401 and "Wrong user name or password" in answer.text
    with pytest.raises(ConfigError, match="role"):
        add_user(users, "x", "admin", "long-enough")
    store.close()


def test_production_refuses_the_ui_without_users(tmp_path: Path) -> None:
    settings = _settings(tmp_path, env="production", api_key="k")
    warnings = settings.check_production()
    assert any("RADBRIDGE_UI_USERS_FILE" in w for w in warnings)
    with pytest.raises(ConfigError, match="RADBRIDGE_UI_SESSION_SECRET"):
        _settings(
            tmp_path, env="production", api_key="k", ui_users_file=tmp_path / "u"
        ).check_production()
    store = Store.open(settings)
    page = TestClient(create_app(settings, store)).get("/ui/review")
    assert page.status_code == 503 and "RADBRIDGE_UI_USERS_FILE" in page.text
    store.close()


def test_accept_all_in_development_mode(tmp_path: Path) -> None:
    client, store, report_id, _ = _ui(tmp_path)
    page = client.get(f"/ui/reports/{report_id}")
    versions = dict(re.findall(r'name="v_([^"]+)" value="(\d+)"', page.text))
    assert len(versions) == len(report_observations(store, report_id))
    answer = client.post(
        f"/ui/reports/{report_id}/accept-all",
        data={"csrf": _csrf(page.text), **{f"v_{oid}": v for oid, v in versions.items()}},
    )
    assert answer.status_code == 200
    statuses = {o.body["status"] for o in report_observations(store, report_id)}
    assert statuses == {"final"}
    assert store.audit_trail(1)[-len(versions) :] == ["review_accept"] * len(versions)
    store.close()


def test_users_command_reads_the_password_from_stdin(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    path = tmp_path / "users"
    result = CliRunner().invoke(
        app,
        ["users", "add", "rita", "--role", "reviewer", "--password-stdin", "--file", str(path)],
        input="a-long-password\n",
    )
    assert result.exit_code == 0, result.output
    assert read_users(path)["rita"].role == "reviewer"
    refused = CliRunner().invoke(
        app,
        ["users", "add", "x", "--role", "root", "--password-stdin", "--file", str(path)],
        input="a-long-password\n",
    )
    assert refused.exit_code == 2 and "role" in refused.output


def test_worklist_filters_by_template_and_date(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from adapter.reviews import worklist
    from workers.tasks import process_message

    settings = _settings(tmp_path)
    with open_store("sqlite", settings) as store:
        _, ct_report = _extract(store, settings)
        raw = (HL7_DIR / "chest_xray.hl7").read_bytes().strip()
        xray = store.accept(Incoming(raw, "mllp", "RIS", "RBHOSP", "XR0002")).message_id
        assert process_message(store, settings, xray)
        everything = worklist(store)
        assert len(everything) == 2 and ct_report in {item.report_id for item in everything}
        only_ct = worklist(store, template="chest_ct")
        assert [item.report_id for item in only_ct] == [ct_report]
        assert only_ct[0].templates == ("chest_ct",) and only_ct[0].waiting >= 3
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert worklist(store, since=tomorrow) == []
        assert len(worklist(store, until=tomorrow)) == 2


def test_operator_requeues_dead_letters_one_and_all(tmp_path: Path) -> None:
    from workers.tasks import process_message

    client, store, _, settings = _ui(tmp_path)
    raw = (HL7_DIR / "bad_no_narrative.hl7").read_bytes().strip()
    dead = [
        store.accept(Incoming(raw + suffix, "mllp", "RIS", "RBHOSP", f"BAD{n}")).message_id
        for n, suffix in enumerate((b"", b"\r"))
    ]
    for message_id in dead:
        process_message(store, settings, message_id)
    assert [row.id for row in store.dead_letters()] == dead
    page = client.get("/ui/dead-letters")
    assert page.status_code == 200 and "Requeue selected" in page.text
    one = client.post(f"/ui/dead-letters/{dead[0]}/requeue", data={"csrf": _csrf(page.text)})
    assert one.status_code == 200 and "Requeued" in one.text
    again = client.post(f"/ui/dead-letters/{dead[0]}/requeue", data={"csrf": _csrf(page.text)})
    assert again.status_code == 409  # not dead any more: refused, nothing changed
    everyone = client.post("/ui/dead-letters/requeue", data={"csrf": _csrf(page.text), "all": "1"})
    assert everyone.status_code == 200 and store.dead_letters() == []
    assert store.audit_trail(dead[1])[-2:] == ["accepted", "requeued_by_operator"]
    store.close()
