"""A template report whose correction routes to no template (`report_only`, issue 20): the old
template's Observations are retired (entered-in-error, carried in the corrected Bundle for the
destinations), not left in force; on real stores (SQLite and PostgreSQL) through the worker's
`process_message`. A correction that routes to the same template keeps its own values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.reviews import report_observations, worklist
from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.stores import KINDS, data_dir, open_store
from tests.test_review_insights_reextraction import CHEST_CT_SEGMENTS
from tests.test_review_reextraction import extract, report_of
from tests.test_ui_insights_browser import SCROTUM_US


def _message(control_id: str, segments: list[str], status: str) -> Incoming:
    """MSH and PID of SCROTUM_US (the same patient and accession) with `segments`, OBR-25
    `status`."""
    head = SCROTUM_US.decode().split("\r")[:2]
    head[0] = head[0].replace("INSUI01", control_id)
    obr = segments[0]
    body = [obr[: obr.rindex("|") + 1] + status, *segments[1:]]
    raw = "\r".join(head + body).encode()
    return Incoming(raw, "mllp", "RIS", "RBHOSP", control_id)


SCROTUM_SEGMENTS = SCROTUM_US.decode().split("\r")[2:]


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    settings = Settings(data_dir=data_dir(tmp_path), stage="rules")  # type: ignore[call-arg]
    with open_store(request.param, settings) as opened:
        yield opened, settings


def _observations(store: Store, report_id: str) -> dict[str, str]:
    return {str(o.body["id"]): str(o.body["status"]) for o in report_observations(store, report_id)}


def test_a_correction_without_a_template_retires_the_template_values(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    _, (first,) = extract(store, settings, _message("CORRO1", CHEST_CT_SEGMENTS, "F"))
    report_id = report_of(store, first)
    values = _observations(store, report_id)
    assert values and set(values.values()) == {"preliminary"}, "the chest CT has its values"

    _, (second,) = extract(store, settings, _message("CORRO2", SCROTUM_SEGMENTS, "C"))
    assert second != first, "the corrected report has no template: its own Bundle"
    assert report_of(store, second) == report_id
    for oid in values:
        stored = store.get_resource("Observation", oid)
        assert stored is not None and stored["status"] == "entered-in-error", oid
    bundle = store.get_bundle(second)
    assert bundle is not None
    retired = {
        str(e["resource"]["id"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"].get("status") == "entered-in-error"
    }
    assert set(values) <= retired, "the destinations are told the values are withdrawn"
    [report] = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert report["status"] == "corrected"
    assert not set(values) & {r["reference"].split("/")[-1] for r in report.get("result", [])}
    assert all(item.waiting == 0 for item in worklist(store)), "no retired value awaits review"


def test_a_correction_under_the_same_template_keeps_its_values(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    _, (first,) = extract(store, settings, _message("CORRS1", CHEST_CT_SEGMENTS, "F"))
    report_id = report_of(store, first)
    values = _observations(store, report_id)
    _, (second,) = extract(store, settings, _message("CORRS2", CHEST_CT_SEGMENTS, "C"))
    assert second == first
    after = _observations(store, report_id)
    assert set(after) == set(values) and "entered-in-error" not in after.values()
