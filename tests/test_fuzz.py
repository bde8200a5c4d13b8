"""Fuzzing the parsers that read untrusted bytes (issue 14, promise 7).

Targets: the HL7v2 parser (`parse_oru`), the MSH peek, the ACK builder, the FHIR inbound parser
(`parse_json` + `reports_from_fhir`, as `POST /fhir` runs them) and the MLLP deframer (bytes fed
to `FrameReader` in random chunks); with a fifth of the inputs, the file reader of `radbridge
extract` (`mappings.inbound.read_bytes`: framing, HL7v2 and FHIR; it must never raise). The
only exceptions allowed are the typed rejections (`MessageRejected`, and `ApiError` 400 for a
body that is not JSON): anything else, including `InternalMappingError` (a bug the parser
caught), fails the test.

Each target runs RADBRIDGE_FUZZ_EXAMPLES inputs (default 10,000 in `make test`; `make fuzz`
runs 1,000,000). Inputs mix raw random bytes with mutations of the fixture messages, so most
reach past the first check. A last test sends a few hundred frames of random bytes to a real
MLLP listener on a socket and checks every frame is answered. Crashes found are kept at the end
as regular tests.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.api.context import parse_json
from adapter.api.errors import ApiError
from adapter.mllp import FrameReader, frame
from adapter.settings import Settings
from adapter.store import Store
from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.fhir_in import reports_from_fhir
from mappings.hl7.ack import AckErrorDetail, Disposition, build_ack
from mappings.hl7.msh import peek_msh
from mappings.hl7.oru_in import parse_oru
from tests.test_mllp import Listener

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = int(os.environ.get("RADBRIDGE_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis folder in the checkout; a failure prints its example
    suppress_health_check=list(HealthCheck),
)

HL7_SEEDS = [
    path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    for path in sorted((FIXTURES / "hl7v2").glob("*.hl7"))
]
FHIR_SEEDS: list[dict[str, Any]] = [
    json.loads(path.read_text())
    for path in [
        *sorted((FIXTURES / "fhir").glob("*.json")),
        FIXTURES / "replay" / "chest_report.json",
    ]
]
# characters that matter to an ER7 reader: delimiters, escapes, segment ends, non-ASCII
HL7_ALPHABET = b"|^~\\&#\r\nMSHPIDOBRXTE0123456789.FCP \x00\x0b\x1c\xc3\xa9\xff"


def _framed(payloads: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The payloads as MLLP frames with junk (no start block) between them."""
    return b"junk\r".join(frame(p) for p in payloads), payloads


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """`seed` with each (position, deleted length, inserted bytes) edit applied."""
    data = bytearray(seed)
    for position, length, insert in edits:
        at = position % (len(data) + 1)
        data[at : at + length] = insert
    return bytes(data)


_edit = st.tuples(
    st.integers(0, 1 << 16),
    st.integers(0, 8),
    st.one_of(st.binary(max_size=8), st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r"])),
)
hl7_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(list(HL7_ALPHABET)), max_size=300).map(bytes),
    st.builds(lambda body: b"MSH" + body, st.binary(max_size=300)),
    st.builds(mutate, st.sampled_from(HL7_SEEDS), st.lists(_edit, min_size=1, max_size=6)),
)


@FUZZ
@given(hl7_bytes)
def test_fuzz_parse_oru_rejects_only_with_message_rejected(payload: bytes) -> None:
    try:
        parsed = parse_oru(payload)
    except MessageRejected as exc:
        assert exc.code in set(HL7ErrorCode)
        return
    assert parsed.reports


