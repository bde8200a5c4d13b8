"""`radbridge eval` end to end (subprocess, real stage 1) and the gold/prediction conversions.

The expected numbers for tests/fixtures/eval/chest_findings.jsonl were computed by hand from the
gold labels and the stage-1 labels listed in EXPECTED_WRONG (every other label is right):

variable          gold positives / stage-1 result                    TP FP FN TN
pleural_effusion  ev-01 present (right); ev-08 pericardial -> FP      1  1  0  6
cardiomegaly      ev-02 CTR 0.61, no synonym -> FN; ev-01/04 absent    0  0  1  7
                  ("heart size normal") predicted not_mentioned
consolidation     ev-03, ev-06                                         2  0  0  6
atelectasis       ev-05, ev-06                                         2  0  0  6
pulmonary_oedema  ev-02                                                1  0  0  7
pneumothorax, lung_nodule, ground_glass_opacity: no positive           0  0  0  8

micro TP 6 FP 1 FN 1 -> P = R = F1 = 6/7. Macro F1 over the 5 defined: (2/3 + 1 + 1 + 0 + 1)/5
= 11/15. Macro precision over the 4 defined (cardiomegaly has no prediction): 3.5/4. Macro
recall 4/5. Macro specificity (6/7 + 7)/8 = 55/56. Macro accuracy (7/8 + 7/8 + 6)/8 = 31/32.
Macro class accuracy (7/8 + 5/8 + 6)/8 = 15/16. Exact reports: ev-03, 05, 06, 07 -> 4/8.
All-negative reports: ev-04, ev-07, ev-08; ev-08 got a positive -> 2/3.
Lesion–location pairs (sites; bilateral = right + left): TP 7 (ev-01 1, ev-02 2, ev-03 1, ev-05 1,
ev-06 2), FP 3 (ev-06: both lobes given to both findings in one clause -> 2; ev-08 effusion
without location -> 1), FN 0 -> P 0.7, R 1, F1 14/17. Lesions right: 4 of 6 (ev-06's two are
wrong). Reports with identical pair sets: 6/8.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conformance.datasets import DRAGON_NEEDS, load_dragon, parse_record, read_records
from conformance.errors import ConverterUnavailable, DatasetError
from conformance.evaluate import detect_format
from conformance.labels import predicted_labels, variable_specs
from conformance.metrics import NOT_MENTIONED, VariableSpec
from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    ModelInfo,
    Stage,
)
from mappings.template import Template, parse_template

EVAL_DIR = Path(__file__).parent / "fixtures" / "eval"
DATASET = EVAL_DIR / "chest_findings.jsonl"
RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
NM = NOT_MENTIONED

EXPECTED_WRONG = {
    # "Cardiothoracic ratio 0.61" is a number, not a state word: stage 1 does not read it
    ("ev-02", "cardiomegaly", "present", NM),
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # rich must not wrap the messages checked
    return subprocess.run(
        [*RADBRIDGE, *args], capture_output=True, text=True, timeout=600, check=False, env=env
    )


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("eval")
    result = run("eval", str(DATASET), "--stage", "rules", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.fixture(scope="module")
def metrics(rules_run: tuple[Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((rules_run[0] / "metrics.json").read_text("utf-8"))
    assert [task["task"] for task in data["tasks"]] == ["chest_findings"]
    stage: dict[str, Any] = data["tasks"][0]["stages"]["rules"]
    return stage


def test_eval_writes_outputs_and_prints_the_table(rules_run: tuple[Path, str]) -> None:
    out, stdout = rules_run
    assert (out / "metrics.json").is_file()
    assert (out / "report.html").is_file()
    assert "radbridge eval: chest_findings" in stdout
    assert "report exact accuracy" in stdout
    assert "0.875 [" in stdout  # exact accuracy with its interval


def test_stage1_labels_are_the_hand_checked_ones(metrics: dict[str, Any]) -> None:
    wrong = {
        (e["report_id"], e["variable_id"], e["gold"], e["predicted"]) for e in metrics["errors"]
    }
    assert wrong == EXPECTED_WRONG, "stage 1 changed: update EXPECTED_WRONG and the numbers"
    assert metrics["errors_total"] == 1


def test_per_variable_counts(metrics: dict[str, Any]) -> None:
    variables = metrics["metrics"]["variables"]
    counts = {
        name: tuple(v["counts"][k] for k in ("tp", "fp", "fn", "tn"))
        for name, v in variables.items()
    }
    nothing = (0, 0, 0, 8)
    assert counts == {
        "pleural_effusion": (1, 0, 0, 7),  # "pericardial effusion" (ev-08) is excluded
        "pneumothorax": nothing,
        "consolidation": (2, 0, 0, 6),
        "atelectasis": (2, 0, 0, 6),
        "lung_nodule": nothing,
        "lung_mass": nothing,
        "cardiomegaly": (0, 0, 1, 7),
        "enlarged_cardiomediastinum": nothing,
        "pulmonary_oedema": (1, 0, 0, 7),
        "ground_glass_opacity": nothing,
        "infiltration": nothing,
        "lung_opacity": nothing,
        "pneumonia": (1, 0, 0, 7),
        "emphysema": nothing,
        "fibrosis": nothing,
        "pleural_thickening": nothing,
        "hiatal_hernia": nothing,
        "fracture": nothing,
        "support_devices": nothing,
    }
    effusion = variables["pleural_effusion"]
    assert effusion["precision"] == 1.0
    assert effusion["recall"] == 1.0
    assert effusion["f1"] == 1.0
    assert effusion["specificity"] == 1.0
    assert effusion["class_accuracy"] == 1.0
    cardiomegaly = variables["cardiomegaly"]
    assert cardiomegaly["precision"] is None  # nothing predicted: undefined, not 1.0
    assert cardiomegaly["recall"] == 0.0
    assert cardiomegaly["class_accuracy"] == 0.875  # "heart size normal" is read as absent
    assert cardiomegaly["confusion"]["labels"] == ["present", "absent", "uncertain", NM]
    assert cardiomegaly["confusion"]["counts"] == [
        [0, 0, 0, 1],
        [0, 2, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 5],
    ]
    assert variables["pneumothorax"]["f1"] is None  # no positive on either side


def test_macro_micro_exact_and_negative_reports(metrics: dict[str, Any]) -> None:
    m = metrics["metrics"]
    assert m["reports"] == 8
    # 19 variables x 8 reports; one miss (ev-02 cardiomegaly)
    assert m["micro"] == {"tp": 7, "fp": 0, "fn": 1, "tn": 144, "n": 152}
    assert m["micro_scores"]["f1"] == pytest.approx(14 / 15, abs=1e-6)
    # F1 is defined for the 6 variables with a positive: 5 perfect, cardiomegaly 0
    assert m["macro"]["f1"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["macro"]["precision"] == 1.0  # undefined for cardiomegaly (nothing predicted)
    assert m["macro"]["recall"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["macro"]["specificity"] == 1.0
    assert m["macro"]["accuracy"] == pytest.approx((18 + 7 / 8) / 19, abs=1e-6)
    assert m["macro"]["class_accuracy"] == pytest.approx((18 + 7 / 8) / 19, abs=1e-6)
    assert m["exact_accuracy"] == 0.875
    assert m["negative_reports"] == 3
    assert m["negative_report_specificity"] == 1.0
    for key, value in (("macro_f1", 5 / 6), ("exact_accuracy", 0.875)):
        interval = m["ci"][key]
        assert 0.0 <= interval["low"] <= value <= interval["high"] <= 1.0


def test_lesion_location_pairs(metrics: dict[str, Any]) -> None:
    pairs = metrics["metrics"]["pairs"]
    assert (pairs["tp"], pairs["fp"], pairs["fn"]) == (7, 3, 0)
    assert pairs["precision"] == 0.7
    assert pairs["recall"] == 1.0
    assert pairs["f1"] == pytest.approx(14 / 17, abs=1e-6)
    assert (pairs["gold_items"], pairs["items_correct"]) == (6, 4)
    assert pairs["report_exact"] == 0.75
    assert metrics["metrics"]["episodes"] is None  # no _episodes gold in this dataset


def test_timing_recorded(metrics: dict[str, Any]) -> None:
    timing = metrics["timing"]
    assert timing["reports"] == 8
    assert timing["seconds_per_report_mean"] > 0
    assert timing["tokens_per_second"] is None  # stage 1 generates no tokens


def test_metrics_json_carries_no_report_text(rules_run: tuple[Path, str]) -> None:
    out, _ = rules_run
    text = (out / "metrics.json").read_text("utf-8") + (out / "report.html").read_text("utf-8")
    for line in DATASET.read_text("utf-8").splitlines():
        report = json.loads(line)["text"]
        for sentence in report.split("."):
            if len(sentence.strip()) > 12:
                assert sentence.strip() not in text


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def _good_line() -> str:
    return DATASET.read_text("utf-8").splitlines()[0]


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [_good_line(), "{not json"])
    result = run("eval", str(path), "--stage", "rules", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{path}:2: invalid JSON" in result.stderr.replace("\n", "")


def test_gold_missing_a_variable_is_a_line_error(tmp_path: Path) -> None:
    record = json.loads(_good_line())
    del record["gold"]["cardiomegaly"]
    path = _write(tmp_path, [_good_line().replace("ev-01", "ev-00"), json.dumps(record)])
    result = run("eval", str(path), "--stage", "rules", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "set.jsonl:2: gold lacks variable 'cardiomegaly'" in result.stderr.replace("\n", "")


def test_unknown_template_and_bad_options(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    unknown = run("eval", str(DATASET), "--template", "no_such", "--stage", "rules", "--out", out)
    assert unknown.returncode == 2
    assert "unknown template" in unknown.stderr
    bad_stage = run("eval", str(DATASET), "--stage", "fast", "--out", out)
    assert bad_stage.returncode == 2
    assert "--stage must be" in bad_stage.stderr
    missing = run("eval", str(tmp_path / "nothing.jsonl"), "--out", out)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


def test_negex_is_detected_and_scored(tmp_path: Path, shared_dir: Path) -> None:
    negex = shared_dir / "data" / "negex"
    assert detect_format(negex) == "negex"
    assert detect_format(negex / "Annotations-1-120.txt") == "negex"
    result = run("eval", str(negex / "Annotations-1-120.txt"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "metrics.json").read_text("utf-8"))
    stage = data["tasks"][0]["stages"]["rules"]
    counts = stage["metrics"]["variables"]["negated"]["counts"]
    # the file's README: 2376 rows, 491 Negated
    assert counts["n"] == 2376
    assert counts["tp"] + counts["fn"] == 491
    assert stage["metrics"]["variables"]["negated"]["f1"] > 0.8
    refused = run("eval", str(negex), "--stage", "llm", "--out", str(tmp_path))
    assert refused.returncode == 2


def test_dragon_is_detected(tmp_path: Path, shared_dir: Path) -> None:
    dragon = shared_dir / "data" / "dragon-samples"
    assert detect_format(dragon) == "dragon"
    if importlib.util.find_spec("conformance.dragon") is None:
        result = run("eval", str(dragon), "--out", str(tmp_path))
        assert result.returncode == 2
        assert DRAGON_NEEDS in result.stderr
        with pytest.raises(ConverterUnavailable):
            load_dragon(dragon)
    else:  # the converter exists (conformance/dragon.py): the samples load as labelled reports
        assert load_dragon(dragon).reports


TYPED = """
id: eval_demo
version: "0.1.0"
title: Evaluation demo
languages: [en]
locations:
  - id: right_lung
    label: right lung
    code: {system: "http://snomed.info/sct", code: "3341006", display: "Right lung structure (body structure)", source: "HL7/fhir-mCODE-ig input/fsh/EX_GenomeX.fsh@543477b5"}
    synonyms: {en: [right]}
  - id: left_lung
    label: left lung
    code: {system: "http://snomed.info/sct", code: "44029006", display: "Left lung structure (body structure)", source: "HL7/fhir-mCODE-ig input/fsh/EX_GenomeX.fsh@543477b5"}
    synonyms: {en: [left]}
  - id: bilateral
    label: both sides
    expands_to: [right_lung, left_lung]
    synonyms: {en: [bilateral]}
