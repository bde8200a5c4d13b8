"""JSON of a large HTTP body, parsed without a second copy of its large strings (issue 25).

`json.loads(body)` holds the body, its decoded text and the parsed values at once: three times
the body for a DiagnosticReport whose base64 `presentedForm.data` is most of it. Here every
string VALUE longer than LARGE_STRING bytes, free of escapes and control characters (base64 is),
is cut out of the text before parsing (a unique stand-in takes its place) and put back into
the parsed value, decoded straight from the body: the body plus one copy of its strings.
Anything else (a small body, escapes, another encoding than UTF-8) is `json.loads` as it is,
so the same bodies parse to the same values and the same bodies fail.

`stand_ins` + `dumps` serialise parts of such a body (a Bundle split per report) to the bytes
`json.dumps(part, separators=(",", ":")).encode()` gives, the large strings spliced in from the
body: no text of the whole part and no second copy of it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

LARGE_STRING = 64 * 1024
_CONTROL = re.compile(rb"[\x00-\x1f\\]")  # a raw control character or an escape
_SPACE = b" \t\r\n"
_NOT_ASCII = re.compile(rb"[\x80-\xff]")
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True)
class Scan:
    """What one pass over a JSON body found: how deep its arrays and objects nest (counted up
    to `limit` + 1), and the (first, end) contents of its long string values without escapes
    or control characters (a string followed by `:` is a key: never one of them)."""

    depth: int
    large: list[tuple[int, int]]


def scan(body: bytes, limit: int) -> Scan:
    """One pass, no copy of the body: quotes found with `bytes.find` (a quote opens or closes
    a string unless an odd number of backslashes precedes it), brackets counted between the
    strings only."""
    depth = deepest = 0
    large: list[tuple[int, int]] = []
    outside = 0  # where the text outside strings resumes
    position = body.find(b'"')
    opened: int | None = None
    while True:
        if opened is None:  # the brackets before this quote (or the end) are outside strings
            end = len(body) if position < 0 else position
            for char in body[outside:end].translate(None, _BRACKETS_ONLY):
                depth += 1 if char in (0x5B, 0x7B) else -1
                deepest = max(deepest, depth)
            if deepest > limit or position < 0:
                break
        escapes = 0
        while position - escapes - 1 >= 0 and body[position - escapes - 1] == 0x5C:
            escapes += 1
        if escapes % 2 == 0:
            if opened is None:
                opened = position + 1
            else:
                if position - opened > LARGE_STRING and not _CONTROL.search(body, opened, position):
                    after = position + 1
                    while after < len(body) and body[after] in _SPACE:
                        after += 1
                    if body[after : after + 1] != b":":
                        large.append((opened, position))
                opened, outside = None, position + 1
        position = body.find(b'"', position + 1)
        if position < 0 and opened is not None:
            break  # an unterminated string: json.loads will say so
    return Scan(deepest, large)


def loads(body: bytes, large: list[tuple[int, int]]) -> Any:
    """The parsed JSON of `body` (what `json.loads(body)` gives; its errors too), the `large`
    string values (`scan`) put back from the body after a parse without them."""
    if not large or json.detect_encoding(body) != "utf-8":
        return json.loads(body)
    token = _token()
    view = memoryview(body)
    values: dict[str, str] = {}
    for number, (first, last) in enumerate(large):  # the characters between the quotes
        try:
            values[f"{token}{number}"] = str(view[first:last], "utf-8")
        except UnicodeDecodeError:
            return json.loads(body)  # json.loads says what is wrong
    return _put_back(json.loads(_cut(body, large, token)), values)


@dataclass(frozen=True)
class StandIns:
    """`body` parsed with each large string value left as a unique stand-in string (small)."""

    value: Any
    body: bytes
    token: str
    spans: list[tuple[int, int]]


def stand_ins(body: bytes, large: list[tuple[int, int]]) -> StandIns | None:
    """`body` parsed with its `large` strings as stand-ins; None when there are none or one is
    not plain ASCII (`json.dumps` would write it escaped, not as the body has it)."""
    if not large or json.detect_encoding(body) != "utf-8":
        return None
    if any(_NOT_ASCII.search(body, first, last) for first, last in large):
        return None
    token = _token()
    return StandIns(json.loads(_cut(body, large, token)), body, token, large)


def dumps(value: Any, found: StandIns) -> bytes:
    """`json.dumps(value, separators=(",", ":")).encode()` for `value` built from `found.value`,
    each stand-in replaced by its string's bytes from the body (one copy: the result)."""
    text = json.dumps(value, separators=(",", ":"))  # ASCII: ensure_ascii
    stand_in = re.compile(re.escape(json.dumps(found.token)[1:-1]) + "([0-9]+)")
    view = memoryview(found.body)
    pieces: list[bytes | memoryview] = []
    start = 0
    for match in stand_in.finditer(text):
        first, last = found.spans[int(match[1])]
        pieces += [text[start : match.start()].encode(), view[first:last]]
        start = match.end()
    pieces.append(text[start:].encode())
    return b"".join(pieces)


def drop_large(value: Any) -> None:
    """Replace every string longer than LARGE_STRING inside `value` (nested dicts and lists) by
    an empty one, in place: a parse whose large strings are no longer needed lets them go."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        if isinstance(item, str) and len(item) > LARGE_STRING:
            value[key] = ""
        elif isinstance(item, (dict, list)):
            drop_large(item)


def _token() -> str:
    """A stand-in prefix no body contains (a NUL is escaped in JSON text)."""
    return f"\x00radbridge-{uuid.uuid4().hex}-"


def _cut(body: bytes, large: list[tuple[int, int]], token: str) -> bytes:
    """`body` with its `large` strings' characters replaced by `token` and their number."""
    pieces: list[bytes] = []
    start = 0
    for number, (first, last) in enumerate(large):
        pieces += [body[start:first], json.dumps(f"{token}{number}").encode()[1:-1]]
        start = last
    pieces.append(body[start:])
    return b"".join(pieces)


def _put_back(value: Any, values: dict[str, str]) -> Any:
    """`value` with each stand-in replaced by the string it stands for."""
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _put_back(item, values)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _put_back(item, values)
    elif isinstance(value, str) and value in values:
        return values[value]
    return value
