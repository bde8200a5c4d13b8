"""Research backfill: `radbridge extract` over CSV/JSONL tables of reports (subprocess, real
files, rules stage), resumable after Ctrl-C, with the per-report table."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
CHECKPOINT = ".radbridge-checkpoint.jsonl"
TEXTS = [
    "FINDINGS: Small left pleural effusion. No pneumothorax. Heart size is normal.",
    "FINDINGS: No pleural effusion. Right lower lobe consolidation. No pneumothorax.",
    "FINDINGS: Cardiomegaly. Mild pulmonary edema. No focal consolidation.",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADBRIDGE_STAGE": "rules"}
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def _checkpoint_ids(out: Path) -> list[str]:
    path = out / CHECKPOINT
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    return [line["id"] for line in lines if "id" in line]  # options lines left out


def test_csv_and_jsonl_write_bundles_rejections_table_and_checkpoint(tmp_path: Path) -> None:
    table_csv = tmp_path / "reports.csv"
    with table_csv.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "text", "language", "modality", "date", "template"])
        writer.writeheader()
        writer.writerow({"id": "r1", "text": TEXTS[0], "language": "en", "modality": "DX",
                         "date": "2024-05-01", "template": "chest_findings"})  # fmt: skip
        writer.writerow({"id": "r2", "text": TEXTS[1], "template": "chest_findings"})
        writer.writerow({"id": "r3", "text": "", "template": "chest_findings"})  # no text
        writer.writerow({"id": "r4", "text": TEXTS[2], "template": "nope"})  # unknown template
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                json.dumps({"id": "j1", "text": TEXTS[2], "template": "chest_findings"}),
                json.dumps({"id": "r1", "text": TEXTS[0]}),  # the id of an earlier record
                json.dumps({"text": TEXTS[0]}),  # no id
                "not json",
            ]
        )
        + "\n",
        "utf-8",
    )
    out = tmp_path / "out"
    table = tmp_path / "table.csv"
    result = run("extract", str(table_csv), str(jsonl), "--out", str(out), "--table", str(table))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.json")) == ["j1.json", "r1.json", "r2.json"]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text("utf-8").splitlines()]
    # `frame` holds the line of the record
    assert sorted((r["reason"], r["frame"]) for r in rejected) == [
        ("duplicate_id", 2), ("no_id", 3), ("no_narrative", 3), ("not_a_record", 4),
        ("unknown_template", 4),
    ]  # fmt: skip
    assert all("effusion" not in json.dumps(r) for r in rejected)  # ids and reasons only
    assert sorted(_checkpoint_ids(out)) == ["j1", "r1", "r2", "r3", "r4"]
    with table.open(encoding="utf-8", newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    assert sorted(rows) == ["j1", "r1", "r2"]
    assert rows["r1"]["template"] == "chest_findings"
    assert rows["r1"]["pleural_effusion"] == "present"
    assert rows["r1"]["pleural_effusion.status"] == "present"
    assert "effusion" in rows["r1"]["pleural_effusion.evidence"].lower()
    assert rows["r2"]["pleural_effusion"] == "absent"
    assert rows["r1"]["pneumothorax"] == "absent"
    assert {"pleural_effusion.confidence", "pneumothorax.evidence"} <= set(rows["r1"])
    bundle = json.loads((out / "r1.json").read_text("utf-8"))
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert report["effectiveDateTime"].startswith("2024-05-01")

    # the same command again: nothing is done twice, the table and rejections are complete
    again = run("extract", str(table_csv), str(jsonl), "--out", str(out), "--table", str(table))
    assert again.returncode == 0, again.stderr
    assert "5 record(s) already done" in again.stderr
    assert sorted(_checkpoint_ids(out)) == ["j1", "r1", "r2", "r3", "r4"]
    with table.open(encoding="utf-8", newline="") as fh:
        assert sorted(row["id"] for row in csv.DictReader(fh)) == ["j1", "r1", "r2"]
    assert len((out / "rejected.jsonl").read_text("utf-8").splitlines()) == 5


def test_sigint_mid_run_then_rerun_finishes_without_duplicates(tmp_path: Path) -> None:
    """Ctrl-C during a backfill: the run stops after the record in flight (exit 130), the
    checkpoint holds what was done, and the same command again does only the rest."""
    total = 400
    records = tmp_path / "reports.jsonl"
    records.write_text(
        "".join(
            json.dumps({"id": f"rep{i:04d}", "text": TEXTS[i % 3], "template": "chest_findings"})
            + "\n"
            for i in range(total)
        ),
        "utf-8",
    )
    out = tmp_path / "out"
    args = [*RADBRIDGE, "extract", str(records), "--out", str(out)]
    env = {**os.environ, "RADBRIDGE_STAGE": "rules"}
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len(_checkpoint_ids(out)) < 20 and process.poll() is None:
        assert time.monotonic() < deadline, "the backfill did not start"
        time.sleep(0.02)
    assert process.poll() is None, "finished before it could be interrupted: make it longer"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr
    first = _checkpoint_ids(out)
    assert 20 <= len(first) < total
    assert len(set(first)) == len(first)
    assert len(list(out.glob("rep*.json"))) == len(first)

    again = run("extract", str(records), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} record(s) already done" in again.stderr
    ids = _checkpoint_ids(out)
    assert len(ids) == total and len(set(ids)) == total
    assert ids[: len(first)] == first
    assert len(list(out.glob("rep*.json"))) == total


def test_table_row_columns_and_unit() -> None:
    """One row per report: value (the status when none is stated), status, evidence,
    confidence; `template.variable` names when a report has several templates."""
    from app.research_table import table_row
    from mappings.inbound import report_from_record
    from mappings.template import get_template
    from workers.process import Result
    from workers.rules_stage import extract_rules

    report = report_from_record({"id": "x", "text": TEXTS[0]}, default_language="en")
    template = get_template("chest_findings")
    extraction = extract_rules(report, template)
    result = Result(report, template, extraction, None, "x", 0.0)
    row = table_row("x", [result])
    assert row["id"] == "x" and row["template"] == "chest_findings"
    assert {v.variable_id for v in extraction.values} <= set(row)
    # the rules stage gives no confidence: the cell is empty, never invented
    assert row["pleural_effusion"] == "present" and row["pleural_effusion.confidence"] == ""
    both = table_row("x", [result, result])
    assert "chest_findings.pleural_effusion" in both and "pleural_effusion" not in both


@pytest.mark.parametrize("bad", [{"text": "x"}, {"id": "a", "text": "  "}, {"id": "a", "text": "t", "date": "yesterday"}])  # fmt: skip
def test_record_rejections(bad: dict[str, str]) -> None:
    from mappings.errors import MessageRejected
    from mappings.inbound import report_from_record

    with pytest.raises(MessageRejected):
        report_from_record(bad, default_language="en")


def test_openai_engine_keeps_its_concurrency_in_flight(tmp_path: Path) -> None:
    """RADBRIDGE_ENGINE=openai: RADBRIDGE_LLM_CONCURRENCY records in flight (a FAKE engine that
    waits like a server and counts); in-process: one at a time. Each record is done once."""
    import threading

    from adapter.inputs import Record
    from adapter.settings import Settings
    from app.backfill import run_backfill
    from mappings.template import get_template, load_builtin_templates
    from tests.fakes import FakeEngine
    from workers.extraction_engine import ChatPrompt, Generation

    template = get_template("chest_findings")
    answer = {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in template.variables
    }

    class ServerLike(FakeEngine):
        def __init__(self) -> None:
            super().__init__(answer)
            self.lock = threading.Lock()
            self.now = self.most = self.calls = 0

        def generate(
            self, prompt: ChatPrompt, schema: dict[str, object], *, max_tokens: int
        ) -> Generation:
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            time.sleep(0.05)
            with self.lock:
                self.now -= 1
            return super().generate(prompt, schema, max_tokens=max_tokens)

    records = [Record("t.jsonl", i + 1, {"id": f"r{i}", "text": TEXTS[i % 3]}) for i in range(12)]
    # a server counts as a real model: its insights ask it too (two generations per record:
    # the template's and the insights', workers.insights.llm); the bundled model's do not
    for engine_kind, expected, calls in (("openai", 3, 24), ("llamacpp", 1, 12)):
        out = tmp_path / engine_kind
        out.mkdir()
        engine = ServerLike()
        settings = Settings(stage="llm", engine=engine_kind, llm_concurrency=3)
        run = run_backfill(
            records,
            {template.id: template},
            True,
            settings,
            lambda engine=engine: engine,
            out,
            builtin=load_builtin_templates,
        )
        assert (run.done, engine.calls, engine.most) == (12, calls, expected)
        assert sorted(_checkpoint_ids(out)) == sorted(f"r{i}" for i in range(12))
