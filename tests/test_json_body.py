"""The HTTP API's memory-lean reading of FHIR bodies (issue 25 item 4): `adapter.json_body`
parses to exactly what `json.loads` gives (and fails where it fails), its depth is the depth,
and `report_keys_from_fhir` answers what `reports_from_fhir` answers without reading the
narratives: the same keys, the same rejections."""

from __future__ import annotations

import base64
import copy
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from adapter import json_body
from adapter.api.context import MAX_JSON_DEPTH, json_depth
from adapter.ingest import fhir_messages, split_bundle
from mappings.errors import MessageRejected
from mappings.fhir_in import LARGE_DATA, report_keys_from_fhir, reports_from_fhir

FHIR_DIR = Path(__file__).parent / "fixtures" / "fhir"
BIG = json_body.LARGE_STRING * 2


def report(text: str, *, content_type: str = "text/plain; charset=utf-8", **extra: Any) -> Any:
    data = base64.b64encode(text.encode("utf-8")).decode()
    return {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "code": {"text": "CT chest"},
        "presentedForm": [{"contentType": content_type, "data": data}],
        **extra,
    }


BODIES = [
    json.dumps(report("No pneumothorax. " * 8000)).encode(),  # one large base64 value
    json.dumps({"a": ["x" * BIG, {"b": "y" * BIG}], "c": 1}).encode(),  # several, nested
    json.dumps({"k" * BIG: 1, "v": "z" * BIG}).encode(),  # a large KEY stays as it is
    json.dumps({"esc": "\\" + "q" * BIG, "quote": '"' + "w" * BIG}).encode(),  # escapes
    json.dumps({"u": "é" * BIG}, ensure_ascii=False).encode(),  # UTF-8 text
    b'{"ctl": "' + b"a\nb" * BIG + b'"}',  # a raw control character: not JSON
    b'{"bad": "' + b"\xff" * BIG + b'"}',  # not UTF-8
    b'{"open": "' + b"x" * BIG,  # an unterminated string
    json.dumps({"s": "x" * BIG}).encode("utf-16"),  # another encoding
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_json_body_parses_as_json_loads(body: bytes) -> None:
    try:
        expected = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            json_body.loads(body, json_body.scan(body, MAX_JSON_DEPTH).large)
        return
    assert json_body.loads(body, json_body.scan(body, MAX_JSON_DEPTH).large) == expected


def test_large_values_are_cut_out_of_the_parse() -> None:
    found = json_body.scan(BODIES[1], MAX_JSON_DEPTH)
    assert len(found.large) == 2 and found.depth == 3
    assert json_body.scan(BODIES[2], MAX_JSON_DEPTH).large == [
        json_body.scan(BODIES[2], MAX_JSON_DEPTH).large[0]
    ]  # the value only, not the key


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [[{"b": "[[[[ {{"}]]]}', 4),
        (b'{"a": "\\"[[[[", "b": [1]}', 2),
        (b"[" * 150 + b"]" * 150, MAX_JSON_DEPTH + 1),
        (b'"[[[', 0),
    ],
)
def test_json_depth_counts_brackets_outside_strings(body: bytes, depth: int) -> None:
    assert min(json_depth(body), MAX_JSON_DEPTH + 1) == depth


def keys_or_reason(read: Any, resource: Any) -> Any:
    try:
        return read(resource)
    except MessageRejected as exc:
        return exc.reason, exc.detail


