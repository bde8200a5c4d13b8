"""The MSH header, read once with one implementation (`peek_msh`): before the ACK by the
listener, by the full parse (`MessageHeader`), for the application ACK and by tests.

MSH-1 and MSH-2 are checked (`mappings.hl7.er7.encoding_of`), because every later field is read
with them: anything unusable is a `MessageRejected` naming the field (AR before the ACK). Values
are the bytes' ISO-8859-1 view, so every byte maps to one character and an ACK encoded the same
way gives the sender's bytes back unchanged, whatever its charset; `header` reads them in the
message's charset, unescaped, for the Reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.hl7.er7 import Encoding, Values, encoding_of, fields

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
STANDARD_ENCODING = "^~\\&"


@dataclass(frozen=True)
class MshPeek:
    """The MSH fields needed before the ACK (first component, except MSH-10: the whole field)."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str
    encoding: Encoding
    fields: tuple[str, ...]
    """The MSH fields, numbered like HL7 (index 1 = MSH-1), ISO-8859-1 view."""


def peek_msh(payload: bytes) -> MshPeek:
    """Read the MSH segment's routing fields; MessageRejected when there is no usable MSH."""
    start = payload.lstrip(b"\x0b\r\n\t ")
    if not start.startswith(b"MSH"):
        raise MessageRejected(HL7ErrorCode.SEGMENT_SEQUENCE_ERROR, "unparsable", "no MSH segment")
    line = start.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    enc = encoding_of(line)
    msh = fields(line, enc)
    component = enc.component

    def first(index: int) -> str:
        value = msh[index] if index < len(msh) else ""
        return value.split(component, 1)[0].strip()

    message_type = msh[9] if len(msh) > 9 else ""
    return MshPeek(
        field_separator=enc.field,
        encoding_characters=msh[2],
        sending_application=first(3),
        sending_facility=first(4),
        receiving_application=first(5),
        receiving_facility=first(6),
        message_type="^".join(message_type.split(component)[:2]),
        control_id=(msh[10] if len(msh) > 10 else "").strip(),
        processing_id=first(11),
        version=first(12),
        accept_ack_type=first(15),
        application_ack_type=first(16),
        charset=first(18),
        encoding=enc,
        fields=tuple(msh),
    )


@dataclass(frozen=True)
class MessageHeader:
    """The MSH fields the Reports carry, read in the message's charset and unescaped."""

    sending_application: str | None
    sending_facility: str | None
    message_type: str
    trigger_event: str
    control_id: str
    version: str
    charset: str
    accept_ack_type: str | None
    application_ack_type: str | None


def header(peek: MshPeek, values: Values) -> MessageHeader:
    """The peeked MSH read for the Reports (`values`: the message's charset)."""
    msh = list(peek.fields)

    def first(index: int) -> str:
        return values.component(msh[index] if index < len(msh) else "", 1)

    message_type = msh[9] if len(msh) > 9 else ""
    return MessageHeader(
        sending_application=first(3) or None,
        sending_facility=first(4) or None,
        message_type=values.component(message_type, 1),
        trigger_event=values.component(message_type, 2),
        control_id=values.text(msh[10] if len(msh) > 10 else "").strip(),  # ST: the whole field
        version=first(12),
        charset=values.charset,
        accept_ack_type=first(15) or None,
        application_ack_type=first(16) or None,
    )