variables:
  - id: fazekas
    label: Fazekas score
    type: ordinal
    definition: Fazekas grade of white matter hyperintensities.
    uncoded_reason: "test template"
    synonyms: {en: [Fazekas]}
    scale: {min: 0, max: 3}
  - id: lvef
    label: LVEF
    type: number
    definition: Left ventricular ejection fraction in percent.
    uncoded_reason: "test template"
    unit: {code: "%", display: "%"}
    synonyms: {en: [LVEF]}
  - id: heart_size
    label: Heart size
    type: enum
    definition: The overall verdict on heart size.
    uncoded_reason: "test template"
    options:
      - {id: enlarged, label: Enlarged, uncoded_reason: "test template", synonyms: {en: [enlarged heart]}}
      - {id: normal_size, label: Normal, uncoded_reason: "test template", synonyms: {en: [normal heart]}}
  - id: effusion
    label: Pleural effusion
    type: presence
    definition: Fluid in the pleural space, any size.
    uncoded_reason: "test template"
    synonyms: {en: [effusion]}
    locations: [right_lung, left_lung, bilateral]
    qualifier:
      id: episode
      label: Episode
      uncoded_reason: "test template"
      options:
        - {id: progression, label: Progression, uncoded_reason: "test template", synonyms: {en: [increased]}}
        - {id: stable, label: Stable, uncoded_reason: "test template", synonyms: {en: [unchanged]}}
