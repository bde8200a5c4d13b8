"""HL7v2 ORU^R01 -> `Report` (one per OBR), with typed rejections.

The checks that need no full parse (`CHECKS`: type, MSH-10, version, charset, an OBR) run
before the listener's ACK and again, the same list, first in the full parse. The segments are
then read straight from ER7 with the message's own encoding characters (`mappings.hl7.er7`),
the MSH once (`mappings.hl7.msh`); no general HL7 library is involved (hl7apy's structural
parse, ~20 ms per report, refused only a truncation character before v2.7, which the full
parse still refuses: `unparsable`, and it answered a v2.7.1 message with another field
separator than `|` as unparsable, which it is not).

Narrative: OBX-2 value types TX, FT, ST (each repetition `~` is a line), CE/CWE (the text
component), ED with text/plain (Base64 or plain). Lines are joined in OBX-1 (set id), then OBX-4
(sub-id), then file order, escapes resolved once (`mappings.hl7.er7`); the text never holds a
carriage return. An OBR whose OBX hold no text is rejected alone (`ParsedMessage.rejected`); a
message none of whose OBR has text is rejected whole.

Field choices (documented for integrators): accession = OBR-3.1 (filler order number, what the
RIS assigns), modality = OBR-24 (diagnostic service section id), body part = OBR-15.4 (specimen
source body site, where the scout feed keeps e.g. BREAST), result status = OBR-25 (letters or
words: F/Final, P/Prelim/Preliminary, C/Corrected/Amended; when OBR-25 is empty, the first
OBX-11; anything else, e.g. 'Wet Read', -> P, so nothing unrecognised is published as final), observation time = OBR-7, else OBR-6, else OBR-22
(naive unless an offset is given, then timezone-aware UTC).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Literal

from mappings.errors import HL7ErrorCode, MessageRejected, NoReportText, map_exceptions
from mappings.hl7.er7 import Values, charset_of, fields, get, segments
from mappings.hl7.msh import SUPPORTED_VERSIONS, MessageHeader, MshPeek, header, peek_msh
from mappings.language import detect_language
from mappings.report import Coding, EntityIdentifier, PatientIdentifier, Report, ResultStatus
from mappings.sections import find_sections

NARRATIVE_TYPES = frozenset({"TX", "FT", "ST", "CE", "CWE", "ED"})
ACCEPTED_TYPES = (["ORU", "R01"], ["ORU"])  # MSH-9's first two components
_STATUS_WORDS = {
    "F": ResultStatus.FINAL,
    "FINAL": ResultStatus.FINAL,
    "P": ResultStatus.PRELIMINARY,
    "PRELIM": ResultStatus.PRELIMINARY,
    "PRELIMINARY": ResultStatus.PRELIMINARY,
    "C": ResultStatus.CORRECTED,
    "CORRECTED": ResultStatus.CORRECTED,
    "CORRECTION": ResultStatus.CORRECTED,
    "AMENDED": ResultStatus.CORRECTED,
}
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$")


def safe_id(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._-] replaced by '_' (never empty)."""
    cleaned = _UNSAFE_ID.sub("_", text.strip())
    return cleaned or "_"


@dataclass(frozen=True)
class ParsedMessage:
    """One ORU^R01: its header, the Reports, and per-OBR rejections."""

    header: MessageHeader
    reports: tuple[Report, ...]
    rejected: tuple[MessageRejected, ...]


def _reject(code: HL7ErrorCode, reason: str, detail: str) -> MessageRejected:
    return MessageRejected(code, reason, detail)


def _opt(text: str) -> str | None:
    return text or None


def _entity(value: str, v: Values) -> EntityIdentifier | None:
    """An EI field (OBR-2, OBR-3): entity id, namespace id, universal id, universal id type."""
    entity = v.component(value, 1)
    if not entity:
        return None
    return EntityIdentifier(
        value=entity,
        namespace=_opt(v.component(value, 2)),
        universal_id=_opt(v.component(value, 3)),
        universal_id_type=_opt(v.component(value, 4)),
    )


