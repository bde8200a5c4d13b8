"""Read CLI inputs: files or folders of HL7v2 (raw, MLLP-framed, scout .log) or FHIR JSON.

Turns each file into Reports plus typed rejections; never raises for bad content, only
for paths that cannot be read (`InputError`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapter.errors import InputError
from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.fhir import reports_from_fhir
from mappings.framing import split_frames
from mappings.hl7v2 import parse_oru
from mappings.msh import peek_msh
from mappings.report import Report

HIDDEN_PREFIXES = (".", "_")
REJECTED_FILE = "rejected.jsonl"


@dataclass(frozen=True)
class Rejection:
    """One line of rejected.jsonl: where the item came from and why it was not used."""

    source: str
    frame: int | None
    control_id: str | None
    reason: str
    detail: str
    hl7_error_code: str | None = None

    def to_json(self) -> str:
        """The rejected.jsonl line (no report content, only ids and reasons)."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class SourcedReport:
    """A report and where it came from."""

    report: Report
    source: str
    frame: int | None


def collect_files(paths: list[Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into files; hidden files and rejected.jsonl skipped."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not p.name.startswith(HIDDEN_PREFIXES)
                and p.name != REJECTED_FILE
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def _control_id(payload: bytes) -> str | None:
    try:
        return peek_msh(payload).control_id or None
    except MessageRejected:
        return None


def read_file(
    path: Path, *, default_charset: str, default_language: str
) -> tuple[list[SourcedReport], list[Rejection]]:
    """Reports and rejections from one input file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    source = str(path)
    if _looks_like_json(data):
        return _read_fhir(data, source, default_language)
    return _read_hl7v2(data, source, default_charset, default_language)


def _read_fhir(
    data: bytes, source: str, default_language: str
) -> tuple[list[SourcedReport], list[Rejection]]:
    try:
        resource: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = Rejection(
            source, None, None, "not_fhir_json", f"invalid JSON: {type(exc).__name__}"
        )
        return [], [reason]
    if not isinstance(resource, dict):
        return [], [Rejection(source, None, None, "not_fhir_json", "JSON is not a FHIR resource")]
    try:
        reports = reports_from_fhir(resource, default_language=default_language)
    except MessageRejected as exc:
        return [], [Rejection(source, None, None, exc.reason, exc.detail)]
    return [SourcedReport(report, source, None) for report in reports], []


def _read_hl7v2(
    data: bytes, source: str, default_charset: str, default_language: str
) -> tuple[list[SourcedReport], list[Rejection]]:
    frames = split_frames(data)
    if not frames:
        detail = "no HL7v2 message or frame found in the file"
        return [], [
            Rejection(source, None, None, "no_message", detail, HL7ErrorCode.SEGMENT_SEQUENCE_ERROR)
        ]
    reports: list[SourcedReport] = []
    rejections: list[Rejection] = []
    for frame in frames:
        control_id = _control_id(frame.payload)
        try:
            parsed = parse_oru(
                frame.payload, default_charset=default_charset, default_language=default_language
            )
        except MessageRejected as exc:
            rejections.append(
                Rejection(source, frame.index, control_id, exc.reason, exc.detail, exc.code.value)
            )
            continue
        reports.extend(SourcedReport(report, source, frame.index) for report in parsed.reports)
        rejections.extend(
            Rejection(source, frame.index, control_id, exc.reason, exc.detail, exc.code.value)
            for exc in parsed.rejected
        )
    return reports, rejections
