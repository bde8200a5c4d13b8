"""HL7v2 ORU^R01 -> `Report` (one per OBR), with typed rejections.

hl7apy parses the message's MSH, PID, PV1, ORC and OBR segments (tolerant validation) and so
decides whether it is structurally usable; the field values are then read from the raw ER7 segments with the message's own
encoding characters, because the narrative must be unescaped exactly once (hl7apy re-escapes
values such as `\\X41\\` when it serialises them).

Narrative: OBX-2 value types TX, FT, ST (each repetition `~` is a line), CE/CWE (the text
component), ED with text/plain (Base64 or plain). Lines are joined in OBX-1 (set id), then OBX-4
(sub-id), then file order. Escapes `\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\` are resolved and
`\\.br\\` becomes a newline; the text never holds a carriage return.

Charset: MSH-18 (UNICODE UTF-8, 8859/1, ASCII); when empty, `default_charset`, and if that is
UTF-8 and the bytes are not valid UTF-8, ISO-8859-1 (seen in real feeds without MSH-18).

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
import codecs
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from mappings.errors import HL7ErrorCode, MessageRejected, RejectionFactory, map_exceptions
from mappings.language import detect_language
from mappings.hl7.msh import MshPeek, delimiters
from mappings.report import (
    Coding,
    EntityIdentifier,
    HL7Field,
    PatientIdentifier,
    Report,
    ResultStatus,
)
from mappings.sections import find_sections

SUPPORTED_VERSIONS = (
    "2.3",
    "2.3.1",
    "2.4",
    "2.5",
    "2.5.1",
    "2.6",
    "2.7",
    "2.7.1",
    "2.8",
    "2.8.1",
    "2.8.2",
)
# hl7apy has no 2.7.1 library: parse those with the 2.7 one (same ORU^R01 structure).
_HL7APY_VERSION = {"2.7.1": "2.7"}
_STRUCTURAL_SEGMENTS = frozenset({"MSH", "PID", "PV1", "ORC", "OBR"})
NARRATIVE_TYPES = frozenset({"TX", "FT", "ST", "CE", "CWE", "ED"})
_CHARSETS = {
    "": None,
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "ASCII": "ascii",
}
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
class MessageHeader:
    """The MSH fields radbridge uses."""

    sending_application: str | None
    sending_facility: str | None
    message_type: str
    trigger_event: str
    control_id: str
    version: str
    charset: str
    accept_ack_type: str | None
    application_ack_type: str | None


@dataclass(frozen=True)
class ParsedMessage:
    """One ORU^R01: its header, the Reports, and per-OBR rejections."""

    header: MessageHeader
    reports: tuple[Report, ...]
    rejected: tuple[MessageRejected, ...]


@dataclass(frozen=True)
class _Encoding:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


def _reject(code: HL7ErrorCode, reason: str, detail: str) -> MessageRejected:
    return MessageRejected(code, reason, detail)


def _msh18(payload: bytes) -> str:
    first = payload.split(b"\r", 1)[0]
    if len(first) < 4:
        return ""
    fields = first.split(first[3:4])
    return fields[17].split(b"^")[0].decode("ascii", "replace").strip() if len(fields) > 17 else ""


def decode_payload(payload: bytes, default_charset: str) -> tuple[str, str]:
    """(text, charset used): MSH-18 honoured, else the default with an ISO-8859-1 fallback."""
    declared = _msh18(payload)
    if declared.upper() not in _CHARSETS:
        raise _reject(
            HL7ErrorCode.TABLE_VALUE_NOT_FOUND,
            "charset_error",
            f"unsupported MSH-18 charset {declared!r} (supported: UNICODE UTF-8, 8859/1, 8859/15, ASCII)",
        )
    charset = _CHARSETS[declared.upper()] or default_charset
    try:
        return payload.decode(charset), charset
    except UnicodeDecodeError:
        if declared or codecs.lookup(charset).name != "utf-8":
            raise _reject(
                HL7ErrorCode.DATA_TYPE_ERROR,
                "charset_error",
                f"message bytes are not valid {charset.upper()} (MSH-18 {declared or 'empty'})",
            ) from None
        return payload.decode("iso-8859-1"), "iso-8859-1"


def unescape(value: str, enc: _Encoding, charset: str) -> str:
    """Resolve HL7 escape sequences; `\\.br\\` -> newline; formatting commands dropped."""
    esc = enc.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        end = value.find(esc, i + 1) if char == esc else -1
        if end < 0:
            out.append(char)
            i += 1
            continue
        token = value[i + 1 : end]
        replacement = _escape_token(token, enc, charset)
        if replacement is None:  # not an escape sequence: keep the text as it is
            out.append(char)
            i += 1
            continue
        out.append(replacement)
        i = end + 1
    return "".join(out)


def _escape_token(token: str, enc: _Encoding, charset: str) -> str | None:
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
    }
    if token in simple:
        return simple[token]
    if token in ("H", "N"):  # highlight on/off
        return ""
    if token == ".br":  # noqa: S105 - an HL7 formatting command
        return "\n"
    if token.startswith(".sp"):
        count = token[3:].strip()
        return "\n" * (min(int(count), 100) if count.isascii() and count.isdigit() else 1)
    if token.startswith((".fi", ".nf", ".in", ".ti", ".sk", ".ce")):
        return ""
    if token.startswith("X") and len(token) > 1:
        try:
            return bytes.fromhex(token[1:]).decode(charset, errors="replace")
        except ValueError:
            return None
    return None


def _split_segments(text: str) -> list[str]:
    return [seg for seg in re.split(r"\r\n|\r|\n", text) if seg.strip()]


def _encoding(msh: str) -> _Encoding:
    separator, chars = delimiters(msh)
    return _Encoding(
        field=separator,
        component=chars[0],
        repetition=chars[1],
        escape=chars[2],
        subcomponent=chars[3],
    )


def _fields(segment: str, enc: _Encoding) -> list[str]:
    """Fields of a segment, numbered like HL7 (index 1 = first field; MSH is shifted to match)."""
    parts = segment.split(enc.field)
    if parts[0] == "MSH":
        return ["MSH", enc.field, *parts[1:]]
    return parts


def _get(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def _component(value: str, enc: _Encoding, index: int, charset: str) -> str:
    parts = value.split(enc.repetition, 1)[0].split(enc.component)
    raw = parts[index - 1] if index - 1 < len(parts) else ""
    return unescape(raw.split(enc.subcomponent, 1)[0], enc, charset).strip()


def _opt(text: str) -> str | None:
    return text or None


def _subcomponent(value: str, enc: _Encoding, index: int, sub: int, charset: str) -> str:
    """Component `index`, subcomponent `sub` (both 1-based) of the first repetition."""
    parts = value.split(enc.repetition, 1)[0].split(enc.component)
    raw = parts[index - 1] if index - 1 < len(parts) else ""
    subs = raw.split(enc.subcomponent)
    return unescape(subs[sub - 1], enc, charset).strip() if sub - 1 < len(subs) else ""


def structured(value: str, enc: _Encoding, charset: str) -> HL7Field:
    """A field as the source sent it, unescaped: repetitions x components x subcomponents
    (trailing empty pieces dropped)."""

    def trimmed(items: list[Any]) -> tuple[Any, ...]:
        while items and not items[-1]:
            items.pop()
        return tuple(items)

    return trimmed(
        [
            trimmed(
                [
                    trimmed([unescape(s, enc, charset) for s in component.split(enc.subcomponent)])
                    for component in repetition.split(enc.component)
                ]
            )
            for repetition in value.split(enc.repetition)
        ]
    )


def _entity(value: str, enc: _Encoding, charset: str) -> EntityIdentifier | None:
    """An EI field (OBR-2, OBR-3): entity id, namespace id, universal id, universal id type."""
    entity = _component(value, enc, 1, charset)
    if not entity:
        return None
    return EntityIdentifier(
        value=entity,
        namespace=_opt(_component(value, enc, 2, charset)),
        universal_id=_opt(_component(value, enc, 3, charset)),
        universal_id_type=_opt(_component(value, enc, 4, charset)),
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


def _structural_parse(text: str, version: str) -> None:
    """Let hl7apy parse the message's structural segments; a failure is an `unparsable` rejection."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    # OBX narrative is read by our own reader; hl7apy checks the header, patient and order
    # segments (parsing every OBX field with hl7apy costs ~0.1 s per report).
    er7 = "\r".join(seg for seg in _split_segments(text) if seg[:3] in _STRUCTURAL_SEGMENTS)
    library_version = _HL7APY_VERSION.get(version)
    if library_version:
        er7 = er7.replace(f"|{version}", f"|{library_version}", 1)
    from hl7apy.exceptions import HL7apyException

    # hl7apy's own errors, and the ValueError/LookupError it lets escape on malformed fields;
    # anything else (RecursionError, TypeError …) is a bug: an internal error, retried
    rejections: dict[type[BaseException], RejectionFactory] = {
        HL7apyException: _hl7apy_refused,
        ValueError: _hl7apy_refused,
        LookupError: _hl7apy_refused,
    }
    with map_exceptions(rejections, "hl7apy structural parse"):
        parse_message(er7, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)


