"""Unit tests of mappings/hl7/oru_in.py, mappings/framing.py, mappings/hl7/msh.py, sections and language."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.errors import HL7ErrorCode, MessageRejected, NoReportText
from mappings.framing import split_frames
from mappings.hl7.msh import peek_msh
from mappings.hl7.oru_in import parse_oru, parse_timestamp, precheck_oru, safe_id
from mappings.language import detect_language
from mappings.report import ResultStatus
from mappings.sections import find_sections

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
MSH = "MSH|^~\\&|RIS|FAC|RB|FAC|20260101120000||ORU^R01|C1|P|{version}{tail}"
OBR = "OBR|1|P1|A1|X^Chest X-ray^L|||20260101110000|||||||||||||||||CR|{status}"


def message(obx: list[str], version: str = "2.5", status: str = "F", tail: str = "") -> bytes:
    segments = [
        MSH.format(version=version, tail=tail),
        "PID|1||M1^^^H^MR",
        OBR.format(status=status),
        *obx,
    ]
    return "\r".join(segments).encode("utf-8")


def report_text(payload: bytes) -> str:
    return parse_oru(payload).reports[0].text


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.5", "2.5.1", "2.7", "2.8"])
def test_versions(version: str) -> None:
    parsed = parse_oru(message(["OBX|1|TX|&GDT||No effusion.||||||F"], version=version))
    assert parsed.header.version == version
    assert parsed.reports[0].text == "No effusion."


def test_unsupported_version() -> None:
    with pytest.raises(MessageRejected) as caught:
        parse_oru(message(["OBX|1|TX|&GDT||x||||||F"], version="3.0"))
    assert caught.value.code is HL7ErrorCode.UNSUPPORTED_VERSION_ID


def test_a_version_2_7_1_message_with_another_field_separator_is_read() -> None:
    """Issue 22: hl7apy's structural parse (gone) answered it `unparsable` (its 2.7.1 -> 2.7
    mapping looked for `|2.7.1` only)."""
    payload = message(["OBX|1|TX|&GDT||No effusion.||||||F"], version="2.7.1")
    parsed = parse_oru(payload.replace(b"|", b"#"))
    assert parsed.header.version == "2.7.1"
    assert parsed.reports[0].text == "No effusion."


@pytest.mark.parametrize(("version", "accepted"), [("2.5", False), ("2.7", True), ("2.8", True)])
def test_a_truncation_character_only_from_version_2_7(version: str, accepted: bool) -> None:
    payload = message(["OBX|1|TX|&GDT||No effusion.||||||F"], version=version)
    payload = payload.replace(b"^~\\&", b"^~\\&#", 1)
    if accepted:
        assert parse_oru(payload).reports[0].text == "No effusion."
        return
    with pytest.raises(MessageRejected) as caught:
        parse_oru(payload)
    assert (caught.value.reason, caught.value.code) == (
        "unparsable",
        HL7ErrorCode.SEGMENT_SEQUENCE_ERROR,
    )


def test_the_checks_before_the_ack_are_the_parses_first_checks() -> None:
    """Issue 22: one list of checks (`CHECKS`) for the listener's AR and the full parse."""
    cases = [
        message(["OBX|1|TX|&GDT||x||||||F"]).replace(b"ORU^R01", b"ADT^A01"),
        message(["OBX|1|TX|&GDT||x||||||F"]).replace(b"|C1|", b"||"),
        message(["OBX|1|TX|&GDT||x||||||F"], version="3.0"),
        message(["OBX|1|TX|&GDT||x||||||F"], tail="||||||KOI8"),
        message(["OBX|1|TX|&GDT||x||||||F"]).replace(b"\rOBR|", b"\rXBR|"),
    ]
    for payload in cases:
        problem = precheck_oru(payload, peek_msh(payload))
        assert problem is not None
        with pytest.raises(MessageRejected) as caught:
            parse_oru(payload)
        assert (caught.value.reason, caught.value.code, caught.value.detail) == (
            problem.reason,
            problem.code,
            problem.detail,
        )


@pytest.mark.parametrize(
    ("name", "reason", "code"),
    [
        ("bad_no_narrative.hl7", "no_narrative", HL7ErrorCode.REQUIRED_FIELD_MISSING),
        ("bad_pdf_only.hl7", "pdf_only", HL7ErrorCode.DATA_TYPE_ERROR),
    ],
)
def test_a_message_without_report_text_is_no_report_text(
    name: str, reason: str, code: HL7ErrorCode
) -> None:
    """No narrative and PDF only are `NoReportText` (422 over HTTP), as in FHIR, keeping their
    own 0357 code for the ACK."""
    with pytest.raises(NoReportText) as caught:
        parse_oru((HL7_DIR / name).read_bytes())
    assert (caught.value.reason, caught.value.code) == (reason, code)


