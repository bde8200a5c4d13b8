"""`radbridge templates list|show|check` and `radbridge extract --template FILE.yaml`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from conformance.validate import validate_resource

TYPED = Path(__file__).resolve().parent / "fixtures" / "templates" / "typed_demo.yaml"
runner = CliRunner()


def test_templates_list_names_every_builtin_template() -> None:
    from mappings.template import load_builtin_templates

    result = runner.invoke(app, ["templates", "list"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == list(load_builtin_templates())
    chest = next(row for row in rows if row[0] == "chest_findings")
    assert chest[3] == "en,nl,de" and chest[4] == "19 presence"


def test_templates_show_prints_types_codes_and_uncoded_reasons() -> None:
    result = runner.invoke(app, ["templates", "show", str(TYPED)])
    assert result.exit_code == 0, result.output
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["fazekas (Fazekas score)"][:2] == ["ordinal", "0..3"]
    assert rows["fazekas (Fazekas score)"][2].startswith("uncoded: test template")
    assert rows["lvef (Left ventricular ejection fraction)"][:2] == ["number", "0..100 %"]
    assert rows["heart_size (Heart size)"][:2] == ["enum", "enlarged|normal_size"]
    assert rows["  enlarged (Cardiomegaly)"] == [
        "option",
        "",
        "sct 8186001 Cardiomegaly (disorder)",
    ]
    assert rows["  episode (Episode)"][0] == "qualifier"
    assert rows["    stable (Stable)"] == ["option", "", "uncoded: test template"]
    chest = runner.invoke(app, ["templates", "show", "chest_findings"])
    assert chest.exit_code == 0 and "sct 60046008 Pleural effusion (disorder)" in chest.stdout
    missing = runner.invoke(app, ["templates", "show", "no_such_template"])
    assert missing.exit_code == 2


def test_templates_check_passes_builtins_and_a_good_file() -> None:
    result = runner.invoke(app, ["templates", "check"])
    assert result.exit_code == 0, result.output
    good = runner.invoke(app, ["templates", "check", str(TYPED)])
    assert good.exit_code == 0, good.output
    assert good.stdout == ""  # stdout: problems only, one per line
    assert "1 template file(s) checked, 0 problem(s)" in good.stderr


def test_templates_check_names_file_and_field_of_each_problem(tmp_path: Path) -> None:
    text = TYPED.read_text("utf-8")
    (tmp_path / "bad_scale.yaml").write_text(
        text.replace("scale: {min: 0, max: 3}", "scale: {min: 3, max: 0}"), "utf-8"
    )
    (tmp_path / "bad_display.yaml").write_text(
        text.replace("id: typed_demo", "id: typed_other").replace(
            'display: "Cardiomegaly (disorder)"', 'display: "Big heart"'
        ),
        "utf-8",
    )
    shutil.copy(TYPED, tmp_path / "copy_a.yaml")
    shutil.copy(TYPED, tmp_path / "copy_b.yaml")  # the same template id twice
    result = runner.invoke(app, ["templates", "check", str(tmp_path)])
    assert result.exit_code == 1
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    problems = {(Path(source).name, field): problem for source, field, problem in rows}
    assert "below" in problems[("bad_scale.yaml", "variables.fazekas.scale")]
    assert (
        "is not 'Cardiomegaly (disorder)', the display in the SNOMED CT"
        in (problems[("bad_display.yaml", "variables.heart_size.options.enlarged.code")])
    )
    assert "duplicate template id" in problems[("copy_b.yaml", "id")]
    assert len(rows) == 3
    nothing = runner.invoke(app, ["templates", "check", str(tmp_path / "missing.yaml")])
    assert nothing.exit_code == 2


def _typed_report(path: Path) -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr-typed-1",
        "status": "final",
        "code": {"text": "MRI"},
        "conclusion": "Fazekas grade 2. LVEF 45,5 %. Mild cardiomegaly. "
        "Right pleural effusion, unchanged.",
        "subject": {"identifier": {"value": "MRN-T9"}},
    }
    path.write_text(json.dumps(report), "utf-8")


def test_extract_accepts_a_template_file(tmp_path: Path) -> None:
    _typed_report(tmp_path / "report.json")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["extract", str(tmp_path / "report.json"), "--out", str(out), "--template", str(TYPED),
         "--stage", "rules"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = json.loads((out / "dr-typed-1.json").read_text("utf-8"))
    assert validate_resource(bundle, path="dr-typed-1") == []
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    values = {
        o["code"].get("text"): o.get("valueInteger", o.get("valueQuantity", {}).get("value"))
        for o in observations
    }
    assert values["Fazekas score"] == 2
    assert values["Left ventricular ejection fraction"] == 45.5
    bad = runner.invoke(
        app,
        ["extract", str(tmp_path / "report.json"), "--out", str(out), "--template",
         str(tmp_path / "missing.yaml")],
    )  # fmt: skip
    assert bad.exit_code == 2


def test_show_prints_scale_values_and_option_concepts(tmp_path: Path) -> None:
    """`radbridge show` renders a scale value (valueInteger) and an option concept."""
    report = tmp_path / "in" / "mem.hl7"
    report.parent.mkdir()
    segments = [
        "MSH|^~\\&|RIS|UMC|RB|UMC|20261120101500||ORU^R01|MEM0001|P|2.5.1",
        "PID|1||P123^^^UMC^MR",
        "OBR|1|ORD1|ACC77|MRHERS^MRI hersenen geheugenpoli|||20261120100000|||||||||||||||||MR|F",
        "OBX|1|TX|GDT^Verslag||Bevindingen: MTA links 2, rechts 3. Fazekas graad 1.",
        "OBX|2|TX|IMP^Conclusie||Conclusie: passend bij ziekte van Alzheimer.",
    ]
    report.write_bytes(("\r".join(segments) + "\r").encode())
    out = tmp_path / "out"
    extracted = runner.invoke(
        app, ["extract", str(report.parent), "--out", str(out), "--stage", "rules"]
    )
    assert extracted.exit_code == 0, extracted.output
    shown = runner.invoke(app, ["show", str(out)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in shown.stdout.splitlines()
        if (cells := line.split("│")) and len(cells) > 3
    }
    assert rows["MTA left"] == "2" and rows["MTA right"] == "3" and rows["Fazekas"] == "1"
    assert rows["Conclusion"].startswith("Alzheimer's disease")  # the option's SNOMED concept
