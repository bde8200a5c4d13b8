"""The Open-i chest X-ray set with NegBio's expert labels (`../shared/data/openi/`).

Each line holds one report's sections (`indication`, `comparison`, `findings`, `impression`;
"XXXX" marks de-identified text) and `labels`: 14 findings + `normal`, 1 = the annotators
indexed the finding as present (MeSH), 0 = not (negated, unmentioned or only hedged).

This module turns a line into a report text (the sections under their usual headings, as a
hospital sends them) and the labels into binary gold per `chest_findings` variable. `normal` is
not a finding and is never scored; a label whose variable the template lacks is reported as
"not covered", never dropped silently. The texts are evaluation data only: nothing here is
written to disk or logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conformance.datasets import jsonl_records
from conformance.errors import DatasetError

SECTIONS: tuple[tuple[str, str], ...] = (
    ("indication", "INDICATION"),
    ("comparison", "COMPARISON"),
    ("findings", "FINDINGS"),
    ("impression", "IMPRESSION"),
)
"""(record key, heading) in the order a report is written."""

LABEL_VARIABLES: Mapping[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Infiltration": "infiltration",
    "Mass": "lung_mass",
    "Nodule": "lung_nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "pulmonary_oedema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hiatal_hernia",
}
"""NegBio/ChestX-ray14 label -> `chest_findings` variable id."""

NOT_SCORED = ("normal",)
HEADLINE_MIN_POSITIVES = 15
"""The headline macro F1 averages the findings with at least this many positive reports."""


@dataclass(frozen=True)
class OpenIReport:
    """One Open-i report: its id, its text with section headings, and its 0/1 labels."""

    id: str
    text: str
    labels: Mapping[str, int]


def report_text(record: Mapping[str, object]) -> str:
    """The sections that have text, each under its heading, one per line."""
    lines = []
    for key, heading in SECTIONS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            lines.append(f"{heading}: {value.strip()}")
    return "\n".join(lines)


def _first_record(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    return json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def is_openi(path: Path) -> bool:
    """A JSONL file in the Open-i form (a `labels` object beside `findings`/`impression`)."""
    if not path.is_file():
        return False
    first = _first_record(path)
    return (
        isinstance(first, dict)
        and isinstance(first.get("labels"), dict)
        and ("findings" in first or "impression" in first)
        and "gold" not in first
    )


def load_openi(path: Path) -> tuple[OpenIReport, ...]:
    """Every report of an Open-i file; DatasetError names file:line for a bad line."""
    reports: list[OpenIReport] = []
    seen: set[str] = set()
    for number, record in jsonl_records(path):
        if not isinstance(record, dict) or not isinstance(record.get("labels"), dict):
            raise DatasetError(str(path), number, "a line must be an object with 'labels'")
        report_id = record.get("id")
        if not isinstance(report_id, str) or not report_id:
            raise DatasetError(str(path), number, "'id' must be a non-empty string")
        if report_id in seen:
            raise DatasetError(str(path), number, f"duplicate id {report_id!r}")
        seen.add(report_id)
        labels: dict[str, int] = {}
        for name, value in record["labels"].items():
            if value not in (0, 1) or isinstance(value, bool):
                raise DatasetError(str(path), number, f"label {name!r} must be 0 or 1")
            labels[str(name)] = int(value)
        reports.append(OpenIReport(report_id, report_text(record), labels))
    if not reports:
        raise DatasetError(str(path), None, "no reports")
    return tuple(reports)
