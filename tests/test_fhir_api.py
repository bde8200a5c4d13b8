"""The FHIR API a consumer pulls from (issue 19 item 5), over real SQLite and PostgreSQL stores
through FastAPI's test client: search by status, category, code, subject/patient, date,
_lastUpdated and identifier with FHIR's semantics, paging, strict and lenient handling, read,
vread and instance history of every type served, absolute fullUrls, and a CapabilityStatement
generated from the routes served (validated by fhir.resources and the official R4 schema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.reviews import save_review
from adapter.settings import Settings
from adapter.store import Store
from mappings.review import Decision, Reviewer, review
from tests.helpers.routes import api_routes
from tests.stores import KINDS, data_dir, open_store

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = json.loads((FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
EFFUSION = "http://snomed.info/sct|60046008"
STRICT = {"Prefer": "handling=strict"}


def report_bundle(key: str, patient: str, effective: str) -> dict[str, Any]:
    """The golden chest CT Bundle under other ids: report `key` of Patient/`patient`."""
    bundle = copy.deepcopy(GOLDEN)
    renamed = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Device":
            continue
        new_id = patient if resource["resourceType"] == "Patient" else f"{key}-{resource['id'][:8]}"
        renamed[f"{resource['resourceType']}/{resource['id']}"] = (
            f"{resource['resourceType']}/{new_id}"
        )
        resource["id"] = new_id
        entry["request"]["url"] = f"{resource['resourceType']}/{new_id}"
    text = json.dumps(bundle)
    for old, new in renamed.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    bundle = json.loads(text)
    bundle["id"] = f"bundle-{key}"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if "effectiveDateTime" in resource:
            resource["effectiveDateTime"] = effective
        if resource["resourceType"] == "DiagnosticReport":
            resource["identifier"][0]["value"] = f"ACC-{key}"
            resource["identifier"].append({"system": "urn:oid:1.2.3", "value": f"RIS-{key}"})
    return bundle


def resources_of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def accept(store: Store, observation: dict[str, Any]) -> None:
    """A clinician accepts one Observation (version 1 -> 2, final, with its Provenance)."""
    result = review(observation, None, Decision.ACCEPT, Reviewer("dr.a"), new_version=2)
    save_review(store, result, expected_version=1, reviewer="dr.a", decision="accept")


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Two patients, three reports (2026-11-01, 2026-11-20, 2027-01-05); two values accepted."""
    settings = Settings(data_dir=data_dir(tmp_path), source_timezone="Europe/Amsterdam")  # type: ignore[arg-type]
    with open_store(request.param, settings) as store:
        bundles = {
            "r1": report_bundle("r1", "pat-a", "2026-11-01T08:45:00Z"),
            "r2": report_bundle("r2", "pat-a", "2026-11-20T23:30:00Z"),
            "r3": report_bundle("r3", "pat-b", "2027-01-05T10:00:00+01:00"),
        }
        for key, bundle in bundles.items():
            store.save_bundle(None, key, bundle)
        observations = resources_of(bundles["r1"], "Observation")
        accept(store, observations[0])
        accept(store, observations[1])
        yield TestClient(create_app(settings, store)), store, bundles


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def search(
    client: TestClient, path: str, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, Any]:
    headers = STRICT if headers is None else headers
    response = client.get(f"/fhir/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def test_status_final_returns_only_reviewed_values_and_says_so_in_the_self_link(
    served: Any,
) -> None:
    """The issue's defect: `status=final` returned every Observation and echoed the filter."""
    client, _, bundles = served
    accepted = {o["id"] for o in resources_of(bundles["r1"], "Observation")[:2]}
    final = search(client, "Observation", status="final")
    assert final["total"] == 2 and ids(final) == accepted
    assert all(e["resource"]["status"] == "final" for e in final["entry"])
    assert ("status", "final") in parse_qsl(urlsplit(final["link"][0]["url"]).query)
    preliminary = search(client, "Observation", status="preliminary")
    assert preliminary["total"] == 3 * 5 - 2 and not ids(preliminary) & accepted
    both = search(client, "Observation", status="final,preliminary")
    assert both["total"] == 15
    system = search(client, "Observation", status="http://hl7.org/fhir/observation-status|final")
    assert ids(system) == accepted
    assert search(client, "Observation", status="http://other.example|final")["total"] == 0
    assert ids(search(client, "Observation", **{"status:not": "preliminary"})) == accepted