@FUZZ
@given(hl7_bytes)
def test_fuzz_msh_peek_and_every_ack_it_gives(payload: bytes) -> None:
    try:
        peek = peek_msh(payload)
    except MessageRejected:
        peek = None
    for outcome in Disposition:
        error = (
            None
            if outcome == Disposition.ACCEPTED
            else AckErrorDetail(HL7ErrorCode.DATA_TYPE_ERROR, "x")
        )
        for application in (False, True):
            ack = build_ack(peek, outcome, control_id="RB1.1", error=error, application=application)
            segments = ack.rstrip(b"\r").split(b"\r")
            # a value of the sender's can never add a segment to the ACK or break its MSH
            assert [s[:3] for s in segments] == [b"MSH", b"MSA"] + ([b"ERR"] if error else [])
            answer = peek_msh(ack)
            assert answer.message_type.startswith("ACK")
            assert answer.control_id == "RB1.1"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def _replace(node: Any, path: list[int], value: Any) -> Any:
    """`node` with the element that `path` picks (indices taken modulo each size) set to
    `value`; an empty path replaces the node."""
    if not path or not isinstance(node, dict | list) or not node:
        return value if not path else node
    if isinstance(node, dict):
        key = sorted(node)[path[0] % len(node)]
        return {**node, key: _replace(node[key], path[1:], value)}
    index = path[0] % len(node)
    return [*node[:index], _replace(node[index], path[1:], value), *node[index + 1 :]]


fhir_resources = st.one_of(
    st.builds(
        _replace,
        st.sampled_from(FHIR_SEEDS),
        st.lists(st.integers(0, 50), min_size=1, max_size=6),
        json_values,
    ),
    st.dictionaries(
        st.sampled_from(["resourceType", "type", "entry", "status", "presentedForm", "result"]),
        json_values,
    ).map(lambda d: {"resourceType": "DiagnosticReport", **d}),
)


@FUZZ
@given(st.one_of(st.binary(max_size=200), fhir_resources.map(lambda r: json.dumps(r).encode())))
def test_fuzz_fhir_body_bytes(body: bytes) -> None:
    """What `POST /fhir` does with a body: bounded JSON, then the inbound parser."""
    try:
        resource = parse_json(body)
        if isinstance(resource, dict):  # the API refuses other JSON before the parser (400)
            assert reports_from_fhir(resource)
    except ApiError as exc:
        assert exc.status == 400
    except MessageRejected:
        pass


_payloads = st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\x1c", b"")), max_size=8)


@FUZZ
@given(
    st.one_of(st.binary(max_size=600).map(lambda b: (b, None)), _payloads.map(_framed)),
    st.lists(st.integers(1, 64), max_size=20),
    st.integers(1, 300),
)
def test_fuzz_mllp_deframer(
    case: tuple[bytes, list[bytes] | None], cuts: list[int], limit: int
) -> None:
    """Any bytes in any chunking give the frames of one whole feed, sizes respect the limit,
    and framed payloads (with junk between frames) come back as they were sent."""
    data, payloads = case
    whole = FrameReader(limit).feed(data)
    reader = FrameReader(limit)
    chunked = []
    position = 0
    for cut in cuts:
        chunked += reader.feed(data[position : position + cut])
        position += cut
    chunked += reader.feed(data[position:])
    assert chunked == whole
    for event in whole:
        assert (event.payload is None) == (event.size > limit)
        if event.payload is not None:
            assert b"\x1c\r" not in event.payload
    if payloads is not None:
        assert [e.payload if e.payload is not None else e.size for e in whole] == [
            p if len(p) <= limit else len(p) for p in payloads
        ]


# -- random frames to a real listener --------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    store = Store.open(Settings(data_dir=tmp_path))
    running = Listener(store, max_frame_bytes=4096)
    yield running
    running.close()
    store.close()


def random_frames(count: int, seed: int) -> list[bytes]:
    """Payloads for `count` frames: random bytes, HL7-alphabet soup and mutated fixtures. A
    payload never holds the end block, and never asks for no commit ACK (MSH-15 NE)."""
    rng = random.Random(seed)
    payloads = []
    for n in range(count):
        kind = n % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 5000))
        elif kind == 1:
            data = bytes(rng.choice(HL7_ALPHABET) for _ in range(rng.randrange(0, 400)))
        else:
            edits = [
                (rng.randrange(1 << 16), rng.randrange(6), rng.randbytes(rng.randrange(4)))
                for _ in range(rng.randrange(1, 5))
            ]
            data = mutate(rng.choice(HL7_SEEDS), edits).replace(b"|NE", b"|AL")
        payloads.append(data.replace(b"\x1c", b"\x1d"))
    return payloads