"""


@pytest.fixture(scope="module")
def typed() -> Template:
    return parse_template(TYPED, "test_evaluate.TYPED")


def _extraction(template: Template, *values: FindingValue) -> Extraction:
    given = {v.variable_id: v for v in values}
    return Extraction(
        report_id="r1",
        template_id=template.id,
        template_version=template.version,
        model=ModelInfo(name="test", sha256="0" * 64),
        stage=Stage.LLM,
        values=tuple(
            given.get(v.id, FindingValue(variable_id=v.id, status=FindingStatus.NOT_MENTIONED))
            for v in template.variables
        ),
        created=datetime.now(UTC),
    )


def test_predicted_labels_of_every_type(typed: Template) -> None:
    quote = Evidence(quote="x", start=0, end=1)
    extraction = _extraction(
        typed,
        FindingValue(variable_id="fazekas", status=FindingStatus.PRESENT, value=2, evidence=quote),
        # downgraded by the evidence check: still scored by its value
        FindingValue(variable_id="lvef", status=FindingStatus.UNCERTAIN, value=26.0, unit="%"),
        FindingValue(variable_id="heart_size", status=FindingStatus.PRESENT, value="enlarged"),
        FindingValue(
            variable_id="effusion",
            status=FindingStatus.PRESENT,
            value="progression",
            locations=("bilateral",),
        ),
    )
    labels = predicted_labels(extraction, typed)
    assert labels == {
        "fazekas": 2,
        "lvef": 26.0,
        "heart_size": "enlarged",
        "effusion": "present",
        "_pairs": frozenset({("effusion", "right_lung"), ("effusion", "left_lung")}),
        "_episodes": frozenset({("effusion", "progression")}),
    }
    empty = predicted_labels(_extraction(typed), typed)
    assert empty == {
        "fazekas": NM,
        "lvef": NM,
        "heart_size": NM,
        "effusion": NM,
        "_pairs": frozenset(),
        "_episodes": frozenset(),
    }
    bare = predicted_labels(
        _extraction(typed, FindingValue(variable_id="effusion", status=FindingStatus.PRESENT)),
        typed,
    )
    assert bare["_pairs"] == {("effusion", None)}
    assert bare["_episodes"] == {("effusion", None)}


def test_variable_specs(typed: Template) -> None:
    assert variable_specs(typed, tolerance=1.0) == (
        VariableSpec("fazekas", "ordinal", (0, 1, 2, 3)),
        VariableSpec("lvef", "number", (), 1.0),
        VariableSpec("heart_size", "enum", ("enlarged", "normal_size")),
        VariableSpec("effusion", "presence"),
    )


def _record(**gold: object) -> dict[str, object]:
    base: dict[str, object] = {"fazekas": 1, "lvef": 55, "heart_size": NM, "effusion": "absent"}
    base.update(gold)
    return {"id": "a", "text": "report", "language": "en", "template": "eval_demo", "gold": base}


def test_gold_values_are_checked_against_the_template(typed: Template) -> None:
    def parse(record: dict[str, object]) -> object:
        return parse_record(record, "set.jsonl", 7, lambda _: typed)

    report = parse(_record(_pairs=[["effusion", "bilateral"]], _episodes=[["effusion", "stable"]]))
    assert report.gold == {"fazekas": 1, "lvef": 55.0, "heart_size": NM, "effusion": "absent"}  # type: ignore[attr-defined]
    assert report.pairs == {("effusion", "right_lung"), ("effusion", "left_lung")}  # type: ignore[attr-defined]
    assert report.episodes == {("effusion", "stable")}  # type: ignore[attr-defined]
    bad = [
        (_record(fazekas=4), "outside the scale"),
        (_record(fazekas="2"), "ordinal gold must be an integer"),
        (_record(lvef=True), "number gold must be a number"),
        (_record(heart_size="huge"), "is not an option"),
        (_record(effusion="yes"), "is not one of"),
        (_record(extra="present"), "unknown variable"),
        (_record(_pairs=[["effusion", "apex"]]), "is not a location of effusion"),
        (_record(_episodes=[["effusion", "gone"]]), "is not a qualifier option"),
        (_record(_episodes=[["fazekas", None]]), "has no qualifier"),
        ({"id": "a", "template": "eval_demo", "gold": {}}, "missing key 'text'"),
    ]
    for record, message in bad:
        with pytest.raises(DatasetError, match=message) as caught:
            parse(record)
        assert str(caught.value).startswith("set.jsonl:7: ")


def test_template_filter_and_duplicates(typed: Template) -> None:
    other = {**_record(), "template": "chest_findings"}
    kept = read_records(
        [(1, _record()), (2, other)], "s.jsonl", template_id="eval_demo", templates=lambda _: typed
    )
    assert [r.source for r in kept] == ["s.jsonl:1"]
    with pytest.raises(DatasetError, match=r"s\.jsonl:2: duplicate id"):
        read_records([(1, _record()), (2, _record())], "s.jsonl", templates=lambda _: typed)


@pytest.mark.llm
def test_all_stages_compare(tmp_path: Path) -> None:
    lines = DATASET.read_text("utf-8").splitlines()
    subset = _write(tmp_path, [lines[0], lines[7]])
    result = run("eval", str(subset), "--stage", "all", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "out" / "metrics.json").read_text("utf-8"))
    task = data["tasks"][0]
    assert list(task["stages"]) == ["rules", "llm", "hybrid"]
    assert [(c["a"], c["b"]) for c in task["comparisons"]] == [
        ("rules", "llm"),
        ("rules", "hybrid"),
        ("llm", "hybrid"),
    ]
    for comparison in task["comparisons"]:
        assert 0.0 <= comparison["exact"]["p_value"] <= 1.0
        assert comparison["agreement"] is not None
    assert task["stages"]["llm"]["timing"]["tokens_per_second"] > 0
    assert "rules vs llm" in result.stdout