def parse_timestamp(value: str) -> datetime | None:
    """HL7 TS/DTM -> datetime (naive unless an offset is given); None when empty or invalid."""
    match = _TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
        )
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return moment.replace(tzinfo=timezone(sign * delta)).astimezone(UTC)
    return moment


def _patient_identifiers(pid: list[str] | None, v: Values) -> tuple[PatientIdentifier, ...]:
    if pid is None:
        return ()
    result: list[PatientIdentifier] = []
    for repetition in get(pid, 3).split(v.enc.repetition):
        value = v.component(repetition, 1)
        if value:
            result.append(
                PatientIdentifier(
                    value=value,
                    assigner=_opt(v.component(repetition, 4)),
                    type_code=_opt(v.component(repetition, 5)),
                    assigner_id=_opt(v.subcomponent(repetition, 4, 2)),
                    assigner_id_type=_opt(v.subcomponent(repetition, 4, 3)),
                )
            )
    return tuple(result)


def _obx_lines(obx: list[str], v: Values) -> tuple[list[str], bool]:
    """(lines of narrative, True if the OBX was a non-text ED such as a PDF)."""
    value_type = get(obx, 2).strip().upper()
    raw = get(obx, 5)
    if value_type in ("TX", "FT", "ST"):
        lines: list[str] = []
        for repetition in raw.split(v.enc.repetition):
            lines.extend(v.text(repetition).split("\n"))
        return lines, False
    if value_type in ("CE", "CWE"):
        text = v.component(raw, 2) or v.component(raw, 1)
        return ([text] if text else []), False
    if value_type == "ED":
        parts = raw.split(v.enc.component)
        data_type = (parts[1] if len(parts) > 1 else "").upper()
        subtype = (parts[2] if len(parts) > 2 else "").upper()
        encoding = (parts[3] if len(parts) > 3 else "").upper()
        data = parts[4] if len(parts) > 4 else ""
        if data_type != "TEXT" and subtype not in ("PLAIN", "TEXT/PLAIN"):
            return [], True
        if encoding == "BASE64":
            try:
                data = base64.b64decode(data, validate=False).decode(v.charset, errors="replace")
            except (binascii.Error, ValueError):
                return [], False
        else:
            data = v.text(data)
        return data.replace("\r\n", "\n").replace("\r", "\n").split("\n"), False
    return [], False


def _int_or_large(value: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        return float("inf")


def normalise_text(lines: list[str]) -> str:
    """Trailing spaces per line removed, leading/trailing blank lines dropped, no CR."""
    cleaned = [line.replace("\r", "").rstrip() for line in lines]
    while cleaned and not cleaned[0]:
        cleaned.pop(0)
    while cleaned and not cleaned[-1]:
        cleaned.pop()
    return "\n".join(cleaned)


def _observation_time(obr: list[str], v: Values) -> datetime | None:
    """OBR-7 (observation date/time); when empty OBR-6 (requested), then OBR-22 (report time)."""
    for index in (7, 6, 22):
        moment = parse_timestamp(v.component(get(obr, index), 1))
        if moment is not None:
            return moment
    return None


_SEX: dict[str, Literal["male", "female", "other", "unknown"]] = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "N": "other",
    "U": "unknown",
}
"""PID-8 administrative sex (HL7 table 0001) as FHIR administrative gender."""


def _birth_date(value: str) -> date | None:
    """PID-7 to the day (YYYYMMDD...); None when shorter or impossible."""
    digits = value.strip()[:8]
    if len(digits) < 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _result_status(obr_status: str, obx_statuses: list[str]) -> ResultStatus:
    """OBR-25; when empty, the first OBX-11; unknown words (e.g. 'Wet Read') -> preliminary."""
    value = obr_status.strip() or next((s.strip() for s in obx_statuses if s.strip()), "")
    return _STATUS_WORDS.get(value.upper(), ResultStatus.PRELIMINARY)


