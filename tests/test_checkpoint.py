"""The backfill checkpoint records its options: a rerun with other options (template, stage, a
template's content) is refused before any work unless `--restart` or `--retry-rejected`;
rejected records are retried (subprocess, real files, rules stage), and `app.checkpoint` on its
own (real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointMismatch, Resume, options_id

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
TEXT = "FINDINGS: Small left pleural effusion. No pneumothorax."


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADBRIDGE_STAGE": "rules", "COLUMNS": "200"}
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / CHECKPOINT_FILE).read_text("utf-8").splitlines()]


def _records(tmp_path: Path) -> Path:
    """r1, r2: a chest template by name; bad: an unknown template (rejected)."""
    path = tmp_path / "reports.jsonl"
    records = [
        {"id": "r1", "text": TEXT, "template": "chest_findings"},
        {"id": "r2", "text": TEXT, "template": "chest_findings"},
        {"id": "bad", "text": TEXT, "template": "no_such_template"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return path


def test_other_options_are_refused_before_any_work_then_restart(tmp_path: Path) -> None:
    records, out = _records(tmp_path), tmp_path / "out"
    first = run("extract", str(records), "--out", str(out))
    assert first.returncode == 0, first.stderr
    options = [line for line in _lines(out) if "options" in line]
    assert len(options) == 1 and options[0]["options"]["template"] == "routed"
    assert options[0]["options"]["stage"] == "rules"
    before = (out / CHECKPOINT_FILE).read_bytes()

    other = run("extract", str(records), "--out", str(out), "--template", "chest_findings")
    assert other.returncode == 2
    assert "other options" in said(other) and "template: routed -> chest_findings" in said(other)
    assert "--restart" in said(other) and "--retry-rejected" in said(other)
    assert (out / CHECKPOINT_FILE).read_bytes() == before  # nothing done, nothing recorded

    same = run("extract", str(records), "--out", str(out))
    assert same.returncode == 0 and "3 record(s) already done" in said(same)

    (out / "stale.json").write_text("{}", "utf-8")  # not the checkpoint's: left alone
    restart = run("extract", str(records), "--out", str(out), "--template", "chest_findings",
                  "--restart", "--table", str(tmp_path / "t.csv"))  # fmt: skip
    assert restart.returncode == 0, restart.stderr
    lines = _lines(out)
    assert [line["options"]["template"] for line in lines if "options" in line] == [
        "chest_findings"
    ]
    assert sorted(line["id"] for line in lines if "id" in line) == ["bad", "r1", "r2"]
    assert all(not line["rejected"] for line in lines if "id" in line)  # bad: forced template
    assert sorted(p.name for p in out.glob("*.json")) == ["bad.json", "r1.json", "r2.json",
                                                         "stale.json"]  # fmt: skip
    assert len((tmp_path / "t.csv").read_text("utf-8").splitlines()) == 4
    both = run("extract", str(records), "--out", str(out), "--restart", "--retry-rejected")
    assert both.returncode == 2 and "exclude each other" in said(both)


def test_retry_rejected_keeps_accepted_records_and_redoes_the_rejected(tmp_path: Path) -> None:
    records, out, table = _records(tmp_path), tmp_path / "out", tmp_path / "t.csv"
    first = run("extract", str(records), "--out", str(out))
    assert first.returncode == 0, first.stderr
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text("utf-8").splitlines()]
    assert [r["reason"] for r in rejected] == ["unknown_template"]
    accepted = {line["id"]: line for line in _lines(out) if line.get("id") in ("r1", "r2")}

    # same options: the rejected record is retried (and rejected again), nothing else is done
    same = run("extract", str(records), "--out", str(out), "--retry-rejected")
    assert same.returncode == 0, same.stderr
    assert "1 record(s) rejected before: done again" in said(same)
    assert "2 record(s) already done" in said(same)
    assert "extracting records: 1/1 (100%)" in same.stderr  # progress counts what is left
    assert [line["id"] for line in _lines(out) if "id" in line].count("bad") == 2

    # other options: allowed with --retry-rejected; the accepted records are kept as they were
    retried = run("extract", str(records), "--out", str(out), "--template", "chest_findings",
                  "--retry-rejected", "--table", str(table))  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    lines = _lines(out)
    assert [line["options"]["template"] for line in lines if "options" in line] == [
        "routed", "chest_findings",
    ]  # fmt: skip
    latest = {line["id"]: line for line in lines if "id" in line}
    assert {key: latest[key] for key in accepted} == accepted
    assert latest["bad"]["rejected"] == [] and latest["bad"]["bundles"] == ["bad"]
    assert latest["bad"]["options_id"] != accepted["r1"]["options_id"]
    assert (out / "rejected.jsonl").read_text("utf-8") == ""
    rows = table.read_text("utf-8").splitlines()
    assert len(rows) == 4  # header and every record, accepted across both runs

    # the latest options are now the folder's: the same command again does nothing
    again = run("extract", str(records), "--out", str(out), "--template", "chest_findings")
    assert again.returncode == 0 and "3 record(s) already done" in said(again)


def test_an_edited_template_file_is_a_change_of_options(tmp_path: Path) -> None:
    """A custom template edited without a new version: its content digest differs."""
    import importlib.resources

    original = Path(str(importlib.resources.files("mappings") / "templates"))
    yaml_text = (original / "chest_findings.yaml").read_text("utf-8")
    custom = tmp_path / "mine.yaml"
    custom.write_text(yaml_text, "utf-8")
    records, out = _records(tmp_path), tmp_path / "out"
    first = run("extract", str(records), "--out", str(out), "--template", str(custom))
    assert first.returncode == 0, first.stderr
    edited = yaml_text.replace("title:", "title: Edited", 1)
    assert edited != yaml_text
    custom.write_text(edited, "utf-8")
    second = run("extract", str(records), "--out", str(out), "--template", str(custom))
    assert second.returncode == 2
    assert "templates chest_findings:" in said(second) and "sha256:" in said(second)


def test_checkpoint_without_options_adopts_the_run_and_a_cut_line_is_redone(
    tmp_path: Path,
) -> None:
    legacy = {"id": "a", "source": "x.jsonl", "line": 1, "bundles": ["a"], "rejected": [],
              "row": None}  # fmt: skip
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(legacy) + "\n" + '{"id": "b", "bun', "utf-8")
    checkpoint = Checkpoint(tmp_path, {"stage": "rules"})
    assert checkpoint.adopted and checkpoint.done("a") and not checkpoint.done("b")
    assert Checkpoint(tmp_path, {"stage": "rules"}).adopted is False  # options recorded now
    with pytest.raises(CheckpointMismatch) as refused:
        Checkpoint(tmp_path, {"stage": "llm"})
    assert refused.value.changes == ["stage: rules -> llm"]


def test_restart_removes_only_the_bundles_the_checkpoint_lists(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path, {"stage": "rules"})
    for name in ("a", "keep"):
        (tmp_path / f"{name}.json").write_text("{}", "utf-8")
    checkpoint.add({"id": "a", "bundles": ["a"], "rejected": [], "row": None})
    again = Checkpoint(tmp_path, {"stage": "rules"}, Resume.RESTART)
    assert not again.entries and not (tmp_path / "a.json").exists()
    assert (tmp_path / "keep.json").exists()
    assert options_id({"b": 1, "a": 2}) == options_id({"a": 2, "b": 1})
