"""A fast MSH peek (fields 3-6, 9-12, 15, 16, 18) without a full HL7 parse: runs before the ACK."""

from __future__ import annotations

from dataclasses import dataclass

from mappings.errors import HL7ErrorCode, MessageRejected


@dataclass(frozen=True)
class MshPeek:
    """The MSH fields needed before the ACK."""

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


def peek_msh(payload: bytes) -> MshPeek:
    """Read the MSH segment's routing fields; MessageRejected when there is no usable MSH."""
    start = payload.lstrip(b"\x0b\r\n\t ")
    if not start.startswith(b"MSH") or len(start) < 8:
        raise MessageRejected(HL7ErrorCode.SEGMENT_SEQUENCE_ERROR, "unparsable", "no MSH segment")
    line = start.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    separator = line[3]
    fields = ["MSH", separator, *line.split(separator)[1:]]
    component = line[4]

    def first(index: int) -> str:
        value = fields[index] if index < len(fields) else ""
        return value.split(component, 1)[0].strip()

    message_type = fields[9] if len(fields) > 9 else ""
    return MshPeek(
        field_separator=separator,
        encoding_characters=fields[2] if len(fields) > 2 else "",
        sending_application=first(3),
        sending_facility=first(4),
        receiving_application=first(5),
        receiving_facility=first(6),
        message_type="^".join(message_type.split(component)[:2]),
        control_id=first(10),
        processing_id=first(11),
        version=first(12),
        accept_ack_type=first(15),
        application_ack_type=first(16),
        charset=first(18),
    )
