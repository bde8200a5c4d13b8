"""`radbridge extract|validate|show` as a user runs them (subprocess, real model, real files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
FHIR_DIR = Path(__file__).parent / "fixtures" / "fhir"
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def extracted(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    inputs = tmp_path_factory.mktemp("in")
    for name in [
        "chest_ct.hl7",
        "german_report.hl7",
        "multi_obr.hl7",
        "bad_not_oru.hl7",
        "bad_junk.hl7",
    ]:
        shutil.copy(HL7_DIR / name, inputs / name)
    # the same message MLLP-framed, and a FHIR Bundle
    (inputs / "framed.mllp").write_bytes(
        b"\x0b" + (HL7_DIR / "chest_xray.hl7").read_bytes() + b"\x1c\r"
    )
    shutil.copy(FHIR_DIR / "bundle_collection.json", inputs / "bundle.json")
    out = tmp_path_factory.mktemp("out")
    return out, run("extract", str(inputs), "--out", str(out))


@pytest.mark.llm
def test_extract_writes_bundles_and_rejections(
    extracted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, result = extracted
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.glob("*.json"))
    # chest reports (hl7v2 + MLLP + FHIR); the abdomen OBR of multi_obr goes to the abdomen
    # template (issue 21; a report no template applies to would still get its Bundle, issue 20)
    assert names == [
        "CT0001-1.json",
        "DE0004-1.json",
        "MO0006-1.json",
        "MO0006-2.json",
        "XR0002-1.json",
        "dr-chest-1.json",
    ]
    rejected = [
        json.loads(line) for line in (out / "rejected.jsonl").read_text("utf-8").splitlines()
    ]
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == ["no_message", "not_oru_r01"]
    not_oru = next(r for r in rejected if r["reason"] == "not_oru_r01")
    assert (
        not_oru["control_id"] == "BAD0001"
        and not_oru["frame"] == 0
        and not_oru["hl7_error_code"] == "200"
    )
    assert "reports read" in result.stdout and "median seconds / report" in result.stdout
    for line in (out / "rejected.jsonl").read_text("utf-8").splitlines():
        assert "TESTPATIENT" not in line and "MRN" not in line


@pytest.mark.llm
def test_extract_output_validates(extracted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = extracted
    result = run("validate", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stderr
    shown = run("show", str(out))
    assert shown.returncode == 0 and "SNOMED" not in shown.stderr


def test_validate_reports_problems_with_exit_1(tmp_path: Path) -> None:
    shutil.copy(FHIR_DIR / "invalid_bad_status.json", tmp_path / "bad.json")
    result = run("validate", str(tmp_path))
    assert result.returncode == 1
    _path, severity, fhirpath, _message = result.stdout.splitlines()[0].split("\t")
    assert (severity, fhirpath) == ("error", "Observation.status")


def test_bad_options_exit_2(tmp_path: Path) -> None:
    assert run("extract", str(tmp_path / "missing"), "--out", str(tmp_path)).returncode == 2
    assert run("extract", str(HL7_DIR / "chest_ct.hl7")).returncode == 2  # --out missing
    assert (
        run(
            "extract", str(HL7_DIR / "chest_ct.hl7"), "--out", str(tmp_path), "--template", "nope"
        ).returncode
        == 2
    )
    assert (
        run(
            "extract", str(HL7_DIR / "chest_ct.hl7"), "--out", str(tmp_path), "--stage", "bogus"
        ).returncode
        == 2
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("extract", str(empty), "--out", str(tmp_path / "o")).returncode == 2


def test_bad_model_path_is_a_clear_error(tmp_path: Path) -> None:
    result = run(
        "extract",
        str(HL7_DIR / "chest_ct.hl7"),
        "--out",
        str(tmp_path),
        "--model",
        str(tmp_path / "x.gguf"),
    )
    assert result.returncode == 1
    assert "model file not found" in result.stderr
    assert "Traceback" not in result.stderr


def _long_report(tmp_path: Path, kilobytes: int = 40) -> Path:
    """A FHIR Bundle whose one chest report is `kilobytes` KB of text: longer than the context."""
    import base64

    bundle = json.loads((FHIR_DIR / "bundle_collection.json").read_text("utf-8"))
    report = bundle["entry"][1]["resource"]
    report["id"] = "dr-long-1"
    report["identifier"][0]["value"] = "ACC-LONG"
    line = "FINDINGS: Small left pleural effusion. No pneumothorax. Heart size normal.\n"
    text = line * (kilobytes * 1024 // len(line) + 1)
    report["presentedForm"][0]["data"] = base64.b64encode(text.encode()).decode()
    path = tmp_path / "long.json"
    path.write_text(json.dumps(bundle), "utf-8")
    return path


@pytest.mark.llm
def test_extract_report_longer_than_context_is_one_rejection(tmp_path: Path) -> None:
    """Issue 15 item 12: one 40 KB report that does not fit the model's context is a line in
    rejected.jsonl; the other reports are written and the exit code is 0 (was: exit 1, nothing
    written)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(HL7_DIR / "chest_ct.hl7", inputs / "chest_ct.hl7")
    _long_report(inputs)
    out = tmp_path / "out"
    result = run("extract", str(inputs), "--out", str(out), "--stage", "llm")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.json")) == ["CT0001-1.json"]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text("utf-8").splitlines()]
    assert [(r["reason"], r["source"].endswith("long.json")) for r in rejected] == [
        ("extraction_failed", True)
    ]
    assert "exceeds n_ctx" in rejected[0]["detail"] and rejected[0]["hl7_error_code"] == "207"
    assert "pleural" not in (out / "rejected.jsonl").read_text("utf-8")  # no report text


def test_extract_table_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip(
            "pyarrow is installed: the Parquet table is written (tests/test_research_table.py)"
        )
    result = run(
        "extract", str(HL7_DIR / "chest_ct.hl7"), "--out", str(tmp_path / "o"),
        "--table", str(tmp_path / "t.parquet"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "pyarrow" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # refused before any work
    bad = run(
        "extract", str(HL7_DIR / "chest_ct.hl7"), "--out", str(tmp_path / "o"),
        "--table", str(tmp_path / "t.xlsx"),
    )  # fmt: skip
    assert bad.returncode == 2 and ".csv or .parquet" in bad.stderr
