"""ER7 (HL7v2's `|^~\\&` text encoding) read with the message's own encoding characters.

A message is tokenised on its bytes' ISO-8859-1 view (every byte is one character), so segment,
field, component and escape boundaries are the sender's bytes whatever its charset, and the MSH
read before the ACK (`mappings.hl7.msh`) is the one the parse uses. A value is decoded to the
message's charset (`Values`) only when it is read, then unescaped: `\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`
give the delimiters back, `\\Xhh..\\` the bytes in the charset, `\\.br\\` a newline, `\\.sp n\\`
n newlines, other formatting commands and `\\H\\ \\N\\` nothing; anything else between escape
characters is kept as it is.

Charset (MSH-18): UNICODE UTF-8, 8859/1, 8859/15, ASCII; when empty, the default, and if that is
UTF-8 and the bytes are not valid UTF-8, ISO-8859-1 (seen in real feeds without MSH-18).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.report import HL7Field

CHARSETS = {
    "": None,
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "ASCII": "ascii",
}
_SEGMENT_ENDS = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Encoding:
    """MSH-1 and the four MSH-2 encoding characters."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


def _is_delimiter(char: str) -> bool:
    return not char.isalnum() and not char.isspace()


def encoding_of(msh: str) -> Encoding:
    """MSH-1 and MSH-2 of an MSH segment's text; MessageRejected naming the field when unusable:
    MSH-1 must be one non-alphanumeric character, MSH-2 four (five from v2.7: the truncation
    character) distinct non-alphanumeric characters other than MSH-1."""
    separator = msh[3:4]
    if not separator or not _is_delimiter(separator):
        raise MessageRejected(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "unparsable",
            "MSH-1 (field separator) is missing or not a delimiter character",
        )
    chars = msh[4:].split(separator, 1)[0]
    if (
        len(chars) not in (4, 5)
        or len(set(chars)) != len(chars)
        or separator in chars
        or not all(_is_delimiter(char) for char in chars)
    ):
        raise MessageRejected(
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
            "unparsable",
            "MSH-2 (encoding characters) must be 4 distinct delimiter characters, such as ^~\\&",
        )
    return Encoding(separator, chars[0], chars[1], chars[2], chars[3])


def segments(text: str) -> list[str]:
    """The non-blank segments of a message (`\\r`, `\\n` or `\\r\\n` ends)."""
    return [segment for segment in _SEGMENT_ENDS.split(text) if segment.strip()]


def fields(segment: str, enc: Encoding) -> list[str]:
    """Fields of a segment, numbered like HL7 (index 1 = first field; MSH is shifted to match)."""
    parts = segment.split(enc.field)
    if parts[0] == "MSH":
        return ["MSH", enc.field, *parts[1:]]
    return parts


def get(items: list[str], index: int) -> str:
    """Field `index` of `fields`' list ('' when absent)."""
    return items[index] if index < len(items) else ""


def charset_of(payload: bytes, declared: str, default_charset: str) -> str:
    """The charset the payload is read in: MSH-18 (`declared`) honoured, else the default with
    an ISO-8859-1 fallback; MessageRejected when unknown or when the bytes are not valid in it."""
    if declared.upper() not in CHARSETS:
        raise MessageRejected(
            HL7ErrorCode.TABLE_VALUE_NOT_FOUND,
            "charset_error",
            f"unsupported MSH-18 charset {declared!r} (supported: UNICODE UTF-8, 8859/1, 8859/15, ASCII)",
        )
    charset = CHARSETS[declared.upper()] or default_charset
    try:
        payload.decode(charset)
    except UnicodeDecodeError:
        if declared or codecs.lookup(charset).name != "utf-8":
            raise MessageRejected(
                HL7ErrorCode.DATA_TYPE_ERROR,
                "charset_error",
                f"message bytes are not valid {charset.upper()} (MSH-18 {declared or 'empty'})",
            ) from None
        return "iso-8859-1"
    return charset


class Values:
    """Reads values of one message's ISO-8859-1 view: decoded to its charset and unescaped."""

    def __init__(self, enc: Encoding, charset: str) -> None:
        self.enc = enc
        self.charset = charset
        self._identity = codecs.lookup(charset).name == "iso8859-1"

    def decode(self, raw: str) -> str:
        """A piece of the ISO-8859-1 view as the message's charset says (no unescaping)."""
        if self._identity or raw.isascii():
            return raw
        return raw.encode("latin-1").decode(self.charset, errors="replace")

    def text(self, raw: str) -> str:
        """A piece of the view decoded and unescaped."""
        return self.unescape(self.decode(raw))

    def unescape(self, value: str) -> str:
        """Resolve HL7 escape sequences; `\\.br\\` -> newline; formatting commands dropped."""
        esc = self.enc.escape
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
            replacement = self._escape_token(value[i + 1 : end])
            if replacement is None:  # not an escape sequence: keep the text as it is
                out.append(char)
                i += 1
                continue
            out.append(replacement)
            i = end + 1
        return "".join(out)

    def _escape_token(self, token: str) -> str | None:
        enc = self.enc
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
                return bytes.fromhex(token[1:]).decode(self.charset, errors="replace")
            except ValueError:
                return None
        return None

    def component(self, value: str, index: int) -> str:
        """Component `index` (1-based) of the first repetition, its first subcomponent, read."""
        parts = value.split(self.enc.repetition, 1)[0].split(self.enc.component)
        raw = parts[index - 1] if index - 1 < len(parts) else ""
        return self.text(raw.split(self.enc.subcomponent, 1)[0]).strip()

    def subcomponent(self, value: str, index: int, sub: int) -> str:
        """Component `index`, subcomponent `sub` (both 1-based) of the first repetition, read."""
        parts = value.split(self.enc.repetition, 1)[0].split(self.enc.component)
        raw = parts[index - 1] if index - 1 < len(parts) else ""
        subs = raw.split(self.enc.subcomponent)
        return self.text(subs[sub - 1]).strip() if sub - 1 < len(subs) else ""

    def structured(self, value: str) -> HL7Field:
        """A field as the source sent it, read: repetitions x components x subcomponents
        (trailing empty pieces dropped)."""
        enc = self.enc

        def trimmed(items: list[Any]) -> tuple[Any, ...]:
            while items and not items[-1]:
                items.pop()
            return tuple(items)

        return trimmed(
            [
                trimmed(
                    [
                        trimmed([self.text(s) for s in component.split(enc.subcomponent)])
                        for component in repetition.split(enc.component)
                    ]
                )
                for repetition in value.split(enc.repetition)
            ]
        )