def _hl7apy_refused(exc: BaseException) -> MessageRejected:
    return _reject(
        HL7ErrorCode.SEGMENT_SEQUENCE_ERROR,
        "unparsable",
        f"HL7 parser refused the message ({type(exc).__name__})",
    )


def _header(msh: list[str], enc: _Encoding, charset: str) -> MessageHeader:
    message_type = _get(msh, 9)
    return MessageHeader(
        sending_application=_opt(_component(_get(msh, 3), enc, 1, charset)),
        sending_facility=_opt(_component(_get(msh, 4), enc, 1, charset)),
        message_type=_component(message_type, enc, 1, charset),
        trigger_event=_component(message_type, enc, 2, charset),
        control_id=unescape(_get(msh, 10), enc, charset).strip(),  # ST: the whole field
        version=_component(_get(msh, 12), enc, 1, charset),
        charset=charset,
        accept_ack_type=_opt(_component(_get(msh, 15), enc, 1, charset)),
        application_ack_type=_opt(_component(_get(msh, 16), enc, 1, charset)),
    )


def _patient_identifiers(
    pid: list[str] | None, enc: _Encoding, charset: str
) -> tuple[PatientIdentifier, ...]:
    if pid is None:
        return ()
    result: list[PatientIdentifier] = []
    for repetition in _get(pid, 3).split(enc.repetition):
        value = _component(repetition, enc, 1, charset)
        if value:
            result.append(
                PatientIdentifier(
                    value=value,
                    assigner=_opt(_component(repetition, enc, 4, charset)),
                    type_code=_opt(_component(repetition, enc, 5, charset)),
                    assigner_id=_opt(_subcomponent(repetition, enc, 4, 2, charset)),
                    assigner_id_type=_opt(_subcomponent(repetition, enc, 4, 3, charset)),
                )
            )
    return tuple(result)


