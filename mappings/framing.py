"""HL7v2 message frames: the one MLLP deframer (`FrameReader`) and `split_frames` for files.

`FrameReader` is sans-I/O: feed it bytes as they arrive (the MLLP listener and client) and get
complete frames. One end rule everywhere: a frame is 0x0B … 0x1C 0x0D; a 0x1C not followed by
0x0D is part of the message; bytes before a start block are ignored (and counted); a frame
longer than `max_frame_bytes` is discarded as it streams and reported as oversize. At the end of
a file (`FrameReader.close`) an unterminated last frame is still a frame.

`split_frames` recognises (in this order): the scout `.log` wrapper (`<SB>` … `<EB>`, segment
ends written `<R>`), MLLP framing (with `FrameReader`), and raw ER7 (`\\r`, `\\n` or `\\r\\n`
segment ends, several messages back to back, each starting `MSH|`). Every payload it returns has
`\\r` segment ends. An empty frame is still a frame (so it can be rejected).
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


@dataclass(frozen=True)
class FrameEvent:
    """A complete frame (payload) or an oversize one (payload None, size counted)."""

    payload: bytes | None
    size: int

    @property
    def oversize(self) -> bool:
        """True when the frame exceeded the limit and was discarded."""
        return self.payload is None


class FrameReader:
    """Incremental MLLP deframer: feed bytes, get complete frames (see the module docstring)."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._discarding = False
        self._discarded = 0
        self._pending_cr = False  # saw 0x1C as the last byte; waiting for 0x0D
        self.junk_bytes = 0
        self.frames_started = 0  # start blocks seen (the listener times each frame from its own)

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume `data`; return the frames completed by it."""
        events: list[FrameEvent] = []
        position = 0
        length = len(data)
        while position < length:
            if not self._in_frame:
                start = data.find(MLLP_START, position)
                if start < 0:
                    self.junk_bytes += length - position
                    return events
                self.junk_bytes += start - position
                self._in_frame = True
                self.frames_started += 1
                self._buffer.clear()
                self._discarding = False
                self._discarded = 0
                self._pending_cr = False
                position = start + 1
                continue
            if self._pending_cr:
                self._pending_cr = False
                if data[position] == 0x0D:
                    events.append(self._finish())
                    position += 1
                    continue
                self._append(b"\x1c")
            end = data.find(b"\x1c", position)
            if end < 0:
                self._append(data[position:])
                return events
            self._append(data[position:end])
            if end + 1 < length:
                if data[end + 1] == 0x0D:
                    events.append(self._finish())
                    position = end + 2
                else:  # a 0x1C inside the message: keep it
                    self._append(b"\x1c")
                    position = end + 1
            else:
                self._pending_cr = True
                position = end + 1
        return events

    def close(self) -> list[FrameEvent]:
        """The end of the input (a file): an unterminated last frame (or one ended by 0x1C
        without 0x0D) is returned as a frame; nothing when no frame is open."""
        if not self._in_frame:
            return []
        self._pending_cr = False
        return [self._finish()]

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            self._discarded += len(chunk)
            return
        if len(self._buffer) + len(chunk) > self.max_frame_bytes:
            self._discarding = True
            self._discarded = len(self._buffer) + len(chunk)
            self._buffer = bytearray()
            return
        self._buffer += chunk

    def _finish(self) -> FrameEvent:
        self._in_frame = False
        if self._discarding:
            event = FrameEvent(None, self._discarded)
        else:
            event = FrameEvent(bytes(self._buffer), len(self._buffer))
        self._buffer = bytearray()
        self._discarding = False
        return event

    @property
    def in_frame(self) -> bool:
        """True while a frame has started but not ended."""
        return self._in_frame


def frame(payload: bytes) -> bytes:
    """Wrap a message in MLLP start and end blocks."""
    return MLLP_START + payload + MLLP_END


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
    reader = FrameReader(len(data) + 1)  # a file is read whole: no frame is oversize
    events = [*reader.feed(data), *reader.close()]
    return [
        Frame(index, _segments(event.payload))
        for index, event in enumerate(events)
        if event.payload is not None
    ]


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
