"""adapter/api (its routers) over a real store, through FastAPI's test client (HTTP semantics, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.settings import Settings
from adapter.store import Store

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TestClient, Store, list[int]]:
    settings = Settings(data_dir=tmp_path, api_key="k3y", http_max_body_bytes=64 * 1024)  # type: ignore[arg-type]
    store = Store.open(settings)
    accepted: list[int] = []
    client = TestClient(
        create_app(settings, store, on_accepted=accepted.append), raise_server_exceptions=False
    )
    client.headers["X-API-Key"] = "k3y"
    return client, store, accepted


def test_auth_required_when_configured(setup: tuple[TestClient, Store, list[int]]) -> None:
    client, _, _ = setup
    response = client.get("/jobs/1", headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (
        client.get("/jobs/1", headers={"X-API-Key": "", "Authorization": "Bearer k3y"}).status_code
        == 404
    )
    assert client.get("/healthz", headers={"X-API-Key": ""}).status_code == 200


def test_production_refuses_to_start_without_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`radbridge serve` checks the settings (once) before it builds the app."""
    from typer.testing import CliRunner

    from app import serve as serve_module
    from app.cli import app

    started: list[object] = []
    monkeypatch.setattr(serve_module, "run_services", lambda *a, **k: started.append(a))
    monkeypatch.delenv("RADBRIDGE_API_KEY", raising=False)
    monkeypatch.setenv("RADBRIDGE_ENV", "production")
    monkeypatch.setenv("RADBRIDGE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "RADBRIDGE_API_KEY" in result.output and started == []


def test_hl7v2_over_http(setup: tuple[TestClient, Store, list[int]]) -> None:
    client, _store, accepted = setup
    body = (FIXTURES / "hl7v2" / "chest_ct.hl7").read_bytes()
    first = client.post("/hl7v2", content=body)
    assert (
        first.status_code == 200 and b"MSA|CA|CT0001" in first.content
    )  # enhanced mode (MSH-15 AL)
    again = client.post("/hl7v2", content=body)
    assert again.content == first.content and len(accepted) == 1
    bad = client.post("/hl7v2", content=(FIXTURES / "hl7v2" / "bad_not_oru.hl7").read_bytes())
    assert bad.status_code == 400 and b"MSA|AR|BAD0001" in bad.content and b"ERR|" in bad.content


def test_fhir_report_accepted_as_job(setup: tuple[TestClient, Store, list[int]]) -> None:
    client, _store, accepted = setup
    body = (FIXTURES / "fhir" / "bundle_collection.json").read_bytes()
    response = client.post("/fhir", content=body)
    assert response.status_code == 202
    assert response.headers["location"] == f"/jobs/{accepted[0]}"
    job = client.get(response.headers["location"]).json()
    assert job["state"] == "accepted" and job["attempts"] == 0
    assert client.post("/fhir", content=body).status_code == 202 and len(accepted) == 1  # duplicate


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/fhir/DiagnosticReport", b"{not json", 400),
        ("/fhir/DiagnosticReport", json.dumps({"resourceType": "Patient"}).encode(), 400),
        ("/fhir/DiagnosticReport", (FIXTURES / "fhir" / "bad_pdf_only.json").read_bytes(), 422),
        ("/fhir", b"x" * (65 * 1024), 413),
    ],
)
def test_bad_input_is_an_operation_outcome(
    setup: tuple[TestClient, Store, list[int]], path: str, body: bytes, status: int
) -> None:
    client, _, accepted = setup
    response = client.post(path, content=body)
    assert response.status_code == status
    outcome = response.json()
    assert (
        outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    )
    assert accepted == []


