"""HL7v2 acknowledgements: ACK/NAK messages in original and enhanced mode.

Original mode (MSH-15 and MSH-16 empty): AA accepted, AE application error, AR rejected.
Enhanced mode (MSH-15 or MSH-16 set): the listener sends a commit ACK CA/CE/CR when MSH-15 asks
for one: AL always, NE never, ER only on error, SU only on success.

The ACK mirrors the inbound encoding characters and version, swaps sender and receiver, sets
MSA-2 to the inbound MSH-10 and, on error, adds an ERR segment with the table 0357 code: ERR-3
and severity ERR-4 for v2.5 and later, ERR-1 for v2.3/2.4. Texts never contain report content.
`classify_ack` is the one reader of a received ACK (the HTTP API and ORU delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mappings.errors import HL7ErrorCode
from mappings.hl7.msh import STANDARD_ENCODING, SUPPORTED_VERSIONS, MshPeek

DEFAULT_VERSION = "2.5"
SEPARATOR = "|"
_ERR3_VERSIONS = ("2.5", "2.6", "2.7", "2.8")


class AckCode(StrEnum):
    """MSA-1 acknowledgement codes (HL7 table 0008)."""

    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"


class Disposition(StrEnum):
    """What became of an inbound message, which the ACK code tells: accepted (AA/CA), an error
    the sender may resend after (AE/CE), rejected for good (AR/CR)."""

    ACCEPTED = "accepted"
    ERROR = "error"
    REJECTED = "rejected"


_ORIGINAL = {
    Disposition.ACCEPTED: AckCode.AA,
    Disposition.ERROR: AckCode.AE,
    Disposition.REJECTED: AckCode.AR,
}
_ENHANCED = {
    Disposition.ACCEPTED: AckCode.CA,
    Disposition.ERROR: AckCode.CE,
    Disposition.REJECTED: AckCode.CR,
}


@dataclass(frozen=True)
class AckErrorDetail:
    """The ERR content of a negative acknowledgement (data, not an exception)."""

    code: HL7ErrorCode
    text: str
    severity: str = "E"


def is_enhanced(peek: MshPeek | None) -> bool:
    """True when the sender asked for enhanced acknowledgement (MSH-15 or MSH-16 set)."""
    return peek is not None and bool(peek.accept_ack_type or peek.application_ack_type)


def needs_commit_ack(peek: MshPeek | None, outcome: Disposition) -> bool:
    """Whether an ACK is sent now (always in original mode; per MSH-15 in enhanced mode)."""
    if not is_enhanced(peek):
        return True
    assert peek is not None
    rule = (peek.accept_ack_type or "AL").upper()
    if rule == "NE":
        return False
    if rule == "ER":
        return outcome is not Disposition.ACCEPTED
    if rule == "SU":
        return outcome is Disposition.ACCEPTED
    return True  # AL and anything unknown: answering is the safe side


def needs_application_ack(peek: MshPeek | None, outcome: Disposition) -> bool:
    """Whether an application ACK is owed later (enhanced mode, MSH-16 AL/ER/SU)."""
    if peek is None or not peek.application_ack_type:
        return False
    rule = peek.application_ack_type.upper()
    return (
        rule == "AL"
        or (rule == "ER" and outcome is not Disposition.ACCEPTED)
        or (rule == "SU" and outcome is Disposition.ACCEPTED)
    )


def ack_code(peek: MshPeek | None, outcome: Disposition, *, application: bool = False) -> AckCode:
    """The MSA-1 code for an outcome: commit codes in enhanced mode, AA/AE/AR otherwise and for
    application acknowledgements."""
    return (_ENHANCED if is_enhanced(peek) and not application else _ORIGINAL)[outcome]


def _escape(text: str) -> str:
    """`text` as an ER7 value in the ACK's delimiters (no segment ends)."""
    mapping = {"\\": "E", SEPARATOR: "F", "^": "S", "~": "R", "&": "T"}
    if not any(c in text for c in (*mapping, "\r", "\n")):
        return text  # the common case (plain ids and names), checked before the ACK is sent
    return (
        "".join(f"\\{mapping[c]}\\" if c in mapping else c for c in text)
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _translate(raw: str, peek: MshPeek) -> str:
    """An inbound ER7 value in the ACK's delimiters: the sender's delimiters become ours, and
    characters that are ours but were plain text for the sender are escaped."""
    if peek.field_separator == SEPARATOR and peek.encoding_characters[:4] == STANDARD_ENCODING:
        return raw.replace("\r", " ").replace("\n", " ")
    theirs = dict(zip(peek.encoding_characters[:4], STANDARD_ENCODING, strict=True))
    return "".join(theirs.get(c) or _escape(c) for c in raw)


def build_ack(
    peek: MshPeek | None,
    outcome: Disposition,
    *,
    control_id: str,
    error: AckErrorDetail | None = None,
    now: datetime | None = None,
    application: bool = False,
) -> bytes:
    """The ACK message (ER7 bytes, `\\r` segment ends) for an inbound message."""
    # the inbound version when radbridge speaks it; else (e.g. an AR for version 3.0) its own
    version = peek.version if peek and peek.version in SUPPORTED_VERSIONS else DEFAULT_VERSION
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    trigger = _escape(peek_trigger(peek))
    message_type = f"ACK^{trigger}^ACK" if version >= "2.4" else f"ACK^{trigger}"

    def inbound(value: str) -> str:
        return _translate(value, peek) if peek else ""

    msh = SEPARATOR.join(
        [
            "MSH",
            STANDARD_ENCODING,
            inbound(peek.receiving_application) if peek else "",
            inbound(peek.receiving_facility) if peek else "",
            inbound(peek.sending_application) if peek else "",
            inbound(peek.sending_facility) if peek else "",
            stamp,
            "",
            message_type,
            _escape(control_id),
            inbound(peek.processing_id) if peek and peek.processing_id else "P",
            _escape(version),
        ]
    )
    code = ack_code(peek, outcome, application=application)
    msa = SEPARATOR.join(["MSA", code.value, inbound(peek.control_id) if peek else ""])
    segments = [msh, msa]
    if error is not None:
        text = _escape(error.text)
        cwe = "^".join([error.code.value, text, "HL70357"])
        if version[:3] in _ERR3_VERSIONS:
            segments.append(SEPARATOR.join(["ERR", "", "", cwe, error.severity, "", "", "", text]))
        else:
            segments.append(
                SEPARATOR.join(["ERR", "^^^" + "&".join([error.code.value, text, "HL70357"])])
            )
    return ("\r".join(segments) + "\r").encode("latin-1", errors="replace")


def peek_trigger(peek: MshPeek | None) -> str:
    """The trigger event of the inbound message (R01 when unknown)."""
    if peek and "^" in peek.message_type:
        return peek.message_type.split("^", 1)[1] or "R01"
    return "R01"


def _msa1(ack: bytes) -> str | None:
    """MSA-1 of an ACK, read with the ACK's own field separator (MSH-1); None without an MSA."""
    separator = ack[3:4] if ack.startswith(b"MSH") and len(ack) > 3 else b"|"
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA" + separator):
            code = segment.split(separator)[1].strip()
            return code.decode("ascii", errors="replace") or None
    return None


def classify_ack(ack: bytes) -> tuple[Disposition, str | None]:
    """(what the receiver did, its MSA-1) for an ACK radbridge received (the HTTP API's own
    answer, an ORU destination's): AA/CA accepted, AR/CR rejected (do not resend unchanged),
    anything else (AE, CE, no MSA, an unknown code) an error worth retrying."""
    code = _msa1(ack)
    if code in (AckCode.AA, AckCode.CA):
        return Disposition.ACCEPTED, code
    if code in (AckCode.AR, AckCode.CR):
        return Disposition.REJECTED, code
    return Disposition.ERROR, code