def exchange(port: int, payload: bytes) -> bytes | None:
    """Send one frame on a new connection; the answer's payload, or None when none came."""
    reader = FrameReader(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame(payload))
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            for event in reader.feed(chunk):
                return event.payload


@pytest.mark.integration
def test_random_frames_on_a_real_socket_are_all_answered(listener: Listener) -> None:
    payloads = random_frames(300, seed=int(os.environ.get("RADBRIDGE_FUZZ_SEED", "14")))
    answered = 0
    for payload in payloads:
        ack = exchange(listener.port, payload)
        assert ack is not None, f"no answer to a frame of {len(payload)} bytes"
        msa = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
        assert msa[4:6] in (b"AA", b"AE", b"AR", b"CA", b"CE", b"CR")
        answered += 1
    assert answered == len(payloads)


# -- crashes the fuzzer found, kept as regular tests ------------------------------------------

DR = {
    "resourceType": "DiagnosticReport",
    "id": "dr-obs",
    "status": "preliminary",
    "code": {"text": "CT chest"},
    "result": [{"reference": "#o1"}],
    "subject": {"identifier": {"value": "MRN-F2"}},
}
PATIENT_ENTRY = {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1"}}
REPORT_ENTRY = {"resource": FHIR_SEEDS[-1]}


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({**DR, "contained": None}, "no_narrative"),  # each was a TypeError or AttributeError
        ({"resourceType": "Bundle", "type": "collection", "entry": None}, "no_diagnostic_report"),
        ({"resourceType": "Bundle", "type": "collection", "entry": False}, "invalid_resource"),
        ({"resourceType": "Bundle", "type": [], "entry": []}, "unsupported_resource"),
        (  # the R4B model's own validator raised TypeError (not ValidationError) on this
            {**DR, "contained": [{"resourceType": [], "id": "o1", "valueString": "text"}]},
            "invalid_resource",
        ),
        (  # a Bundle entry is used only once it passed the model
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "p1", "identifier": "x"}},
                    {"resource": {**FHIR_SEEDS[-1], "subject": {"reference": "Patient/p1"}}},
                ],
            },
            "invalid_resource",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": ["Patient"]}},
                    {"resource": {**FHIR_SEEDS[-1], "subject": {"reference": "urn:uuid:p1"}}},
                ],
            },
            "unsupported_resource",  # the entry check names a resourceType that is no string
        ),
    ],
)
def test_fuzz_found_fhir_shapes_are_rejections(resource: dict[str, Any], reason: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        reports_from_fhir(resource)
    assert caught.value.reason == reason


def test_fuzz_found_full_url_that_is_not_a_string_is_ignored() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{**PATIENT_ENTRY, "fullUrl": [False]}, REPORT_ENTRY],  # was TypeError
    }
    assert len(reports_from_fhir(bundle)) == 1


# -- the one inbound parser of files (mappings/inbound.py) ------------------------------------

file_bytes = st.one_of(
    hl7_bytes,
    hl7_bytes.map(frame),
    st.lists(hl7_bytes, max_size=4).map(lambda ps: b"".join(frame(p) for p in ps)),
    fhir_resources.map(lambda r: json.dumps(r).encode()),
    st.builds(lambda n, tail: b"[" * n + tail, st.integers(0, 3000), st.binary(max_size=20)),
)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 5))  # on top of the targets above: a fifth
@given(file_bytes)
def test_fuzz_inbound_read_bytes_never_raises(data: bytes) -> None:
    """`radbridge extract`'s reader: every input gives reports and/or rejections, never an
    exception."""
    from mappings.inbound import read_bytes

    read_bytes(data, default_charset="utf-8", default_language="en")


def test_fuzz_found_deeply_nested_json_file_is_a_rejection() -> None:
    """Was RecursionError out of `read_bytes` (`radbridge extract` on such a file: exit 1)."""
    from mappings.inbound import read_bytes

    inbound = read_bytes(b"[" * 100_000, default_charset="utf-8", default_language="en")
    assert [r.reason for r in inbound.rejections] == ["not_fhir_json"]
    assert not inbound.reports