def test_escapes_and_line_breaks() -> None:
    text = report_text(
        message(["OBX|1|FT|&GDT||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g \\X2B\\\\X2F\\- h||||||F"])
    )
    assert text == "a|b^c&d~e\\f\ng +/- h"
    assert "\r" not in text


def test_tx_repetitions_are_lines_and_obx_order() -> None:
    payload = message(
        [
            "OBX|2|ST|&IMP|2|second||||||F",
            "OBX|1|TX|&GDT|1|first~  ~third||||||F",
        ]
    )
    assert report_text(payload) == "first\n\nthird\nsecond"


def test_ce_and_ed_text() -> None:
    import base64

    data = base64.b64encode(b"Kein Erguss.").decode()
    payload = message(
        [
            "OBX|1|CE|X||C1^Pleural effusion^L||||||F",
            f"OBX|2|ED|R||RIS^TEXT^PLAIN^Base64^{data}||||||F",
        ]
    )
    assert report_text(payload) == "Pleural effusion\nKein Erguss."


def test_iso_8859_1_declared_and_fallback() -> None:
    segs = [
        MSH.format(version="2.5", tail="||||||8859/1"),
        "PID|1||M1",
        OBR.format(status="F"),
        "OBX|1|TX|X||Größe ±2||||||F",
    ]
    payload = "\r".join(segs).encode("iso-8859-1")
    assert report_text(payload) == "Größe ±2"
    undeclared = message(["OBX|1|TX|X||Größe ±2||||||F"]).decode().encode("iso-8859-1")
    assert report_text(undeclared) == "Größe ±2"


def test_utf8_declared_but_invalid_bytes_rejected() -> None:
    segs = [
        MSH.format(version="2.5", tail="||||||UNICODE UTF-8"),
        "PID|1||M1",
        OBR.format(status="F"),
        "OBX|1|TX|X||Größe||||||F",
    ]
    with pytest.raises(MessageRejected) as caught:
        parse_oru("\r".join(segs).encode("iso-8859-1"))
    assert caught.value.reason == "charset_error"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("F", "F"),
        ("Final", "F"),
        ("Prelim", "P"),
        ("P", "P"),
        ("Wet Read", "P"),
        ("C", "C"),
        ("Corrected", "C"),
    ],
)
def test_result_status_words(word: str, status: str) -> None:
    parsed = parse_oru(message(["OBX|1|TX|X||text||||||F"], status=word))
    assert parsed.reports[0].result_status is ResultStatus(status)


def test_empty_obr_status_falls_back_to_obx11() -> None:
    parsed = parse_oru(message(["OBX|1|TX|X||text||||||P"], status=""))
    assert parsed.reports[0].result_status is ResultStatus.PRELIMINARY


def test_fixture_fields() -> None:
    (frame,) = split_frames((HL7_DIR / "chest_ct.hl7").read_bytes())
    parsed = parse_oru(frame.payload)
    report = parsed.reports[0]
    assert parsed.header.accept_ack_type == "AL"
    assert report.report_id == "CT0001-1"
    assert report.accession_number == "ACC1001"
    assert report.placer_order_number == "PL1001"
    assert report.sending_facility == "RBHOSP"
    assert report.modality == "CT"
    assert report.procedure is not None and report.procedure.code == "24627-2"
    assert report.observation_time == datetime(2026, 11, 1, 8, 45)
    assert report.patient_identifiers[0].value == "MRN0001"
    assert [s.name for s in report.sections] == ["exam", "findings", "impression"]


def test_multi_obr_gives_one_report_each() -> None:
    (frame,) = split_frames((HL7_DIR / "multi_obr.hl7").read_bytes())
    reports = parse_oru(frame.payload).reports
    assert [r.report_id for r in reports] == ["MO0006-1", "MO0006-2"]
    assert "Liver" in reports[1].text and "Liver" not in reports[0].text
    assert len(reports[0].patient_identifiers) == 2


def test_languages_of_fixtures() -> None:
    expected = {"dutch_report": "nl", "german_report": "de", "chest_ct": "en"}
    for name, language in expected.items():
        (frame,) = split_frames((HL7_DIR / f"{name}.hl7").read_bytes())
        assert parse_oru(frame.payload).reports[0].language == language


