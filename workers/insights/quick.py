"""A quick test before a slow regular-expression scan: the strings every match of a pattern must
hold, read from the compiled pattern by the standard library's own parser. A text holding none of
them cannot match, so the scan is skipped; the test never changes what a scan finds (only a text
holding them is scanned, exactly as before)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

try:
    _PARSER: Any = importlib.import_module("re._parser")
    """The standard library's regular-expression parser (what `re.compile` uses)."""
except ImportError:  # another Python: no quick test, every pattern scans
    _PARSER = None
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_Option = frozenset[str]


def _folds_simply(code: int) -> bool:
    """Whether a case-insensitive pattern takes exactly the letters whose `lower` is this
    letter's `lower`: ASCII (i, k, s folded by `ReportText.folded`) and the Latin-1 letters."""
    return 32 <= code < 127 or (0xC0 <= code <= 0xFF and code not in (0xD7, 0xF7))


def _best(options: list[_Option]) -> _Option | None:
    """The most selective of `options` (the longest shortest string)."""
    usable = [option for option in options if option and all(option)]
    return max(usable, key=lambda option: min(map(len, option)), default=None)


def _required(items: Iterable[tuple[Any, Any]]) -> list[_Option]:
    """What every match of the parsed pattern `items` holds: a list of options, each a set of
    strings (lower case) one of which is in the match (literal runs, required groups)."""
    found: list[_Option] = []
    run: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL" and _folds_simply(arg):
            run.append(chr(arg).lower())
            continue
        if run:
            found.append(frozenset({"".join(run)}))
            run = []
        if name == "SUBPATTERN":
            found.extend(_required(arg[-1]))
        elif name == "BRANCH":
            options = [_best(_required(branch)) for branch in arg[1]]
            if all(option is not None for option in options):
                found.append(frozenset().union(*(o for o in options if o is not None)))
        elif name in _REPEATS and arg[0] >= 1:
            found.extend(_required(arg[2]))
    if run:
        found.append(frozenset({"".join(run)}))
    return found


_ANCHOR_GROUPS = 3
"""How many of a pattern's required options the quick test checks (the most selective)."""


@lru_cache(maxsize=512)
def anchors(pattern: re.Pattern[str]) -> tuple[tuple[str, ...], ...] | None:
    """Groups of strings: a text (in lower case, as `ReportText.folded`) in which `pattern`
    matches holds one string of every group; None: no such strings are known."""
    if _PARSER is None:
        return None
    try:
        required = _required(_PARSER.parse(pattern.pattern, pattern.flags))
    except (re.error, AttributeError, TypeError, ValueError, IndexError):
        return None  # a parser of another shape only costs the quick test
    usable = [option for option in required if option and all(option)]
    usable.sort(key=lambda option: min(map(len, option)), reverse=True)
    groups = tuple(tuple(sorted(option)) for option in usable[:_ANCHOR_GROUPS])
    return groups or None


def holds(quick: tuple[tuple[str, ...], ...] | None, text: str, start: int, end: int) -> bool:
    """Whether `text[start:end]` (lower case) holds a string of every group of `quick`."""
    if quick is None:
        return True
    if start or end < len(text):
        text = text[start:end]
    for group in quick:  # plain loops: this runs ~30 times a report, generators cost 2x here
        for part in group:
            if part in text:
                break
        else:
            return False
    return True
