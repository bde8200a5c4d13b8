"""The critical-findings list: the shipped default (`critical.yaml`) or a hospital's own file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from mappings.errors import MappingError
from mappings.template import CodeRef
from mappings.terminology_tables import code_problems

DEFAULT_LIST = Path(__file__).with_name("critical.yaml")


class CriticalListError(MappingError):
    """The critical-findings file is missing or malformed."""


@dataclass(frozen=True)
class CriticalFinding:
    """One finding of the list: its id, label (Flag text), ACR category, term pattern and concept
    code (None: text only, `uncoded_reason` says why)."""

    id: str
    label: str
    category: int
    pattern: re.Pattern[str]
    supersedes: tuple[str, ...] = ()
    code: CodeRef | None = None
    uncoded_reason: str | None = None


def _pattern(terms: list[str], source: str, finding_id: str) -> re.Pattern[str]:
    # an all-capitals abbreviation (PE, DVT) matches case-sensitively; the rest ignore case
    parts = [f"(?-i:{term})" if re.fullmatch(r"[A-Z]{2,4}", term) else term for term in terms]
    try:
        return re.compile(r"(?<![\w-])(?:" + "|".join(parts) + r")(?![\w-])", re.IGNORECASE)
    except re.error as exc:
        raise CriticalListError(f"{source}: {finding_id}: bad term pattern ({exc})") from None


def _code(item: dict[str, object], source: str, finding_id: str) -> CodeRef | None:
    """The finding's `code`, checked like a template's (installed table or a citation)."""
    raw = item.get("code")
    if raw is None:
        return None
    try:
        code = CodeRef.model_validate(raw)
    except ValidationError as exc:
        raise CriticalListError(
            f"{source}: {finding_id}: code needs system, code, display and source "
            f"({exc.error_count()} problems)"
        ) from None
    problems = code_problems(code.system, code.code, code.display, code.source)
    if problems:
        raise CriticalListError(f"{source}: {finding_id}: code: {'; '.join(problems)}")
    return code


@lru_cache(maxsize=4)
def load_critical_list(path: Path = DEFAULT_LIST) -> tuple[CriticalFinding, ...]:
    """The findings of a critical list file (YAML: `findings: [{id, label, category, terms,
    code | uncoded_reason}]`)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CriticalListError(f"{path}: cannot read the critical-findings list ({exc})") from None
    items = data.get("findings") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CriticalListError(f"{path}: no `findings` list")
    findings: list[CriticalFinding] = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id") or not item.get("terms"):
            raise CriticalListError(f"{path}: every finding needs an id and terms")
        finding_id = str(item["id"])
        findings.append(
            CriticalFinding(
                id=finding_id,
                label=str(item.get("label") or finding_id),
                category=int(item.get("category") or 1),
                pattern=_pattern([str(t) for t in item["terms"]], str(path), finding_id),
                supersedes=tuple(str(s) for s in item.get("supersedes") or ()),
                code=_code(item, str(path), finding_id),
                uncoded_reason=str(item["uncoded_reason"]) if item.get("uncoded_reason") else None,
            )
        )
    return tuple(findings)
