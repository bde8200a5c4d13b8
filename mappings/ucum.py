"""UCUM unit codes checked with ucumvert (PyPI; its grammar is built from the UCUM essence
table, ucum-essence.xml 2.2), so `templates check` and `validate` refuse what no UCUM system
accepts ("millimetre", "mls") and accept what it does ("mm", "mL/m2", "10*3/uL", "%", "1")."""

from __future__ import annotations

import functools
import logging
from typing import Any


@functools.cache
def _parser() -> Any:
    logging.getLogger("ucumvert").setLevel(logging.WARNING)
    from ucumvert.parser import get_ucum_parser

    return get_ucum_parser()


def ucum_problem(code: str) -> str | None:
    """Why `code` is not a valid UCUM code (None: it is valid)."""
    from lark.exceptions import LarkError

    if not code or code != code.strip():
        return f"{code!r} is not a UCUM code (empty, or spaces around it)"
    try:
        _parser().parse(code)
    except LarkError:
        return f"{code!r} is not a valid UCUM code (e.g. mm, mL, %, mL/m2, ms, 1)"
    return None