def test_a_misspelt_parameter_is_refused_when_strict_else_ignored_and_left_out_of_the_self_link(
    served: Any,
) -> None:
    client, _, _ = served
    refused = client.get("/fhir/Observation", params={"stauts": "final"}, headers=STRICT)
    assert refused.status_code == 400
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert (
        outcome["issue"][0]["code"] == "not-supported"
        and "stauts" in outcome["issue"][0]["diagnostics"]
    )
    lenient = search(client, "Observation", headers={}, stauts="final")
    assert lenient["total"] == 15  # ignored, as FHIR's lenient handling does ...
    assert "stauts" not in lenient["link"][0]["url"]  # ... and the self link says so
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    unsupported_modifier = client.get("/fhir/Observation", params={"status:text": "final"})
    assert unsupported_modifier.status_code == 400  # never ignored: it would widen the search


def test_code_category_and_subject_or_patient(served: Any) -> None:
    client, _, bundles = served
    effusions = {
        o["id"]
        for b in bundles.values()
        for o in resources_of(b, "Observation")
        if o.get("code", {}).get("coding", [{}])[0].get("code") == "60046008"
    }
    assert ids(search(client, "Observation", code=EFFUSION)) == effusions
    assert ids(search(client, "Observation", code="60046008")) == effusions
    assert search(client, "Observation", code="|60046008")["total"] == 0  # a system it has
    assert search(client, "Observation", code="http://snomed.info/sct|")["total"] == 3 * 4
    assert search(client, "Observation", code="%")["total"] == 0
    imaging = "http://terminology.hl7.org/CodeSystem/observation-category|imaging"
    assert search(client, "Observation", category=imaging)["total"] == 15
    pat_a = search(client, "Observation", subject="Patient/pat-a")
    assert pat_a["total"] == 10
    assert search(client, "Observation", patient="pat-a")["total"] == 10
    assert search(client, "Observation", **{"subject:Patient": "pat-b"})["total"] == 5
    assert search(client, "Observation", subject="pat-b")["total"] == 5
    absolute = search(client, "Observation", patient="http://testserver/fhir/Patient/pat-b")
    assert absolute["total"] == 5
    both = search(client, "Observation", patient="pat-a", code=EFFUSION)  # AND
    assert both["total"] == 2
    bad = client.get("/fhir/Observation", params={"patient": "Group/g"}, headers=STRICT)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("date", "reports"),
    [
        ("2026-11", {"r1", "r2"}),
        ("2026-11-01", {"r1"}),
        ("2026-11-21", {"r2"}),  # 23:30 UTC is the 21st in Amsterdam, the hospital's zone
        ("2026-11-20T23:30:00Z", {"r2"}),
        ("ge2026-11-20", {"r2", "r3"}),
        ("gt2026-11", {"r3"}),
        ("lt2026-11-21", {"r1"}),
        ("le2026-11-21", {"r1", "r2"}),
        ("ne2026-11", {"r3"}),
        ("sa2026-11-01", {"r2", "r3"}),
        ("eb2027", {"r1", "r2"}),
        ("2027-01-05T10:00:00+01:00", {"r3"}),
        ("2025", set()),
    ],
)
def test_date_prefixes_and_partial_dates(served: Any, date: str, reports: set[str]) -> None:
    client, _, bundles = served
    found = search(client, "Observation", date=date, _count=100)
    expected = {o["id"] for r in reports for o in resources_of(bundles[r], "Observation")}
    assert ids(found) == expected
    dr = search(client, "DiagnosticReport", date=date)
    assert ids(dr) == {
        d["id"] for r in reports for d in resources_of(bundles[r], "DiagnosticReport")
    }


def test_a_time_zone_plus_sent_unencoded_is_read_back(served: Any) -> None:
    client, _, bundles = served
    response = client.get("/fhir/DiagnosticReport?date=2027-01-05T10:00:00+01:00", headers=STRICT)
    assert response.status_code == 200
    assert ids(response.json()) == {resources_of(bundles["r3"], "DiagnosticReport")[0]["id"]}


