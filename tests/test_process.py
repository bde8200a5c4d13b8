"""workers/process.py, the one per-message use case, around a FAKE engine (unit tests of the
code around the engine), plus the one deframer and the one ACK reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from mappings.errors import HL7ErrorCode
from mappings.framing import FrameReader, split_frames
from mappings.hl7.ack import Disposition, classify_ack
from mappings.inbound import report_from_record
from mappings.media_types import FHIR_JSON
from mappings.report import Report
from mappings.template import get_template, load_builtin_templates
from mappings.timeline import TimelineEntry
from tests.fakes import FakeEngine
from workers.errors import ExtractionError
from workers.extraction_engine import ChatPrompt, Generation
from workers.process import Result, process_message, process_reports

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
TEMPLATE = get_template("chest_findings")
CHEST = "FINDINGS: Small left pleural effusion. No pneumothorax."


def _answer() -> dict[str, Any]:
    return {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in TEMPLATE.variables
    }


class TooLongEngine(FakeEngine):
    """Answers every report, but raises for one marked too long (as llama.cpp does past n_ctx)."""

    def generate(
        self, prompt: ChatPrompt, schema: dict[str, Any], *, max_tokens: int
    ) -> Generation:
        if "TOO-LONG" in prompt.user:
            raise ExtractionError("prompt of 15453 tokens + max_tokens 768 exceeds n_ctx 8192")
        return super().generate(prompt, schema, max_tokens=max_tokens)


def _report(report_id: str, text: str = CHEST) -> Report:
    return report_from_record({"id": report_id, "text": text}, default_language="en")


def test_a_failed_extraction_is_a_typed_rejection_and_the_others_go_on() -> None:
    settings = Settings(stage="llm")
    engine = TooLongEngine(_answer())
    reports = [_report("a"), _report("b", CHEST + " TOO-LONG"), _report("c")]
    outcome = process_reports(
        reports, [TEMPLATE], settings, lambda: engine, explicit=True, reject_failed=True
    )
    assert [r.name for r in outcome.results] == ["a", "c"]
    assert all(r.bundle and r.bundle["resourceType"] == "Bundle" for r in outcome.results)
    (rejected,) = outcome.rejected
    assert rejected.report is reports[1] and rejected.reason == "extraction_failed"
    assert rejected.hl7_code is HL7ErrorCode.APPLICATION_INTERNAL_ERROR
    assert rejected.issue_code == "exception"
    assert outcome.message_rejected is None
    # the worker does not reject: it raises, and the message is retried
    with pytest.raises(ExtractionError):
        process_reports(reports, [TEMPLATE], settings, lambda: engine, explicit=True)


def test_a_message_that_cannot_be_parsed_is_one_message_rejection() -> None:
    outcome = process_message(
        b"{not json", FHIR_JSON, [TEMPLATE], Settings(stage="rules"), lambda: FakeEngine("")
    )
    rejected = outcome.message_rejected
    assert rejected is not None and rejected.report is None
    assert (rejected.reason, rejected.hl7_code, rejected.issue_code) == (
        "not_fhir_json", HL7ErrorCode.DATA_TYPE_ERROR, "invalid",
    )  # fmt: skip
    assert outcome.results == []


def test_unrouted_report_is_a_no_template_rejection_and_routing_is_reported() -> None:
    seen: list[str] = []
    outcome = process_reports(
        [_report("x", "Abdomen ultrasound: the liver is normal in size.")],
        [TEMPLATE],
        Settings(stage="rules"),
        lambda: FakeEngine(""),
        on_routing=lambda report, routing: seen.append(report.report_id),
    )
    assert seen == ["x"]
    assert [(r.reason, r.hl7_code, r.issue_code) for r in outcome.rejected] == [
        ("no_template", None, "not-supported")
    ]


def test_stored_links_are_asked_per_result_after_the_previous_was_stored() -> None:
    """The worker's timeline: each result is handed over (stored) before the next report's
    links are asked for, so a later report of the same patient can link to it."""
    events: list[str] = []

    def links(entry: TimelineEntry) -> dict[str, str]:
        events.append(f"links {entry.report.report_id}")
        return {}

    def stored(result: Result) -> None:
        events.append(f"stored {result.report.report_id}")

    raw = (HL7_DIR / "chest_ct.hl7").read_bytes()
    templates = list(load_builtin_templates().values())
    outcome = process_message(
        raw + b"\r",
        "x-application/hl7-v2+er7",
        templates,
        Settings(stage="rules"),
        lambda: FakeEngine(""),
        stored_links=links,
        on_result=stored,
    )
    assert outcome.results and not outcome.rejected
    assert events == [
        item for r in outcome.results for item in (f"links {r.report.report_id}", f"stored {r.report.report_id}")
    ]  # fmt: skip


def test_file_and_socket_deframing_share_one_end_rule() -> None:
    """A 0x1C inside a message does not end the frame (only 0x1C 0x0D does), for files as for
    sockets; before, the file reader split at the first 0x1C."""
    message = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|2.5\rOBX|1|TX|||a\x1cb"
    data = b"\x0b" + message + b"\x1c\r" + b"\x0b" + message + b"\x1c\r"
    files = [f.payload for f in split_frames(data)]
    reader = FrameReader(1 << 20)
    sockets = [e.payload for e in reader.feed(data)]
    assert files == sockets == [message, message]
    # a file's unterminated last frame is still a frame (to be rejected or read)
    tail = FrameReader(1 << 20)
    assert tail.feed(b"\x0b" + message) == [] and [e.payload for e in tail.close()] == [message]
    assert [f.payload for f in split_frames(b"\x0b" + message + b"\x1c")] == [message]


@pytest.mark.parametrize(
    ("ack", "code", "outcome"),
    [
        (b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\rMSA|AA|X1\r", "AA", Disposition.ACCEPTED),
        (b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\rMSA|CA|X1\r", "CA", Disposition.ACCEPTED),
        (b"MSH#^~\\&#R#F#S#F#20240101##ACK#1#P#2.5\rMSA#CR#X1\r", "CR", Disposition.REJECTED),
        (b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\rMSA|AR|X1\r", "AR", Disposition.REJECTED),
        (
            b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\nMSA|AE|X1\nERR|||207\n",
            "AE",
            Disposition.ERROR,
        ),
        (b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\rMSA|ZZ|X1\r", "ZZ", Disposition.ERROR),
        (b"MSH|^~\\&|R|F|S|F|20240101||ACK|1|P|2.5\r", None, Disposition.ERROR),
        (b"", None, Disposition.ERROR),
    ],
)
def test_one_ack_reader(ack: bytes, code: str | None, outcome: Disposition) -> None:
    """`classify_ack`: the one reader of a received ACK (POST /hl7v2's status, ORU delivery)."""
    assert classify_ack(ack) == (outcome, code)