def _report(
    header: MessageHeader,
    obr: list[str],
    obxs: list[list[str]],
    pid: list[str] | None,
    pv1: list[str] | None,
    v: Values,
    default_language: str,
) -> Report:
    set_id = v.component(get(obr, 1), 1) or "1"
    keyed: list[tuple[float, float, int, list[str]]] = []
    saw_binary = False
    for index, obx in enumerate(obxs):
        lines, binary = _obx_lines(obx, v)
        saw_binary = saw_binary or binary
        if lines:
            keyed.append((_int_or_large(get(obx, 1)), _int_or_large(get(obx, 4)), index, lines))
    keyed.sort(key=lambda item: (item[0], item[1], item[2]))
    text = normalise_text([line for *_, lines in keyed for line in lines])
    if not text.strip():
        if saw_binary:
            raise NoReportText(
                HL7ErrorCode.DATA_TYPE_ERROR,
                "pdf_only",
                f"OBR {set_id}: only non-text (e.g. PDF) content; radbridge needs text/plain narrative",
            )
        raise NoReportText(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "no_narrative",
            f"OBR {set_id}: no report text in OBX",
        )
    procedure_field = get(obr, 4)
    procedure = Coding(
        code=_opt(v.component(procedure_field, 1)),
        display=_opt(v.component(procedure_field, 2) or v.component(procedure_field, 5)),
        system=_opt(v.component(procedure_field, 3)),
    )
    filler = _opt(v.component(get(obr, 3), 1))
    return Report(
        source_format="hl7v2",
        report_id=safe_id(f"{header.control_id}-{set_id}"),
        message_control_id=header.control_id,
        hl7_version=header.version,
        obr_set_id=set_id,
        sending_application=header.sending_application,
        sending_facility=header.sending_facility,
        accession_number=filler,
        placer_order_number=_opt(v.component(get(obr, 2), 1)),
        filler_order_number=filler,
        patient_identifiers=_patient_identifiers(pid, v),
        patient_name=v.structured(get(pid, 5)) if pid else (),
        patient_sex=_SEX.get(v.component(get(pid, 8), 1).upper()) if pid else None,
        birth_date=_birth_date(v.component(get(pid, 7), 1)) if pid else None,
        visit=tuple(v.structured(f) for f in pv1[1:]) if pv1 else None,
        placer_order=_entity(get(obr, 2), v),
        filler_order=_entity(get(obr, 3), v),
        procedure=procedure if (procedure.code or procedure.display) else None,
        modality=_opt(v.component(get(obr, 24), 1).upper()),
        body_part=_opt(v.component(get(obr, 15), 4).upper()),
        result_status=_result_status(
            v.component(get(obr, 25), 1), [v.component(get(obx, 11), 1) for obx in obxs]
        ),
        observation_time=_observation_time(obr, v),
        language=detect_language(text, default_language),
        text=text,
        sections=find_sections(text),
    )


def parse_oru(
    payload: bytes, *, default_charset: str = "utf-8", default_language: str = "en"
) -> ParsedMessage:
    """Parse one ORU^R01 into Reports.

    `MessageRejected` for unusable messages (`CHECKS`, then what only the full parse finds);
    any other exception is a bug: `InternalMappingError` (logged with a correlation id, retried
    by the worker, never a silent dead letter).
    """
    with map_exceptions({}, "parse_oru"):
        return _parse_oru(payload, default_charset, default_language)


Check = Callable[[bytes, MshPeek], MessageRejected | None]


def _message_type(_: bytes, peek: MshPeek) -> MessageRejected | None:
    """MSH-9 is ORU^R01 or ORU, in the message's own component separator."""
    if get(list(peek.fields), 9).split(peek.encoding.component)[:2] in ACCEPTED_TYPES:
        return None
    return _reject(
        HL7ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
        "not_oru_r01",
        f"message type {peek.message_type} is not accepted (ORU^R01 only)",
    )


def _control_id(_: bytes, peek: MshPeek) -> MessageRejected | None:
    if peek.control_id:
        return None
    return _reject(HL7ErrorCode.REQUIRED_FIELD_MISSING, "unparsable", "MSH-10 is empty")


