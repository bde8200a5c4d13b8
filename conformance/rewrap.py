"""Hard-wrap a report text the way many RIS do, to measure what wrapping costs (`--rewrap N`).

Each line of the text is broken at spaces into lines of at most `width` characters, greedily
(a word longer than that stays whole; hyphenated words are not split); line breaks already there
stay. This is how a report reaches radbridge as one OBX segment per display line, or as a
hard-wrapped text export. The space before a word that no longer fits becomes the line break,
so the text keeps its length and every offset into it (gold spans stay valid).
"""

from __future__ import annotations

import re

from conformance.errors import EvaluationError

MIN_WIDTH = 20
"""The narrowest wrap `radbridge eval --rewrap` accepts."""
_WORD = re.compile(r"\S+")


def check_width(width: int) -> None:
    """EvaluationError when `width` is narrower than MIN_WIDTH."""
    if width < MIN_WIDTH:
        raise EvaluationError(f"--rewrap must be at least {MIN_WIDTH} characters (got {width})")


def rewrap(text: str, width: int) -> str:
    """`text` with every line hard-wrapped at `width` characters; same length and offsets."""
    check_width(width)
    chars = list(text)
    line_start = 0
    for match in _WORD.finditer(text):
        newline = text.rfind("\n", line_start, match.start())
        if newline >= 0:
            line_start = newline + 1
        if match.end() - line_start > width and text[line_start : match.start()].strip():
            chars[match.start() - 1] = "\n"
            line_start = match.start()
    return "".join(chars)