def _obx_lines(obx: list[str], enc: _Encoding, charset: str) -> tuple[list[str], bool]:
    """(lines of narrative, True if the OBX was a non-text ED such as a PDF)."""
    value_type = _get(obx, 2).strip().upper()
    raw = _get(obx, 5)
    if value_type in ("TX", "FT", "ST"):
        lines: list[str] = []
        for repetition in raw.split(enc.repetition):
            lines.extend(unescape(repetition, enc, charset).split("\n"))
        return lines, False
    if value_type in ("CE", "CWE"):
        text = _component(raw, enc, 2, charset) or _component(raw, enc, 1, charset)
        return ([text] if text else []), False
    if value_type == "ED":
        parts = raw.split(enc.component)
        data_type = (parts[1] if len(parts) > 1 else "").upper()
        subtype = (parts[2] if len(parts) > 2 else "").upper()
        encoding = (parts[3] if len(parts) > 3 else "").upper()
        data = parts[4] if len(parts) > 4 else ""
        if data_type != "TEXT" and subtype not in ("PLAIN", "TEXT/PLAIN"):
            return [], True
        if encoding == "BASE64":
            try:
                data = base64.b64decode(data, validate=False).decode(charset, errors="replace")
            except (binascii.Error, ValueError):
                return [], False
        else:
            data = unescape(data, enc, charset)
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


def _observation_time(obr: list[str], enc: _Encoding, charset: str) -> datetime | None:
    """OBR-7 (observation date/time); when empty OBR-6 (requested), then OBR-22 (report time)."""
    for index in (7, 6, 22):
        moment = parse_timestamp(_component(_get(obr, index), enc, 1, charset))
        if moment is not None:
            return moment
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
    enc: _Encoding,
    default_language: str,
) -> Report:
    charset = header.charset
    set_id = _component(_get(obr, 1), enc, 1, charset) or "1"
    keyed: list[tuple[float, float, int, list[str]]] = []
    saw_binary = False
    for index, obx in enumerate(obxs):
        lines, binary = _obx_lines(obx, enc, charset)
        saw_binary = saw_binary or binary
        if lines:
            keyed.append((_int_or_large(_get(obx, 1)), _int_or_large(_get(obx, 4)), index, lines))
    keyed.sort(key=lambda item: (item[0], item[1], item[2]))
    text = normalise_text([line for *_, lines in keyed for line in lines])
    if not text.strip():
        if saw_binary:
            raise _reject(
                HL7ErrorCode.DATA_TYPE_ERROR,
                "pdf_only",
                f"OBR {set_id}: only non-text (e.g. PDF) content; radbridge needs text/plain narrative",
            )
        raise _reject(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "no_narrative",
            f"OBR {set_id}: no report text in OBX",
        )
    procedure_field = _get(obr, 4)
    procedure = Coding(
        code=_opt(_component(procedure_field, enc, 1, charset)),
        display=_opt(
            _component(procedure_field, enc, 2, charset)
            or _component(procedure_field, enc, 5, charset)
        ),
        system=_opt(_component(procedure_field, enc, 3, charset)),
    )
    filler = _opt(_component(_get(obr, 3), enc, 1, charset))
    return Report(
        source_format="hl7v2",
        report_id=safe_id(f"{header.control_id}-{set_id}"),
        message_control_id=header.control_id,
        hl7_version=header.version,
        obr_set_id=set_id,
        sending_application=header.sending_application,
        sending_facility=header.sending_facility,
        accession_number=filler,
        placer_order_number=_opt(_component(_get(obr, 2), enc, 1, charset)),
        filler_order_number=filler,
        patient_identifiers=_patient_identifiers(pid, enc, charset),
        patient_name=structured(_get(pid, 5), enc, charset) if pid else (),
        visit=tuple(structured(f, enc, charset) for f in pv1[1:]) if pv1 else None,
        placer_order=_entity(_get(obr, 2), enc, charset),
        filler_order=_entity(_get(obr, 3), enc, charset),
        procedure=procedure if (procedure.code or procedure.display) else None,
        modality=_opt(_component(_get(obr, 24), enc, 1, charset).upper()),
        body_part=_opt(_component(_get(obr, 15), enc, 4, charset).upper()),
        result_status=_result_status(
            _component(_get(obr, 25), enc, 1, charset),
            [_component(_get(obx, 11), enc, 1, charset) for obx in obxs],
        ),
        observation_time=_observation_time(obr, enc, charset),
        language=detect_language(text, default_language),
        text=text,
        sections=find_sections(text),
    )


