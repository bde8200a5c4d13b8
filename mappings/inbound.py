"""The one inbound parser: raw bytes (or a record of plain text) -> Reports.

Every channel turns its input into Reports here: the worker (`parse_message`, one stored
message, strict), the CLI's files (`read_bytes`, lenient: each frame's rejection is kept and the
others are read), the HTTP API (`mappings.fhir_in.report_keys_from_fhir` after its own bounded JSON read), and plain
text records (`report_from_record`: a backfill CSV/JSONL row or a labelled evaluation case).
Nothing here does I/O; no report text goes into a rejection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mappings.errors import HL7ErrorCode, MessageRejected, NoReportText
from mappings.fhir_in import reports_from_fhir
from mappings.framing import split_frames
from mappings.hl7.msh import peek_msh
from mappings.hl7.oru_in import parse_oru
from mappings.language import detect_language
from mappings.media_types import FHIR_JSON
from mappings.report import Report
from mappings.sections import find_sections


@dataclass(frozen=True)
class InboundRejection:
    """One frame or report that cannot be used: where it was and why (ids and reasons only)."""

    frame: int | None
    control_id: str | None
    reason: str
    detail: str
    hl7_error_code: str | None = None


@dataclass(frozen=True)
class InboundReport:
    """A report and the frame of the input it came from (None for FHIR JSON)."""

    report: Report
    frame: int | None


@dataclass
class Inbound:
    """What one input held: its reports and its rejections."""

    reports: list[InboundReport] = field(default_factory=list)
    rejections: list[InboundRejection] = field(default_factory=list)


def looks_like_json(data: bytes) -> bool:
    """Whether the bytes start like a JSON object or array (FHIR input)."""
    return data.lstrip()[:1] in (b"{", b"[")


def parse_message(
    raw: bytes, content_type: str, *, default_charset: str, default_language: str
) -> list[Report]:
    """Reports from one stored message (HL7v2 ER7 or FHIR JSON); MessageRejected when unusable.
    Per-OBR rejections inside a usable HL7v2 message are left out, as the worker always did."""
    if content_type == FHIR_JSON:
        try:
            resource = json.loads(raw)
        except ValueError:
            raise MessageRejected(
                HL7ErrorCode.DATA_TYPE_ERROR, "not_fhir_json", "invalid JSON"
            ) from None
        return reports_from_fhir(resource, default_language=default_language)
    parsed = parse_oru(raw, default_charset=default_charset, default_language=default_language)
    return list(parsed.reports)


def _control_id(payload: bytes) -> str | None:
    try:
        return peek_msh(payload).control_id or None
    except MessageRejected:
        return None


def read_bytes(data: bytes, *, default_charset: str, default_language: str) -> Inbound:
    """Reports and rejections from the bytes of one input file: FHIR JSON, or HL7v2 (raw, MLLP,
    scout `.log`) with one rejection per unusable frame; never raises for bad content."""
    if looks_like_json(data):
        return _read_fhir(data, default_language)
    return _read_hl7v2(data, default_charset, default_language)


def _read_fhir(data: bytes, default_language: str) -> Inbound:
    try:
        resource: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # too deep
        detail = f"invalid JSON: {type(exc).__name__}"
        return Inbound(rejections=[InboundRejection(None, None, "not_fhir_json", detail)])
    if not isinstance(resource, dict):
        detail = "JSON is not a FHIR resource"
        return Inbound(rejections=[InboundRejection(None, None, "not_fhir_json", detail)])
    try:
        reports = reports_from_fhir(resource, default_language=default_language)
    except MessageRejected as exc:
        return Inbound(rejections=[InboundRejection(None, None, exc.reason, exc.detail)])
    return Inbound(reports=[InboundReport(report, None) for report in reports])


def _read_hl7v2(data: bytes, default_charset: str, default_language: str) -> Inbound:
    frames = split_frames(data)
    if not frames:
        detail = "no HL7v2 message or frame found in the file"
        code = HL7ErrorCode.SEGMENT_SEQUENCE_ERROR
        return Inbound(rejections=[InboundRejection(None, None, "no_message", detail, code)])
    inbound = Inbound()
    for frame in frames:
        control_id = _control_id(frame.payload)
        try:
            parsed = parse_oru(
                frame.payload, default_charset=default_charset, default_language=default_language
            )
        except MessageRejected as exc:
            inbound.rejections.append(
                InboundRejection(frame.index, control_id, exc.reason, exc.detail, exc.code.value)
            )
            continue
        inbound.reports.extend(InboundReport(report, frame.index) for report in parsed.reports)
        inbound.rejections.extend(
            InboundRejection(frame.index, control_id, exc.reason, exc.detail, exc.code.value)
            for exc in parsed.rejected
        )
    return inbound


def _observed(value: str | None) -> datetime | None:
    """A record's date (ISO, the day is used) as midnight UTC; MessageRejected when unreadable."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        raise MessageRejected(
            HL7ErrorCode.DATA_TYPE_ERROR, "bad_date", "the date is not an ISO date (YYYY-MM-DD)"
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _optional(record: Mapping[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def report_from_record(record: Mapping[str, object], *, default_language: str) -> Report:
    """A Report from a plain-text record: `id`, `text`, optional `language`, `modality`, `date`
    (a backfill CSV/JSONL row or a labelled evaluation case). MessageRejected when the id or the
    text is missing or the date unreadable."""
    report_id = _optional(record, "id")
    if report_id is None:
        raise MessageRejected(HL7ErrorCode.REQUIRED_FIELD_MISSING, "no_id", "the record has no id")
    raw_text = record.get("text")
    text = str(raw_text).replace("\r\n", "\n").replace("\r", "\n") if raw_text else ""
    if not text.strip():
        raise NoReportText(
            HL7ErrorCode.REQUIRED_FIELD_MISSING, "no_narrative", "the record has no report text"
        )
    modality = _optional(record, "modality")
    return Report(
        source_format="fhir",
        report_id=report_id,
        fhir_resource_id=report_id,
        language=_optional(record, "language") or detect_language(text, default_language),
        modality=modality.upper() if modality else None,
        observation_time=_observed(_optional(record, "date")),
        text=text,
        sections=find_sections(text),
    )
