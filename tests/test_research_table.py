"""The research table of `radbridge extract --table` (subprocess, real files, rules stage):
report columns (language, date, stage, template version, model), the codebook beside it with
the codes the Bundles carry, and Parquet through the `parquet` extra."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mappings.template import get_template

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
RECORDS = [
    {"id": "r1", "text": "FINDINGS: Small left pleural effusion. No pneumothorax.",
     "language": "en", "date": "2024-05-01", "template": "chest_findings"},
    {"id": "r2", "text": "BEVINDINGEN: Geen pleuravocht. Geen pneumothorax.",
     "template": "chest_findings"},
]  # fmt: skip


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADBRIDGE_STAGE": "rules", "COLUMNS": "200"}
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def _records(tmp_path: Path) -> Path:
    path = tmp_path / "reports.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), "utf-8")
    return path


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_has_report_columns_and_a_codebook_with_the_bundle_codes(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    result = run("extract", str(_records(tmp_path)), "--out", str(tmp_path / "out"),
                 "--table", str(table))  # fmt: skip
    assert result.returncode == 0, result.stderr
    template = get_template("chest_findings")
    rows = {row["id"]: row for row in _csv(table)}
    header = list(rows["r1"])
    assert header[:7] == [
        "id", "template", "template_version", "language", "report_date", "stage", "model",
    ]  # fmt: skip
    assert rows["r1"]["template_version"] == template.version
    assert (rows["r1"]["language"], rows["r2"]["language"]) == ("en", "nl")  # given, detected
    assert (rows["r1"]["report_date"], rows["r2"]["report_date"]) == ("2024-05-01", "")
    assert {row["stage"] for row in rows.values()} == {"rules"}
    assert rows["r1"]["model"].startswith("radbridge-rules")

    book = tmp_path / "table.codebook.csv"
    assert book.is_file() and str(book) in " ".join(result.stderr.split())
    assert "extracting records: 2/2 (100%)" in result.stderr  # progress lines on a pipe
    lines = _csv(book)
    by_column: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        by_column.setdefault(line["column"], []).append(line)
    assert set(by_column) == set(header)  # every column, nothing else
    effusion = template.variables[[v.id for v in template.variables].index("pleural_effusion")]
    assert effusion.code is not None
    concept = next(line for line in by_column["pleural_effusion"] if line["value"] == "")
    assert (concept["code_system"], concept["code"], concept["display"]) == (
        effusion.code.system, effusion.code.code, effusion.code.display,
    )  # fmt: skip
    assert concept["template_version"] == template.version and concept["code_source"]
    # the presence values as the Bundle codes them: SNOMED CT qualifier values
    values = {line["value"]: line for line in by_column["pleural_effusion.status"]}
    assert values["absent"]["code"] == "2667000" and values["present"]["code"] == "52101004"
    assert values["not_mentioned"]["code"] == ""  # no Observation, no code
    bundle = json.loads((tmp_path / "out" / "r1.json").read_text("utf-8"))
    coded = {
        (c["system"], c["code"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        for c in e["resource"]["code"].get("coding", [])
    }
    assert (concept["code_system"], concept["code"]) in coded
    # a location column lists its sites with their codes (or why none)
    sites = [line for line in by_column.get("pleural_effusion.locations", []) if line["value"]]
    assert sites and all(line["code"] or line["note"] for line in sites)
    # the report columns explain themselves; the template column lists the template
    assert all(by_column[name][0]["meaning"] for name in header[:7])
    assert [line["value"] for line in by_column["template"] if line["value"]] == ["chest_findings"]


def test_codebook_names_uncoded_concepts_with_their_reason(tmp_path: Path) -> None:
    from app.codebook import codebook
    from app.research_table import table_columns

    templates = {"chest_findings": get_template("chest_findings")}
    uncoded = [
        (variable.id, variable.uncoded_reason)
        for variable in templates["chest_findings"].variables
        if variable.code is None
    ]
    rows = [{"id": "x", "template": "chest_findings", **{v: "absent" for v, _ in uncoded}}]
    lines = codebook(table_columns(rows), rows, templates)
    for variable_id, reason in uncoded:
        line = next(ln for ln in lines if ln.column == variable_id and not ln.value)
        assert line.code == "" and reason and reason in line.note


def test_parquet_table_is_typed_and_has_its_codebook(tmp_path: Path) -> None:
    parquet = pytest.importorskip("pyarrow.parquet", reason="the parquet extra is not installed")
    table = tmp_path / "table.parquet"
    result = run("extract", str(_records(tmp_path)), "--out", str(tmp_path / "out"),
                 "--table", str(table))  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = parquet.read_table(table)
    assert data.num_rows == 2
    assert data.column_names[:7] == [
        "id", "template", "template_version", "language", "report_date", "stage", "model",
    ]  # fmt: skip
    assert str(data.schema.field("pleural_effusion.confidence").type) == "double"
    assert str(data.schema.field("pleural_effusion").type) == "string"
    rows = {row["id"]: row for row in data.to_pylist()}
    assert rows["r1"]["pleural_effusion"] == "present" and rows["r2"]["report_date"] is None
    assert rows["r1"]["pleural_effusion.confidence"] is None  # rules: none, never invented
    assert (tmp_path / "table.codebook.csv").is_file()


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import research_table

    monkeypatch.setattr(research_table.importlib.util, "find_spec", lambda name: None)
    problem = research_table.check_table_path(tmp_path / "t.parquet")
    assert problem is not None and "radbridge[parquet]" in problem
    assert research_table.check_table_path(tmp_path / "t.xlsx") is not None
    monkeypatch.undo()
    assert research_table.check_table_path(tmp_path / "t.csv") is None


def test_side_and_grade_columns_with_their_codebook_and_show(tmp_path: Path) -> None:
    records = [
        {"id": "k1", "text": "XR KNEE LEFT\nModerate osteoarthritis of the knee, KL 3.",
         "language": "en", "template": "msk_radiograph"},
        {"id": "a1", "text": "US KIDNEYS\nGrade 3 hydronephrosis on the right, grade 2 on the "
         "left. Mild hepatic steatosis.", "language": "en", "template": "abdomen"},
        {"id": "k2", "text": "XR KNEE RIGHT\nNo osteoarthritis.", "language": "en",
         "template": "msk_radiograph"},
    ]  # fmt: skip
    source = tmp_path / "reports.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    table, out = tmp_path / "table.csv", tmp_path / "out"
    result = run("extract", str(source), "--out", str(out), "--table", str(table))
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in _csv(table)}
    knee, kidneys, normal = rows["k1"], rows["a1"], rows["k2"]
    assert knee["osteoarthritis.side"] == "left"  # from the exam title
    assert (knee["osteoarthritis.kl_grade"], knee["osteoarthritis.severity"]) == ("3", "moderate")
    assert knee["fracture.side"] == ""  # the column of a finding that takes a side, not stated
    assert kidneys["hydronephrosis.grade"] == "3;2"
    assert kidneys["hydronephrosis.side"] == "right;left"
    assert kidneys["hepatic_steatosis.severity"] == "mild"
    assert normal["osteoarthritis"] == "absent" and normal["osteoarthritis.kl_grade"] == ""
    book = _csv(table.with_name("table.codebook.csv"))
    kl = [line for line in book if line["column"] == "osteoarthritis.kl_grade"]
    assert kl and "Kellgren-Lawrence grade (integer, 0 to 4)" in kl[0]["meaning"]
    assert kl[0]["note"].startswith("no code: ")  # text only, with the reason
    severity = {line["value"]: line for line in book if line["column"] == "hydronephrosis.severity"}
    assert severity["moderate"]["code"] == "6736007"
    sides = {line["value"]: line for line in book if line["column"] == "osteoarthritis.side"}
    assert sides["left"]["code"] == "7771000"
    env = {**os.environ, "COLUMNS": "1000"}  # one line per row: no cell wraps
    shown = subprocess.run(
        [*RADBRIDGE, "show", str(out)], capture_output=True, text=True, timeout=600, env=env,
        check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "Kellgren-Lawrence grade: 3" in shown.stdout
    assert "7771000" in shown.stdout  # the side column: Left (qualifier value) (sct 7771000)