def parse_oru(
    payload: bytes, *, default_charset: str = "utf-8", default_language: str = "en"
) -> ParsedMessage:
    """Parse one ORU^R01 into Reports.

    `MessageRejected` for unusable messages (the checks below, and the hl7apy errors its table
    lists); any other exception is a bug: `InternalMappingError` (logged with a correlation id,
    retried by the worker, never a silent dead letter).
    """
    with map_exceptions({}, "parse_oru"):
        return _parse_oru(payload, default_charset, default_language)


def precheck_oru(payload: bytes, peek: MshPeek) -> MessageRejected | None:
    """The cheap checks made before the ACK (the listener answers AR when one fails):
    supported version (MSH-12), a known MSH-18 charset the bytes are valid in, at least one OBR.

    What needs the full parse (report text present, OBX value types, hl7apy structure) is found
    by the worker and answered by the enhanced-mode application ACK and the dead letter.
    """
    if peek.version not in SUPPORTED_VERSIONS:
        return _reject(
            HL7ErrorCode.UNSUPPORTED_VERSION_ID,
            "unsupported_version",
            f"HL7 version (MSH-12) {peek.version!r} is not supported",
        )
    if peek.charset:
        try:
            decode_payload(payload, "utf-8")
        except MessageRejected as exc:
            return exc
    separator = re.escape(peek.field_separator.encode("latin-1"))
    if not re.search(rb"(?:^|[\r\n])OBR(?:" + separator + rb"|[\r\n]|$)", payload):
        return _reject(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "no_observation_request",
            "the ORU^R01 has no OBR segment",
        )
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
    text, charset = decode_payload(stripped, default_charset)
    segments = _split_segments(text)
    enc = _encoding(segments[0])
    msh = _fields(segments[0], enc)
    header = _header(msh, enc, charset)
    if not header.control_id:
        raise _reject(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "unparsable",
            "MSH-10 (message control id) is empty",
        )
    if header.message_type != "ORU":
        raise _reject(
            HL7ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "not_oru_r01",
            f"message type {header.message_type!r} is not ORU",
        )
    if header.trigger_event not in ("R01", ""):
        raise _reject(
            HL7ErrorCode.UNSUPPORTED_EVENT_CODE,
            "not_oru_r01",
            f"trigger event {header.trigger_event!r} is not R01",
        )
    if header.version not in SUPPORTED_VERSIONS:
        raise _reject(
            HL7ErrorCode.UNSUPPORTED_VERSION_ID,
            "unsupported_version",
            f"HL7 version {header.version!r} is not supported",
        )
    _structural_parse(text, header.version)
    pid: list[str] | None = None
    pv1: list[str] | None = None
    groups: list[tuple[list[str], list[list[str]]]] = []
    for segment in segments[1:]:
        fields = _fields(segment, enc)
        name = fields[0].strip()
        if name == "PID" and pid is None:
            pid = fields
        elif name == "PV1" and pv1 is None:
            pv1 = fields
        elif name == "OBR":
            groups.append((fields, []))
        elif name == "OBX" and groups:
            groups[-1][1].append(fields)
    if not groups:
        raise _reject(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "no_observation_request",
            "the ORU^R01 has no OBR segment",
        )
    reports: list[Report] = []
    rejected: list[MessageRejected] = []
    for obr, obxs in groups:
        try:
            reports.append(_report(header, obr, obxs, pid, pv1, enc, default_language))
        except MessageRejected as exc:
            rejected.append(exc)
    if not reports:
        first = rejected[0]
        raise _reject(first.code, first.reason, first.detail)
    return ParsedMessage(header=header, reports=tuple(reports), rejected=tuple(rejected))
