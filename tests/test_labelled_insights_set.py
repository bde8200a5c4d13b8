"""The labelled insights set (tests/fixtures/labelled/insights.jsonl, issue 20): its shape, not a
rule's accuracy. Every record follows the gold schema of tests/fixtures/labelled/README.md, every
evidence is a quote of its report, every due date follows from the report date, every critical
finding id is on the documented list (docs/critical-findings.md), and each insight kind has the
positives the issue asks for in every language and in both halves."""

from __future__ import annotations

import calendar
import json
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SET = ROOT / "tests" / "fixtures" / "labelled" / "insights.jsonl"
CRITICAL_LIST = ROOT / "docs" / "critical-findings.md"

Row = dict[str, Any]

LANGUAGES = ("en", "nl", "de")
SPLITS = ("dev", "test")
KINDS = ("followups", "critical", "communications", "rads", "sizes", "mismatches")
GOLD_KEYS = {*KINDS, "critical_hedged"}
DICOM_MODALITIES = {"CT", "MR", "US", "MG", "CR", "DX", "NM", "PT"}
LATERALITIES = {"left", "right", "bilateral", None}
SEXES = {"male", "female", "other", "unknown", None}
FOLLOWUP_KINDS = {"imaging", "biopsy", "consultation", "other"}
MISMATCH_KINDS = ("laterality", "sex", "age", "exam_type")
RADS_CATEGORY = {
    "BI-RADS": r"[0-6]|4[ABC]",
    "BI-RADS density": r"[abcd]",
    "Lung-RADS": r"(?:[0-3]|4[ABX])S?",
    "PI-RADS": r"[1-5]",
    "TI-RADS": r"TR[1-5]",
    "LI-RADS": r"LR-(?:[1-5]|M|TIV|NC)",
    "O-RADS": r"[0-5]",
}
# issue 20 ("Measure"), raised by the task that wrote the set: per insight kind
MIN_OVERALL, MIN_PER_LANGUAGE, MIN_PER_HALF, MIN_PER_LANGUAGE_AND_HALF = 24, 6, 10, 3
MIN_REPORTS, MIN_REPORTS_PER_LANGUAGE = 180, 45

DURATION = re.compile(r"P(\d+)([YMWD])")
# number words and one-word intervals that state an amount (README: "Intervals")
AMOUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("one", "een", "één", "ein", "annual", "jaarlijks", "jährlich", "tomorrow", "morgen",
        "folgetag"),
    2: ("two", "twee", "zwei"),
    3: ("three", "drie", "drei"),
    4: ("four", "vier"),
    6: ("six", "zes", "sechs", "half jaar", "halbjährlich", "halben jahr"),
    12: ("twelve", "twaalf", "zwölf"),
}  # fmt: skip


