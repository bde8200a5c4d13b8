"""Read CLI inputs: files or folders of HL7v2 (raw, MLLP-framed, scout .log) or FHIR JSON.

Walks the paths and reads each file; the parsing is `mappings.inbound.read_bytes`. Never raises
for bad content, only for paths that cannot be read (`InputError`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from adapter.errors import InputError
from mappings.inbound import read_bytes
from mappings.report import Report

HIDDEN_PREFIXES = (".", "_")
REJECTED_FILE = "rejected.jsonl"
RECORD_SUFFIXES = (".csv", ".jsonl")  # tables of plain-text reports (research backfill)
MAX_CSV_FIELD = 64 * 1024 * 1024


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


def read_file(
    path: Path, *, default_charset: str, default_language: str
) -> tuple[list[SourcedReport], list[Rejection]]:
    """Reports and rejections from one input file (parsed by `mappings.inbound.read_bytes`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    source = str(path)
    inbound = read_bytes(data, default_charset=default_charset, default_language=default_language)
    reports = [SourcedReport(item.report, source, item.frame) for item in inbound.reports]
    rejections = [
        Rejection(source, r.frame, r.control_id, r.reason, r.detail, r.hl7_error_code)
        for r in inbound.rejections
    ]
    return reports, rejections


@dataclass(frozen=True)
class Record:
    """One row of a CSV or JSONL table of reports (`id`, `text`, optional `language`,
    `modality`, `date`, `template`), or why the row could not be read (`problem`)."""

    source: str
    line: int
    data: dict[str, object]
    problem: str | None = None


def is_record_file(path: Path) -> bool:
    """Whether the file is a table of plain-text reports (CSV or JSONL) rather than HL7v2/FHIR."""
    return path.suffix.lower() in RECORD_SUFFIXES


def read_records(path: Path) -> Iterator[Record]:
    """The rows of a CSV (with a header row) or JSONL file; `line` is 1-based (CSV: the data
    row, header not counted). A JSONL line that is not a JSON object is a Record with a problem."""
    source = str(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            if path.suffix.lower() == ".csv":
                csv.field_size_limit(MAX_CSV_FIELD)
                for line, row in enumerate(csv.DictReader(fh), start=1):
                    yield Record(source, line, {k: v for k, v in row.items() if k is not None})
                return
            for line, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    data = json.loads(text)
                except ValueError:
                    yield Record(source, line, {}, "the line is not JSON")
                    continue
                if not isinstance(data, dict):
                    yield Record(source, line, {}, "the line is not a JSON object")
                    continue
                yield Record(source, line, data)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({type(exc).__name__})") from None