def test_detect_language() -> None:
    assert detect_language("There is no pleural effusion and the heart is normal.") == "en"
    assert detect_language("Er is geen pleuravocht en het hart is niet vergroot.") == "nl"
    assert detect_language("Es ist kein Erguss und das Herz ist nicht vergrößert.") == "de"
    assert detect_language("우측 폐에 consolidation 소견이 있습니다. 흉수는 없습니다.") == "ko"
    assert detect_language("OK", default="nl") == "nl"


def test_sections() -> None:
    text = "Indication: cough\nFINDINGS:\nclear\nImpression: normal"
    sections = find_sections(text)
    assert [(s.name, text[s.start : s.end]) for s in sections] == [
        ("history", "Indication: cough\n"),
        ("findings", "FINDINGS:\nclear\n"),
        ("impression", "Impression: normal"),
    ]


def test_timestamps() -> None:
    assert parse_timestamp("20260101123456") == datetime(2026, 1, 1, 12, 34, 56)
    assert parse_timestamp("202601011234+0100") == datetime(2026, 1, 1, 11, 34, tzinfo=UTC)
    assert parse_timestamp("2026") == datetime(2026, 1, 1)
    assert parse_timestamp("not a date") is None
    assert parse_timestamp("20261301") is None


def test_safe_id() -> None:
    assert safe_id("2.25.1/2 x") == "2.25.1_2_x"
    assert safe_id("  ") == "_"


def test_framing_variants() -> None:
    raw = message(["OBX|1|TX|X||a||||||F"])
    mllp = b"junk" + b"\x0b" + raw + b"\x1c\r" + b"\x0b" + raw + b"\x1c\r"
    assert [f.payload for f in split_frames(mllp)] == [raw, raw]
    newline = raw.replace(b"\r", b"\n") + b"\n" + raw.replace(b"\r", b"\r\n")
    assert [f.payload for f in split_frames(newline)] == [raw, raw]
    scout = b"2026-01-01|INFO|x|\n<SB>\n" + raw.replace(b"\r", b"<R>\n") + b"<EB>\n"
    assert [f.payload for f in split_frames(scout)] == [raw]
    assert split_frames(b"Bad file") == []
    assert split_frames(b"\xef\xbb\xbf" + raw)[0].payload == raw


def test_msh_peek() -> None:
    peek = peek_msh(message(["OBX|1|TX|X||a||||||F"], tail="|||AL|NE"))
    assert (peek.control_id, peek.message_type, peek.version) == ("C1", "ORU^R01", "2.5")
    assert (peek.accept_ack_type, peek.application_ack_type) == ("AL", "NE")
    with pytest.raises(MessageRejected):
        peek_msh(b"PID|1")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_rejected(data: bytes) -> None:
    with contextlib.suppress(MessageRejected):
        parse_oru(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_fixture_only_ever_rejected(data: st.DataObject) -> None:
    payload = bytearray((HL7_DIR / "chest_ct.hl7").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.sampled_from(b"|^~\\&\r\x00\xffAZ09 "))
    try:
        parsed = parse_oru(bytes(payload))
    except MessageRejected:
        return
    for report in parsed.reports:
        assert "\r" not in report.text


def test_a_parser_bug_is_an_internal_error_not_a_rejection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14: only the errors the table lists become MessageRejected; a bug (here a KeyError
    deep in the parser) is an internal error with a correlation id, retried by the worker."""
    import mappings.hl7.oru_in as oru_in
    from mappings.errors import InternalMappingError

    def broken(*_: object) -> object:
        raise KeyError("TESTPATIENT")  # what a bug might carry: PHI in the exception text

    monkeypatch.setattr(oru_in, "_patient_identifiers", broken)
    with caplog.at_level("ERROR"), pytest.raises(InternalMappingError) as caught:
        parse_oru((HL7_DIR / "chest_ct.hl7").read_bytes())
    assert not isinstance(caught.value, MessageRejected)
    correlation = caught.value.correlation_id
    assert len(correlation) == 32 and correlation in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert correlation in logged and "KeyError" in logged and "in _report" in logged
    assert "TESTPATIENT" not in logged and "TESTPATIENT" not in str(caught.value)


def test_listed_errors_are_still_rejections() -> None:
    with pytest.raises(MessageRejected) as caught:
        parse_oru(
            message(["OBX|1|TX|&GDT||x||||||F"]).replace(b"|C1|", b"|C1\xff|"),
            default_charset="ascii",
        )
    assert caught.value.reason == "charset_error"


def test_sp_count_with_a_non_ascii_digit_is_read_not_crashed() -> None:
    assert report_text(message(["OBX|1|FT|&GDT||a\\.sp²\\b||||||F"])) == "a\nb"