def test_repeated_date_is_a_range_and_last_updated_works(served: Any) -> None:
    client, _, _ = served
    november = client.get(
        "/fhir/Observation?date=ge2026-11-01&date=lt2026-12-01&_count=0", headers=STRICT
    ).json()
    assert november["total"] == 10 and "entry" not in november
    assert search(client, "Observation", _lastUpdated="ge2000-01-01")["total"] == 15
    assert search(client, "Observation", _lastUpdated="lt2000")["total"] == 0
    bad = client.get("/fhir/Observation", params={"_lastUpdated": "yesterday"}, headers=STRICT)
    assert bad.status_code == 400


def test_diagnostic_report_search_and_read(served: Any) -> None:
    client, _, bundles = served
    r1 = resources_of(bundles["r1"], "DiagnosticReport")[0]
    assert ids(search(client, "DiagnosticReport", identifier="ACC-r1")) == {r1["id"]}
    assert ids(search(client, "DiagnosticReport", identifier="|ACC-r1")) == {r1["id"]}
    assert ids(search(client, "DiagnosticReport", identifier="urn:oid:1.2.3|RIS-r1")) == {r1["id"]}
    assert search(client, "DiagnosticReport", identifier="urn:oid:9|RIS-r1")["total"] == 0
    assert search(client, "DiagnosticReport", patient="pat-a", status="final")["total"] == 2
    assert search(client, "DiagnosticReport", code="http://loinc.org|24627-2")["total"] == 3
    observation = resources_of(bundles["r1"], "Observation")[2]
    assert ids(search(client, "DiagnosticReport", result=f"Observation/{observation['id']}")) == {
        r1["id"]
    }
    read = client.get(f"/fhir/DiagnosticReport/{r1['id']}")
    assert read.status_code == 200 and read.json()["identifier"] == r1["identifier"]
    assert read.headers["etag"] == 'W/"1"' and read.headers["last-modified"].endswith("GMT")


def test_every_type_delivered_is_read_and_searched(served: Any) -> None:
    client, _, bundles = served
    bundle = bundles["r1"]
    for kind in ("Patient", "Device", "Provenance", "DiagnosticReport", "Observation"):
        resource = resources_of(bundle, kind)[0]
        read = client.get(f"/fhir/{kind}/{resource['id']}")
        assert read.status_code == 200, kind
        assert search(client, kind, _id=resource["id"])["total"] == 1, kind
    device = resources_of(bundle, "Device")[0]
    assert ids(
        search(
            client, "Device", identifier=f"https://radbridge.org/fhir/sid/model-sha256|{'0' * 64}"
        )
    ) == {device["id"]}
    assert ids(search(client, "Patient", identifier="MRN0001")) == {"pat-a", "pat-b"}
    first = resources_of(bundle, "Observation")[0]
    provenances = search(client, "Provenance", target=f"Observation/{first['id']}")
    assert len(provenances["entry"]) == 2  # the extraction's and the clinician's (version 2)
    verify = search(
        client,
        "Provenance",
        target=f"Observation/{first['id']}",
        agent="Practitioner/" + Reviewer("dr.a").practitioner_id,
    )
    assert verify["total"] == 1
    assert verify["entry"][0]["resource"]["target"] == [
        {"reference": f"Observation/{first['id']}/_history/2"}
    ]
    assert search(client, "Provenance", recorded="ge2000")["total"] == 3 + 2
    assert client.get("/fhir/Practitioner/x").status_code == 404  # not served: says so
    assert client.get("/fhir/Observation/nope").status_code == 404


