"""A fast MSH peek (fields 1-6, 9-12, 15, 16, 18) without a full HL7 parse: runs before the ACK.

MSH-1 and MSH-2 are checked here, because every later field is read with them: MSH-1 must be
one non-alphanumeric character, MSH-2 four (five from v2.7: the truncation character) distinct
non-alphanumeric characters other than MSH-1. Anything else is a `MessageRejected` naming the
field (AR before the ACK). Values are decoded as ISO-8859-1, so every byte maps to one character
and an ACK encoded the same way gives the sender's bytes back unchanged, whatever its charset.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappings.errors import HL7ErrorCode, MessageRejected

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


def _is_delimiter(char: str) -> bool:
    return not char.isalnum() and not char.isspace()


def delimiters(msh: str) -> tuple[str, str]:
    """(MSH-1, MSH-2) of an MSH segment's text; MessageRejected naming the field when unusable."""
    separator = msh[3:4]
    if not separator or not _is_delimiter(separator):
        raise MessageRejected(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "unparsable",
            "MSH-1 (field separator) is missing or not a delimiter character",
        )
    encoding = msh[4:].split(separator, 1)[0]
    if (
        len(encoding) not in (4, 5)
        or len(set(encoding)) != len(encoding)
        or separator in encoding
        or not all(_is_delimiter(char) for char in encoding)
    ):
        raise MessageRejected(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "unparsable",
            "MSH-2 (encoding characters) must be 4 distinct delimiter characters, such as ^~\\&",
        )
    return separator, encoding


def peek_msh(payload: bytes) -> MshPeek:
    """Read the MSH segment's routing fields; MessageRejected when there is no usable MSH."""
    start = payload.lstrip(b"\x0b\r\n\t ")
    if not start.startswith(b"MSH"):
        raise MessageRejected(HL7ErrorCode.SEGMENT_SEQUENCE_ERROR, "unparsable", "no MSH segment")
    line = start.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    separator, encoding = delimiters(line)
    fields = ["MSH", separator, *line.split(separator)[1:]]
    component = encoding[0]

    def first(index: int) -> str:
        value = fields[index] if index < len(fields) else ""
        return value.split(component, 1)[0].strip()

    message_type = fields[9] if len(fields) > 9 else ""
    return MshPeek(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=first(3),
        sending_facility=first(4),
        receiving_application=first(5),
        receiving_facility=first(6),
        message_type="^".join(message_type.split(component)[:2]),
        control_id=(fields[10] if len(fields) > 10 else "").strip(),
        processing_id=first(11),
        version=first(12),
        accept_ack_type=first(15),
        application_ack_type=first(16),
        charset=first(18),
    )
