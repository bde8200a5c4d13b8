"""The MSH peek, the pre-ACK checks and the ACK itself (issue 14 bad input, issue 15 item 11).

Each input here once got a wrong answer: an internal error for `MSH|` alone, AR "MSH-10 is
empty" for MSH-2 `XYZW`, MSA-2 cut at `^`, an ACK in a separator the HTTP edge could not read,
and re-encoded (mojibake) sender fields.
"""

from __future__ import annotations

import pytest

from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.hl7.ack import AckErrorDetail, Disposition, build_ack
from mappings.hl7.msh import peek_msh
from mappings.hl7.oru_in import precheck_oru

GOOD_MSH = "MSH|^~\\&|RIS|FAC|RB|FAC|20260101120000||ORU^R01|C1|P|2.5"
OBR = "OBR|1|P1|A1|X^Chest X-ray^L|||20260101110000"
OBX = "OBX|1|TX|&GDT||No effusion.||||||F"


def er7(*segments: str, charset: str = "utf-8") -> bytes:
    return "\r".join(segments).encode(charset)


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (b"MSH|\rPID|1", "MSH-2"),
        (b"MSH|", "MSH-2"),
        (b"MSH|^~\r", "MSH-2"),
        (er7("MSH|XYZW|RIS|FAC|RB|FAC|2026||ORU^R01|C1|P|2.5", OBR), "MSH-2"),
        (er7("MSH|^^\\&|RIS|FAC|RB|FAC|2026||ORU^R01|C1|P|2.5", OBR), "MSH-2"),
        (er7("MSHA^~\\&ARIS", OBR), "MSH-1"),
    ],
)
def test_unusable_msh_is_a_typed_rejection_naming_the_field(payload: bytes, named: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        peek_msh(payload)
    assert named in caught.value.detail
    assert caught.value.code is HL7ErrorCode.REQUIRED_FIELD_MISSING


def test_control_id_with_a_component_character_is_kept_whole_and_echoed_whole() -> None:
    peek = peek_msh(er7(GOOD_MSH.replace("|C1|", "|C1^X&Y|"), OBR))
    assert peek.control_id == "C1^X&Y"
    ack = build_ack(peek, Disposition.ACCEPTED, control_id="RB1")
    assert b"\rMSA|AA|C1^X&Y\r" in ack


def test_ack_uses_standard_delimiters_whatever_the_sender_used() -> None:
    msh = "MSH#$%*@#RIS#FAC#RB#FAC#20260101120000##ORU$R01#C2$7#P#2.5"
    peek = peek_msh(er7(msh, "OBR#1"))
    assert (peek.field_separator, peek.control_id) == ("#", "C2$7")
    ack = build_ack(
        peek,
        Disposition.REJECTED,
        control_id="RB2",
        error=AckErrorDetail(HL7ErrorCode.REQUIRED_FIELD_MISSING, "MSH-2 a|b^c"),
    )
    segments = ack.split(b"\r")
    assert segments[0].startswith(b"MSH|^~\\&|RB|FAC|RIS|FAC|")
    assert b"|ACK^R01^ACK|" in segments[0]
    assert segments[1] == b"MSA|AR|C2^7"  # the sender's component separator in ours
    assert segments[2].startswith(b"ERR|||101^MSH-2 a\\F\\b\\S\\c^HL70357|E|")


@pytest.mark.parametrize("charset", ["utf-8", "latin-1"])
def test_ack_gives_back_the_senders_bytes_unchanged(charset: str) -> None:
    payload = er7(GOOD_MSH.replace("|FAC|RB|", "|Zürich|RB|"), OBR, charset=charset)
    ack = build_ack(peek_msh(payload), Disposition.ACCEPTED, control_id="RB3")
    assert "Zürich".encode(charset) in ack


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (
            er7(GOOD_MSH.replace("|2.5", "|3.0"), OBR, OBX),
            HL7ErrorCode.UNSUPPORTED_VERSION_ID,
            "3.0",
        ),
        (er7(GOOD_MSH + "||||||KOI8", OBR, OBX), HL7ErrorCode.TABLE_VALUE_NOT_FOUND, "MSH-18"),
        (
            er7(GOOD_MSH + "||||||UNICODE UTF-8", "PID|1||1||Müller", OBR, OBX, charset="latin-1"),
            HL7ErrorCode.DATA_TYPE_ERROR,
            "UTF-8",
        ),
        (er7(GOOD_MSH, "PID|1", OBX), HL7ErrorCode.REQUIRED_FIELD_MISSING, "OBR"),
    ],
)
def test_cheap_checks_refuse_before_the_ack(payload: bytes, code: HL7ErrorCode, words: str) -> None:
    problem = precheck_oru(payload, peek_msh(payload))
    assert problem is not None and problem.code is code
    assert words.lower() in problem.detail.lower()


@pytest.mark.parametrize(
    "payload",
    [
        er7(GOOD_MSH, OBR, OBX),
        # undeclared charset, Latin-1 bytes: accepted, the parser falls back to ISO-8859-1
        er7(GOOD_MSH, "PID|1||1||Müller", OBR, OBX, charset="latin-1"),
        # no narrative: found only by the full parse, answered by the application ACK
        er7(GOOD_MSH, OBR, "OBX|1|ED|&GDT||^application^pdf^Base64^JVBERi0=||||||F"),
    ],
)
def test_what_passes_the_cheap_checks(payload: bytes) -> None:
    assert precheck_oru(payload, peek_msh(payload)) is None