def _rows() -> list[Row]:
    return [json.loads(line) for line in SET.read_text("utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return _rows()


def _valid_date(value: object) -> date | None:
    """The date an ISO string names, or None where it names none (e.g. 1985-02-30)."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _add(start: date, duration: str) -> date:
    """start + an ISO 8601 duration of one unit: calendar months and years (the day clamped to
    the month's last day), weeks of 7 days, days."""
    match = DURATION.fullmatch(duration)
    assert match, duration
    amount, unit = int(match.group(1)), match.group(2)
    if unit in "YM":
        months = start.month - 1 + (amount * 12 if unit == "Y" else amount)
        year, month = start.year + months // 12, months % 12 + 1
        return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))
    return start + timedelta(days=amount * 7 if unit == "W" else amount)


def _durations(interval: str | list[str] | None) -> list[str]:
    """The durations a follow-up's `interval` holds (none, one, or a range's two)."""
    if interval is None:
        return []
    return [interval] if isinstance(interval, str) else list(interval)


def _amount_stated(duration: str, evidence: str) -> bool:
    """The evidence states the duration's amount, as digits or as a word ("six", "halbjährlich")."""
    match = DURATION.fullmatch(duration)
    assert match, duration
    amount, text = int(match.group(1)), evidence.lower()
    if re.search(rf"(?<![\d.,]){amount}(?![\d.,]\d)", text):
        return True
    return any(word in text for word in AMOUNT_WORDS.get(amount, ()))


NUMBER = r"\d+(?:[.,]\d+)?"
MEASUREMENT = re.compile(rf"({NUMBER}(?:\s*[x×]\s*{NUMBER})*)\s*(mm|cm)\b", re.I)


def _lengths_mm(text: str) -> set[float]:
    """Every length the text states, in mm ("3.2 x 2.1 cm" -> 32, 21; "2,2 cm" -> 22)."""
    lengths = set()
    for numbers, unit in MEASUREMENT.findall(text):
        for number in re.findall(NUMBER, numbers):
            value = float(number.replace(",", "."))
            lengths.add(round(value * 10 if unit.lower() == "cm" else value, 6))
    return lengths


def _items(row: Row) -> list[tuple[str, dict[str, Any]]]:
    return [(key, item) for key in sorted(GOLD_KEYS) for item in row["gold"][key]]


def test_ids_are_unique(rows: list[Row]) -> None:
    ids = Counter(row["id"] for row in rows)
    assert [i for i, n in ids.items() if n > 1] == []


def test_records_follow_the_gold_schema(rows: list[Row]) -> None:
    for row in rows:
        rid = row["id"]
        assert set(row) == {"id", "text", "language", "split", "kind", "context", "gold"}, rid
        assert row["kind"] == "insights", rid
        assert row["language"] in LANGUAGES, rid
        assert row["split"] in SPLITS, rid
        assert isinstance(row["text"], str) and row["text"].strip(), rid
        ctx = row["context"]
        assert set(ctx) == {
            "modality", "exam", "order_laterality", "patient_sex", "birth_date", "report_date",
        }, rid  # fmt: skip
        assert ctx["modality"] in DICOM_MODALITIES, rid
        assert isinstance(ctx["exam"], str) and ctx["exam"], rid
        assert ctx["order_laterality"] in LATERALITIES, rid
        assert ctx["patient_sex"] in SEXES, rid
        assert ctx["birth_date"] is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", ctx["birth_date"])
        assert _valid_date(ctx["report_date"]) is not None, rid
        assert set(row["gold"]) == GOLD_KEYS, rid
        assert all(isinstance(row["gold"][key], list) for key in GOLD_KEYS), rid
        for item in row["gold"]["followups"]:
            assert set(item) == {
                "modality", "procedure_text", "kind", "due", "due_start", "due_end", "interval",
                "conditional", "guideline", "evidence",
            }, rid  # fmt: skip
            assert item["modality"] in DICOM_MODALITIES | {None}, rid
            assert item["kind"] in FOLLOWUP_KINDS, rid
            assert isinstance(item["procedure_text"], str) and item["procedure_text"], rid
            assert isinstance(item["conditional"], bool), rid
            assert item["guideline"] is None or isinstance(item["guideline"], str), rid
        for key in ("critical", "critical_hedged"):
            for item in row["gold"][key]:
                assert set(item) == {"finding", "evidence"}, rid
        for item in row["gold"]["communications"]:
            assert set(item) == {"recipient", "time", "evidence"}, rid
        for item in row["gold"]["rads"]:
            assert set(item) == {"system", "category", "side", "evidence"}, rid
            assert item["system"] in RADS_CATEGORY, rid
            assert item["side"] in {"left", "right", None}, rid
        for item in row["gold"]["sizes"]:
            assert set(item) == {"finding", "dims_mm", "evidence"}, rid
            assert 1 <= len(item["dims_mm"]) <= 3, rid
            assert all(isinstance(d, int | float) and d > 0 for d in item["dims_mm"]), rid
        for item in row["gold"]["mismatches"]:
            assert set(item) == {"kind", "evidence"}, rid
            assert item["kind"] in MISMATCH_KINDS, rid


def test_every_evidence_quotes_its_report(rows: list[Row]) -> None:
    for row in rows:
        for key, item in _items(row):
            assert isinstance(item["evidence"], str) and item["evidence"].strip(), (row["id"], key)
            assert item["evidence"] in row["text"], (row["id"], key, item["evidence"])
        for item in row["gold"]["communications"]:  # recipient and time as written
            for part in ("recipient", "time"):
                assert item[part] is None or item[part] in item["evidence"], (row["id"], part)


def test_due_dates_follow_from_the_report_date(rows: list[Row]) -> None:
    """`interval` is what the text states (ISO 8601, one unit); `due` is report_date + interval,
    a range gives due_start/due_end, no interval gives no date; the evidence states the amount."""
    for row in rows:
        reported = date.fromisoformat(row["context"]["report_date"])
        for item in row["gold"]["followups"]:
            interval, rid = item["interval"], row["id"]
            if interval is None:
                assert (item["due"], item["due_start"], item["due_end"]) == (None, None, None), rid
            elif isinstance(interval, str):
                assert item["due"] == _add(reported, interval).isoformat(), rid
                assert (item["due_start"], item["due_end"]) == (None, None), rid
            else:
                start, end = interval
                assert item["due"] is None, rid
                assert item["due_start"] == _add(reported, start).isoformat(), rid
                assert item["due_end"] == _add(reported, end).isoformat(), rid
                assert item["due_start"] < item["due_end"], rid
            for duration in _durations(interval):
                assert _amount_stated(duration, item["evidence"]), (rid, duration, item["evidence"])


def test_due_date_arithmetic_clamps_to_the_month_end() -> None:
    assert _add(date(2025, 8, 31), "P6M") == date(2026, 2, 28)
    assert _add(date(2024, 2, 29), "P1Y") == date(2025, 2, 28)
    assert _add(date(2025, 11, 3), "P6W") == date(2025, 12, 15)
    assert _add(date(2025, 12, 22), "P10D") == date(2026, 1, 1)


def test_critical_findings_come_from_the_documented_list(rows: list[Row]) -> None:
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", CRITICAL_LIST.read_text("utf-8"), re.M))
    assert len(listed) >= 15
    used = {item["finding"] for row in rows for key in ("critical", "critical_hedged")
            for item in row["gold"][key]}  # fmt: skip
    assert used <= listed, used - listed
    for row in rows:  # one entry per finding and report
        findings = [item["finding"] for item in row["gold"]["critical"]]
        assert len(findings) == len(set(findings)), row["id"]


def test_rads_categories_are_written_as_the_system_writes_them(rows: list[Row]) -> None:
    for row in rows:
        for item in row["gold"]["rads"]:
            pattern = RADS_CATEGORY[item["system"]]
            assert re.fullmatch(pattern, item["category"]), (row["id"], item)


def test_sizes_are_stated_in_their_evidence(rows: list[Row]) -> None:
    """Every dimension (mm) is a length its evidence states, in mm or cm (decimal point or comma)."""
    for row in rows:
        for item in row["gold"]["sizes"]:
            lengths = _lengths_mm(item["evidence"])
            assert all(dim in lengths for dim in item["dims_mm"]), (row["id"], item, lengths)


def test_mismatches_are_possible_given_the_context(rows: list[Row]) -> None:
    """A laterality mismatch needs an ordered side, a sex mismatch a male/female patient, an age
    mismatch a valid birth date and a stated age more than 2 years off; one entry per kind."""
    for row in rows:
        ctx, rid = row["context"], row["id"]
        kinds = [item["kind"] for item in row["gold"]["mismatches"]]
        assert len(kinds) == len(set(kinds)), rid
        for item in row["gold"]["mismatches"]:
            if item["kind"] == "laterality":
                assert ctx["order_laterality"] in {"left", "right"}, rid
            elif item["kind"] == "sex":
                assert ctx["patient_sex"] in {"male", "female"}, rid
            elif item["kind"] == "age":
                born = _valid_date(ctx["birth_date"])
                reported = date.fromisoformat(ctx["report_date"])
                assert born is not None and born <= reported, rid
                age = (
                    reported.year
                    - born.year
                    - ((reported.month, reported.day) < (born.month, born.day))
                )
                stated = re.search(r"(\d{1,3})-(?:year|jarig|jährig)", item["evidence"])
                assert stated, rid
                assert abs(int(stated.group(1)) - age) > 2, rid


def test_bad_context_is_present(rows: list[Row]) -> None:
    """The bad-input cases of issue 20: missing and impossible birth dates, missing, unknown and
    other sex, and orders without laterality."""
    births = [row["context"]["birth_date"] for row in rows]
    assert None in births
    assert any(b is not None and _valid_date(b) is None for b in births)  # e.g. 1985-02-30
    assert any(
        (born := _valid_date(row["context"]["birth_date"])) is not None
        and born > date.fromisoformat(row["context"]["report_date"])
        for row in rows
    )  # born after the report
    sexes = {row["context"]["patient_sex"] for row in rows}
    assert {None, "unknown", "other"} <= sexes


def counts(rows: list[Row]) -> Counter[tuple[str, str, str]]:
    """Positives (gold items) per (kind, language, half)."""
    table: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        for key in KINDS:
            table[(key, row["language"], row["split"])] += len(row["gold"][key])
        for item in row["gold"]["mismatches"]:
            table[("mismatch:" + item["kind"], row["language"], row["split"])] += 1
    return table


def test_each_kind_has_its_positives_in_every_language_and_half(rows: list[Row]) -> None:
    table = counts(rows)
    for key in KINDS:
        overall = sum(n for (k, _, _), n in table.items() if k == key)
        assert overall >= MIN_OVERALL, key
        for language in LANGUAGES:
            assert sum(table[(key, language, half)] for half in SPLITS) >= MIN_PER_LANGUAGE
            for half in SPLITS:
                assert table[(key, language, half)] >= MIN_PER_LANGUAGE_AND_HALF, (key, language)
        for half in SPLITS:
            assert sum(table[(key, language, half)] for language in LANGUAGES) >= MIN_PER_HALF
    for kind in MISMATCH_KINDS:
        for half in SPLITS:
            assert sum(table[("mismatch:" + kind, lang, half)] for lang in LANGUAGES) >= 2, kind


def test_the_set_covers_languages_modalities_and_reports_without_insight(
    rows: list[Row],
) -> None:
    assert len(rows) >= MIN_REPORTS
    per_language = Counter(row["language"] for row in rows)
    assert all(per_language[language] >= MIN_REPORTS_PER_LANGUAGE for language in LANGUAGES)
    assert {"CT", "MR", "US", "MG", "CR"} <= {row["context"]["modality"] for row in rows}
    for language in LANGUAGES:
        for half in SPLITS:
            empty = [
                row
                for row in rows
                if (row["language"], row["split"]) == (language, half)
                and not any(row["gold"][key] for key in KINDS)
            ]
            assert len(empty) >= 2, (language, half)