def test_paging_with_next_links_and_a_true_total(served: Any) -> None:
    client, _, _ = served
    seen: list[str] = []
    page = search(client, "Observation", _count=4, _sort="-date")
    pages = 1
    while True:
        assert page["total"] == 15 and len(page["entry"]) <= 4
        seen += [e["resource"]["id"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        assert following[0].startswith("http://testserver/fhir/Observation?")
        page = client.get(following[0], headers=STRICT).json()
        pages += 1
    assert pages == 4 and len(seen) == len(set(seen)) == 15
    dates = [client.get(f"/fhir/Observation/{i}").json()["effectiveDateTime"] for i in seen]
    assert dates[0].startswith("2027") and dates[-1].startswith("2026-11-01")


def test_history_and_vread_of_a_reviewed_observation(served: Any) -> None:
    client, _, bundles = served
    first = resources_of(bundles["r1"], "Observation")[0]
    history = client.get(f"/fhir/Observation/{first['id']}/_history").json()
    assert history["type"] == "history" and history["total"] == 2
    newest, oldest = history["entry"]
    assert newest["resource"]["status"] == "final" and newest["response"]["etag"] == 'W/"2"'
    assert (
        oldest["resource"]["status"] == "preliminary"
        and oldest["response"]["status"] == "201 Created"
    )
    assert newest["fullUrl"] == f"http://testserver/fhir/Observation/{first['id']}"
    assert (
        client.get(f"/fhir/Observation/{first['id']}/_history/1").json()["status"] == "preliminary"
    )
    assert client.get(f"/fhir/Observation/{first['id']}/_history/3").status_code == 404
    assert client.get(f"/fhir/Observation/{first['id']}/_history/x").status_code == 404
    assert client.get("/fhir/Observation/nope/_history").status_code == 404
    patient = client.get("/fhir/Patient/pat-a/_history").json()
    assert patient["total"] == 1 and patient["entry"][0]["resource"]["meta"]["versionId"] == "1"


def test_a_superseding_report_makes_a_new_version_of_the_diagnostic_report(served: Any) -> None:
    client, store, bundles = served
    corrected = copy.deepcopy(bundles["r3"])
    report = resources_of(corrected, "DiagnosticReport")[0]
    report["status"] = "corrected"
    store.save_bundle(None, "r3", corrected)
    history = client.get(f"/fhir/DiagnosticReport/{report['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["corrected", "final"]
    assert search(client, "DiagnosticReport", status="corrected")["total"] == 1


def test_full_urls_are_absolute_from_the_request_or_the_public_url(
    served: Any, tmp_path: Path
) -> None:
    client, store, _ = served
    found = search(client, "Patient")
    assert {e["fullUrl"] for e in found["entry"]} == {
        "http://testserver/fhir/Patient/pat-a",
        "http://testserver/fhir/Patient/pat-b",
    }
    proxied = Settings(data_dir=data_dir(tmp_path), public_url="https://rb.hospital.example/")  # type: ignore[arg-type]
    behind = TestClient(create_app(proxied, store)).get("/fhir/Patient?_count=1").json()
    assert behind["entry"][0]["fullUrl"].startswith("https://rb.hospital.example/fhir/Patient/")
    assert behind["link"][1]["url"].startswith("https://rb.hospital.example/fhir/Patient?")


def test_post_search_format_and_pretty(served: Any) -> None:
    client, _, _ = served
    posted = client.post(
        "/fhir/Observation/_search",
        content="status=final&_count=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", **STRICT},
    )
    assert posted.status_code == 200 and posted.json()["total"] == 2
    assert len(posted.json()["entry"]) == 1
    assert client.post("/fhir/Observation/_search", json={}).status_code == 415
    assert client.get("/fhir/Observation?_format=xml").status_code == 406
    pretty = client.get("/fhir/Patient/pat-a?_format=json&_pretty=true")
    assert pretty.status_code == 200 and pretty.text.startswith('{\n  "')


def test_the_capability_statement_is_generated_from_the_routes_served(served: Any) -> None:
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    client, _, _ = served
    response = client.get("/fhir/metadata", headers={"X-API-Key": ""})
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)  # the R4B model (R4-compatible here)
    assert statement["kind"] == "instance" and statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    declared = {
        (r["type"], i["code"]) for r in statement["rest"][0]["resource"] for i in r["interaction"]
    }
    served_routes = set()
    for route in api_routes(client.app.routes):  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        parts = path.split("/")
        if not path.startswith("/fhir/") or parts[2] == "metadata" or len(parts) < 3:
            continue
        methods = getattr(route, "methods", set())
        if parts[-1] == "_search" or (len(parts) == 3 and "GET" in methods):
            served_routes.add((parts[2], "search-type"))
        elif len(parts) == 3 and "POST" in methods:
            served_routes.add((parts[2], "create"))
        elif len(parts) == 4:
            served_routes.add((parts[2], "read"))
        elif len(parts) == 5:
            served_routes.add((parts[2], "history-instance"))
        elif len(parts) == 6:
            served_routes.add((parts[2], "vread"))
    assert declared == served_routes
    kinds = {"Observation", "DiagnosticReport", "Provenance", "Device", "Patient"}
    assert {kind for kind, _ in declared} == kinds  # every type radbridge delivers
    assert len(declared) == len(kinds) * 4 + 1  # search, read, history, vread; + create
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        for param in resource.get("searchParam", []):  # every declared parameter is served
            value = {"date": "ge2000", "token": "x", "reference": "x"}[param["type"]]
            answer = client.get(
                f"/fhir/{resource['type']}", params={param["name"]: value}, headers=STRICT
            )
            assert answer.status_code == 200, (resource["type"], param["name"], answer.text)
            checked += 1
    assert checked == 11 + 10 + 6 + 3 + 3


def test_the_capability_statement_is_valid_r4(served: Any) -> None:
    from conformance.errors import SchemaUnavailable
    from conformance.validate import find_schema, validate_resource

    try:
        find_schema()
    except SchemaUnavailable as exc:
        pytest.skip(f"the official R4 JSON schema is not here: {exc}")
    client, _, _ = served
    for path in ("metadata", "Observation?status=final", "Observation/nope-not-found"):
        body = client.get(f"/fhir/{path}").json()
        assert [p for p in validate_resource(body) if p.severity == "error"] == [], path
    first = client.get("/fhir/Observation?status=final").json()["entry"][0]["resource"]
    history = client.get(f"/fhir/Observation/{first['id']}/_history").json()
    assert [p for p in validate_resource(history) if p.severity == "error"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_migration_0005_indexes_what_was_stored_before_it(kind: str, tmp_path: Path) -> None:
    """A store from before the index (revision 0004: no search_tokens, no date columns, no
    ack_generations) is upgraded and its resources become searchable."""
    from importlib.resources import files

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from adapter.store.connection import run_migrations

    settings = Settings(data_dir=data_dir(tmp_path))  # type: ignore[arg-type]
    with open_store(kind, settings) as store:
        store.save_bundle(None, "r1", report_bundle("r1", "pat-a", "2026-11-01T08:45:00Z"))
        with store.engine.begin() as connection:  # back to what 0004 left
            for index in (
                "ix_resources_date",
                "ix_resources_date_end",
                "ix_resources_status",
                "ix_resources_updated",
            ):
                connection.execute(sa.text(f"DROP INDEX {index}"))
            connection.execute(sa.text("DROP TABLE search_tokens"))
            connection.execute(sa.text("DROP TABLE ack_generations"))
            connection.execute(sa.text("ALTER TABLE resources DROP COLUMN date_start"))
            connection.execute(sa.text("ALTER TABLE resources DROP COLUMN date_end"))
            config = Config()
            config.set_main_option("script_location", str(files("adapter") / "migrations"))
            config.attributes["connection"] = connection
            command.stamp(config, "0004_delivered_resources")
        run_migrations(store.engine)
        client = TestClient(create_app(settings, store))
        assert search(client, "Observation", code=EFFUSION, date="2026-11-01")["total"] == 1
        assert search(client, "DiagnosticReport", identifier="ACC-r1")["total"] == 1
        assert client.post("/hl7v2", content=b"junk").status_code == 400  # ACK ids work again


def test_metadata_is_open_and_everything_else_needs_the_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=data_dir(tmp_path), api_key="k3y")  # type: ignore[arg-type]
    store = Store.open(settings)
    try:
        client = TestClient(create_app(settings, store))
        metadata = client.get("/fhir/metadata")
        assert metadata.status_code == 200
        assert "X-API-Key" in metadata.json()["rest"][0]["security"]["description"]
        for path in ("/fhir/Observation", "/fhir/Patient/x", "/fhir/Device/x/_history"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "k3y"}).status_code in (200, 404)
    finally:
        store.close()
