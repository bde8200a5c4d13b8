"""Split input bytes into HL7v2 message frames.

Recognises (in this order): the scout `.log` wrapper (`<SB>` … `<EB>`, segment ends written
`<R>`), MLLP framing (0x0B … 0x1C 0x0D; bytes before a start block are ignored), and raw ER7
(`\\r`, `\\n` or `\\r\\n` segment ends, several messages back to back, each starting `MSH|`).
Every payload has `\\r` segment ends. An empty frame is still a frame (so it can be rejected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MLLP_START = b"\x0b"
MLLP_END = b"\x1c\x0d"
UTF8_BOM = b"\xef\xbb\xbf"
_SCOUT_FRAME = re.compile(rb"<SB>(.*?)<EB>", re.DOTALL)
_LINE_ENDS = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class Frame:
    """One message frame: its position in the input and its payload."""

    index: int
    payload: bytes


def _segments(payload: bytes) -> bytes:
    """Normalise segment ends to `\\r`, dropping blank lines and surrounding whitespace."""
    lines = [line for line in _LINE_ENDS.split(payload) if line.strip()]
    return b"\r".join(line.rstrip(b" \t") for line in lines)


def _scout(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    for index, match in enumerate(_SCOUT_FRAME.finditer(data)):
        body = match.group(1).replace(b"<R>", b"\r")
        frames.append(Frame(index, _segments(body)))
    return frames


def _mllp(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    position = 0
    while (start := data.find(MLLP_START, position)) >= 0:
        end = data.find(b"\x1c", start + 1)
        if end < 0:
            frames.append(Frame(len(frames), _segments(data[start + 1 :])))
            break
        frames.append(Frame(len(frames), _segments(data[start + 1 : end])))
        position = end + 1
    return frames


def _raw(data: bytes) -> list[Frame]:
    text = _segments(data)
    if not text:
        return []
    starts = [m.start() for m in re.finditer(rb"(?:^|\r)MSH\|", text)]
    if not starts:
        return [Frame(0, text)]
    bounds = [s + (1 if text[s : s + 1] == b"\r" else 0) for s in starts]
    frames: list[Frame] = []
    if bounds[0] > 0:
        frames.append(Frame(0, text[: bounds[0]].strip(b"\r")))
    for position, start in enumerate(bounds):
        end = bounds[position + 1] if position + 1 < len(bounds) else len(text)
        frames.append(Frame(len(frames), text[start:end].strip(b"\r")))
    return frames


def split_frames(data: bytes) -> list[Frame]:
    """The message frames in `data` (empty list when there are none). A UTF-8 BOM is dropped."""
    data = data.removeprefix(UTF8_BOM)
    if b"<SB>" in data:
        return _scout(data)
    if MLLP_START in data:
        return _mllp(data)
    if b"MSH" not in data:
        return []
    return _raw(data)