def _version(_: bytes, peek: MshPeek) -> MessageRejected | None:
    if peek.version in SUPPORTED_VERSIONS:
        return None
    return _reject(
        HL7ErrorCode.UNSUPPORTED_VERSION_ID,
        "unsupported_version",
        f"HL7 version (MSH-12) {peek.version!r} is not supported",
    )


def _declared_charset(payload: bytes, peek: MshPeek) -> MessageRejected | None:
    """A declared MSH-18 is known and the bytes are valid in it (an empty one is no claim)."""
    if peek.charset:
        try:
            charset_of(payload, peek.charset, "utf-8")
        except MessageRejected as exc:
            return exc
    return None


def _has_obr(payload: bytes, peek: MshPeek) -> MessageRejected | None:
    separator = re.escape(peek.field_separator.encode("latin-1"))
    if re.search(rb"(?:^|[\r\n])OBR(?:" + separator + rb"|[\r\n]|$)", payload):
        return None
    return _reject(
        HL7ErrorCode.REQUIRED_FIELD_MISSING,
        "no_observation_request",
        "the ORU^R01 has no OBR segment",
    )


CHECKS: tuple[Check, ...] = (_message_type, _control_id, _version, _declared_charset, _has_obr)
"""The checks of an ORU^R01 that need no full parse, in order: the listener runs them before
its ACK (AR when one fails) and the full parse runs the same ones first."""


def precheck_oru(payload: bytes, peek: MshPeek) -> MessageRejected | None:
    """The first failing `CHECKS` rejection, None when all pass: supported type ORU^R01, MSH-10
    set, supported version (MSH-12), a known MSH-18 charset the bytes are valid in, an OBR.

    What needs the full parse (report text present, OBX value types) is found by the worker and
    answered by the enhanced-mode application ACK and the dead letter.
    """
    for check in CHECKS:
        problem = check(payload, peek)
        if problem is not None:
            return problem
    return None


def _parse_oru(payload: bytes, default_charset: str, default_language: str) -> ParsedMessage:
    stripped = payload.removeprefix(b"\xef\xbb\xbf").strip(b"\x0b\x1c\r\n\t ")
    if not stripped:
        raise _reject(
            HL7ErrorCode.SEGMENT_SEQUENCE_ERROR, "empty_message", "the frame holds no HL7 content"
        )
    if not stripped.startswith(b"MSH"):
        raise _reject(
            HL7ErrorCode.SEGMENT_SEQUENCE_ERROR,
            "unparsable",
            "the message does not start with an MSH segment",
        )
    peek = peek_msh(stripped)
    problem = precheck_oru(stripped, peek)
    if problem is not None:
        raise problem
    if len(peek.encoding_characters) > 4 and peek.version < "2.7":
        raise _reject(
            HL7ErrorCode.SEGMENT_SEQUENCE_ERROR,
            "unparsable",
            "MSH-2 has a truncation character (5 encoding characters) before HL7 v2.7",
        )
    values = Values(peek.encoding, charset_of(stripped, peek.charset, default_charset))
    head = header(peek, values)
    lines = segments(stripped.decode("latin-1"))
    pid: list[str] | None = None
    pv1: list[str] | None = None
    groups: list[tuple[list[str], list[list[str]]]] = []
    for segment in lines[1:]:
        items = fields(segment, peek.encoding)
        name = items[0].strip()
        if name == "PID" and pid is None:
            pid = items
        elif name == "PV1" and pv1 is None:
            pv1 = items
        elif name == "OBR":
            groups.append((items, []))
        elif name == "OBX" and groups:
            groups[-1][1].append(items)
    reports: list[Report] = []
    rejected: list[MessageRejected] = []
    for obr, obxs in groups:
        try:
            reports.append(_report(head, obr, obxs, pid, pv1, values, default_language))
        except MessageRejected as exc:
            rejected.append(exc)
    if not reports:
        first = rejected[0]
        raise type(first)(first.code, first.reason, first.detail)  # NoReportText stays one
    return ParsedMessage(header=head, reports=tuple(reports), rejected=tuple(rejected))