def test_observations_served_for_pull(setup: tuple[TestClient, Store, list[int]]) -> None:
    client, store, _ = setup
    golden = json.loads((FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
    store.save_bundle(None, "CT0001-1", golden)
    observations = [
        e["resource"] for e in golden["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    result = client.get(
        "/fhir/Observation", params={"subject": observations[0]["subject"]["reference"]}
    ).json()
    assert result["type"] == "searchset" and result["total"] == len(observations)
    assert (
        client.get("/fhir/Observation", params={"code": "http://snomed.info/sct|36118008"}).json()[
            "total"
        ]
        == 1
    )
    assert client.get(
        "/fhir/Observation", params={"_lastUpdated": "ge2000-01-01T00:00:00Z"}
    ).json()["total"] == len(observations)
    assert client.get("/fhir/Observation", params={"_lastUpdated": "yesterday"}).status_code == 400
    one = client.get(f"/fhir/Observation/{observations[0]['id']}")
    served = one.json()
    assert served["meta"].pop("lastUpdated").endswith("Z")
    assert served["meta"].pop("versionId") == "1"  # the store keeps versions (issue 13)
    assert one.status_code == 200 and served == observations[0]
    assert client.get("/fhir/Observation/nope").status_code == 404


def test_health_metrics_and_openapi(setup: tuple[TestClient, Store, list[int]]) -> None:
    client, _, _ = setup
    assert client.get("/readyz").json()["ready"] is True
    metrics = client.get("/metrics").text
    assert 'radbridge_messages{state="accepted"} 0' in metrics
    assert "radbridge_extraction_seconds_count 0" in metrics
    assert 'radbridge_insights{type="Flag"} 0' in metrics
    assert "radbridge_flagged_reports 0" in metrics
    assert "radbridge_no_template_messages 0" in metrics
    assert "radbridge_http_received_total" in metrics
    assert client.get("/openapi.json").status_code == 200


def _many_observations(store: Store, count: int) -> list[dict[str, object]]:
    golden = json.loads((FIXTURES / "hl7v2" / "chest_ct.fhir.json").read_text("utf-8"))["CT0001-1"]
    template = next(
        e["resource"] for e in golden["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    entries = []
    for index in range(count):
        resource = json.loads(json.dumps(template))
        resource["id"] = f"obs-{index:04d}"
        entries.append(
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"Observation/obs-{index:04d}"},
            }
        )
    store.save_bundle(
        None,
        "R1",
        {"resourceType": "Bundle", "id": "paging", "type": "transaction", "entry": entries},
    )
    return [e["resource"] for e in entries]


def test_observation_search_pages_with_count_next_and_a_true_total(
    setup: tuple[TestClient, Store, list[int]],
) -> None:
    """Issue 15 item 10: 108 stored, `total` 108 (not 100), `_count` honoured, `next` links walk
    every page once; `code=%` matches nothing; every resource carries meta.lastUpdated."""
    client, store, _ = setup
    stored = _many_observations(store, 108)
    first = client.get("/fhir/Observation").json()
    assert first["total"] == 108
    seen: list[str] = []
    page = client.get("/fhir/Observation", params={"_count": "50"}).json()
    pages = 1
    while True:
        assert page["total"] == 108 and len(page["entry"]) <= 50
        seen += [e["resource"]["id"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = client.get(following[0]).json()
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(str(o["id"]) for o in stored)
    for wildcard in ("%", "_", "%|%"):
        assert client.get("/fhir/Observation", params={"code": wildcard}).json()["total"] == 0
    assert all(e["resource"]["meta"]["lastUpdated"].endswith("Z") for e in first["entry"])
    assert "lastUpdated" in client.get("/fhir/Observation/obs-0001").json()["meta"]
    assert client.get("/fhir/Observation", params={"_count": "-1"}).status_code == 400
    assert client.get("/fhir/Observation", params={"_count": "100000"}).status_code == 400


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ((FIXTURES / "fhir" / "bad_pdf_only.json").read_bytes(), 422, "pdf_only"),
        (
            json.dumps(
                {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CT"}}
            ).encode(),
            422,
            "no_narrative",
        ),
        (
            json.dumps(
                {
                    "resourceType": "DiagnosticReport",
                    "status": "bogus",
                    "code": {"text": "CT"},
                    "conclusion": "No effusion.",
                }
            ).encode(),
            400,
            "unusable_status",
        ),
    ],
)
def test_a_rejection_is_answered_with_its_classs_status(
    setup: tuple[TestClient, Store, list[int]], body: bytes, status: int, reason: str
) -> None:
    """422 for a report without readable text (`NoReportText`), 400 for other rejections: the
    error class decides, not the reason string."""
    from mappings.errors import MessageRejected, NoReportText

    assert (NoReportText.http_status, MessageRejected.http_status) == (422, 400)
    client, _, accepted = setup
    response = client.post("/fhir/DiagnosticReport", content=body)
    assert response.status_code == status, response.text
    assert response.json()["issue"][0]["diagnostics"].startswith(f"{reason}: ")
    assert accepted == []


def test_an_unexpected_error_is_logged_once_with_its_frames_and_never_its_message(
    setup: tuple[TestClient, Store, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _, _ = setup

    @client.app.get("/fhir/Patient/{patient_id}/boom")  # type: ignore[attr-defined]
    async def boom(patient_id: str) -> None:
        raise ValueError(f"Jane Doe {patient_id}: 4 cm mass")

    with caplog.at_level("ERROR", logger="radbridge.api"):
        response = client.get("/fhir/Patient/MRN123/boom")
    assert response.status_code == 500
    diagnostics = response.json()["issue"][0]["diagnostics"]
    correlation = diagnostics.split("correlation id ")[1].rstrip(")")
    (record,) = [r for r in caplog.records if r.name == "radbridge.api"]  # logged once
    logged = record.getMessage()
    assert f"correlation={correlation}" in logged and "type=ValueError" in logged
    assert "in boom" in logged  # the traceback's frames
    assert "/fhir/Patient/{patient_id}/boom" in logged  # the route, never the path's identifier
    assert "Jane Doe" not in caplog.text and "MRN123" not in caplog.text


def test_the_consoles_samples_are_the_metrics_text(
    setup: tuple[TestClient, Store, list[int]],
) -> None:
    """The UI's console reads its samples from `metrics_text` of the app's API context: the
    samples of what /metrics answers, without help lines."""
    import asyncio

    from starlette.requests import Request

    from adapter.ui.console_views import metrics_lines

    client, _, _ = setup
    client.post("/hl7v2", content=b"not hl7")
    answered = client.get("/metrics").text
    lines = asyncio.run(metrics_lines(Request({"type": "http", "app": client.app})))
    samples = [line for line in answered.splitlines() if line and not line.startswith("#")]
    assert [f"{name} {value}" for name, value in lines] == samples
    assert ("radbridge_http_received_total", "1") in lines