def cases() -> list[Any]:
    """FHIR bodies of every kind the readers take or refuse, small and large."""
    found: list[Any] = [json.loads(p.read_text("utf-8")) for p in sorted(FHIR_DIR.glob("*.json"))]
    big = "Findings: small left pleural effusion. " * (LARGE_DATA // 20)
    found += [
        report(big),
        report("   \n  "),  # blank text
        report(big, content_type="application/pdf"),  # binary only
        report(big, content_type="application/pdf", conclusion="No pneumothorax."),
        report("x", content_type="text/plain; charset=no-such-charset"),
        report(big, content_type="text/plain; charset=iso-8859-1"),
    ]
    broken = report(big)
    broken["presentedForm"][0]["data"] = broken["presentedForm"][0]["data"][:-3]  # bad padding
    wrong = report(big)
    wrong["presentedForm"][0]["data"] = "*" + wrong["presentedForm"][0]["data"][1:]
    binary_broken = report(big, content_type="application/pdf", conclusion="Text.")
    binary_broken["presentedForm"][0]["data"] += "!"
    found += [broken, wrong, binary_broken]
    return found


@pytest.mark.parametrize("resource", cases(), ids=lambda r: str(r.get("id", r.get("type"))))
def test_report_keys_answer_as_the_reports(resource: Any) -> None:
    keys = keys_or_reason(lambda r: report_keys_from_fhir(copy.deepcopy(r)), resource)
    reports = keys_or_reason(lambda r: reports_from_fhir(copy.deepcopy(r)), resource)
    if isinstance(reports, list):
        reports = [r.fhir_resource_id or r.report_id for r in reports]
    if isinstance(keys, tuple) and isinstance(reports, tuple):
        assert keys[0] == reports[0]
    else:
        assert keys == reports


def bundle_of(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


PATIENT = {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1"}}
SUBJECT: dict[str, Any] = {"subject": {"reference": "urn:uuid:p1"}}
BUNDLES = [
    bundle_of(  # a large report, a small one, their shared Patient (in each part)
        {"resource": report("No pneumothorax. " * 8000, id="big", **SUBJECT)},
        PATIENT,
        {"resource": report("Normal.", id="small", **SUBJECT)},
    ),
    bundle_of(  # two large reports, a large string outside the reports, a large key
        {"resource": report("Effusion. " * 9000, id="a")},
        {"resource": {"resourceType": "Binary", "id": "b", "data": "Q" * BIG, "k" * BIG: 1}},
        {"resource": report("Consolidation. " * 7000, id="c", **SUBJECT)},
        PATIENT,
    ),
    bundle_of(  # a large string that json.dumps writes escaped (not ASCII): written as before
        {"resource": report("x", id="u", conclusion="é" * BIG)},
        {"resource": report("y" * BIG, id="v")},
    ),
]


@pytest.mark.parametrize("bundle", BUNDLES, ids=range(len(BUNDLES)))
@pytest.mark.parametrize("indent", [None, 2])
def test_a_split_bundle_is_stored_as_json_dumps_writes_each_part(
    bundle: dict[str, Any], indent: int | None
) -> None:
    """Issue 25 item 4: the parts are written from the body, not re-serialised whole; the
    stored bytes stay those of `json.dumps(part, separators=(",", ":"))`."""
    body = json.dumps(bundle, indent=indent, ensure_ascii=False).encode()
    resource = json_body.loads(body, json_body.scan(body, MAX_JSON_DEPTH).large)
    keys = report_keys_from_fhir(copy.deepcopy(resource))
    assert len(keys) > 1
    stored = [item.raw for _, item in fhir_messages(body, resource, keys, "application/fhir+json")]
    expected = [
        json.dumps(part, separators=(",", ":")).encode() for _, part in split_bundle(bundle)
    ]
    assert stored == expected and len(stored) == len(keys)


def test_stand_ins_are_small_and_dumps_puts_the_strings_back() -> None:
    body = BODIES[1]
    found = json_body.stand_ins(body, json_body.scan(body, MAX_JSON_DEPTH).large)
    assert found is not None and len(json.dumps(found.value)) < 200
    assert (
        json_body.dumps(found.value, found)
        == json.dumps(json.loads(body), separators=(",", ":")).encode()
    )
    assert json_body.stand_ins(BODIES[4], json_body.scan(BODIES[4], MAX_JSON_DEPTH).large) is None


def test_splitting_a_large_bundle_holds_its_parts_once() -> None:
    """Python's allocations from the parse of a 4 MB two-report Bundle until it is its messages:
    the parts' bytes (about the body), the parse's large strings gone before them; before, the
    large strings, each part's JSON text and its bytes (3x)."""
    big = report("Effusion. " * 300_000, id="big", **SUBJECT)
    body = json.dumps(bundle_of({"resource": big}, PATIENT, BUNDLES[0]["entry"][2])).encode()
    tracemalloc.start()
    try:
        resource = json_body.loads(body, json_body.scan(body, MAX_JSON_DEPTH).large)
        keys = report_keys_from_fhir(resource)
        messages = fhir_messages(body, resource, keys, "application/fhir+json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(messages) == 2 and len(body) > 4_000_000
    assert peak < 1.3 * len(body), peak / len(body)
