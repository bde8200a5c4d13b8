"""A message whose report no template applies to (issue 20 item 1), through the worker's use
case on a real store: its Bundle (the report and its insights) is kept, the message's reason
says "no template", and the extraction record keeps `no_template` and the insights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.settings import Settings
from adapter.store import Incoming, Store
from tests.stores import KINDS, open_store
from workers.tasks import process_message

ABDOMEN_US = "\r".join(
    [
        "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20261102101500||ORU^R01|INS0001|P|2.3",
        "PID|1||MRN-INS1^^^RBH^MR||TESTPATIENT^GAMMA||19800101|F",
        "OBR|1|PL9001|ACC9001|76700^US ABDOMEN COMPLETE^CPT|||20261102100000|||||||||||||||"
        "20261102101400||US|F",
        "OBX|1|TX|&GDT||US ABDOMEN~IMPRESSION: Acute appendicitis.~"
        "Recommend follow-up ultrasound in 6 weeks.||||||F",
    ]
).encode()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, Settings(data_dir=tmp_path / "data")) as opened:
        yield opened


def test_a_no_template_message_keeps_its_bundle_and_says_no_template(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stage="rules")
    incoming = Incoming(ABDOMEN_US, "mllp", "RIS", "RBHOSP", "INS0001")
    message_id = store.accept(incoming).message_id
    (bundle_id,) = process_message(store, settings, message_id) or []
    row = store.get_message(message_id)
    assert row is not None and row.state == "extracted" and row.reason == "no template"
    bundle = store.get_bundle(bundle_id)
    assert bundle is not None
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == [
        "Device",
        "DiagnosticReport",
        "Flag",
        "Patient",
        "Provenance",
        "ServiceRequest",
    ]
