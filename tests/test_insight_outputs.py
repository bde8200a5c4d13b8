"""A report's insights where users look besides the review page (issue 20 item 7), from the real
rules-stage extraction: the research table's insight columns and their codebook lines, the ORU
out's insight OBX (decisions change OBX-11), and `radbridge show`'s insights table (a mismatch
included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from adapter.settings import Settings
from adapter.ui.report_view import value_label_text, value_text
from app.cli import app
from app.codebook import codebook
from app.commands import results
from app.insight_columns import INSIGHT_COLUMN_MEANINGS, largest_sizes
from app.research_table import table_columns, table_row
from app.show_insights import insight_rows
from mappings.fhir_out import EVIDENCE_EXTENSION
from mappings.hl7.oru_out import oru_from_bundle
from mappings.inbound import report_from_record
from mappings.review import template_of
from mappings.template import load_builtin_templates
from tests.fakes import FakeEngine
from tests.test_insights_bundle import ABDOMEN, CHEST_CT
from workers.process import Result, process_reports


def _results(report_id: str, text: str) -> list[Result]:
    record = {"id": report_id, "text": text, "date": "2025-03-10T09:00:00"}
    report = report_from_record(record, default_language="en")
    outcome = process_reports(
        [report], list(load_builtin_templates().values()), Settings(stage="rules"),
        lambda: FakeEngine(""),
    )  # fmt: skip
    return list(outcome.results)


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_research_table_has_follow_up_critical_and_rads_columns() -> None:
    chest = table_row("ct-1", _results("ct-1", CHEST_CT))
    assert chest["followup.count"] == 1
    assert (chest["followup.modality"], chest["followup.due"]) == ("CT", "2025-06-10")
    assert chest["followup.conditional"] == "false"
    assert (chest["critical"], chest["critical.findings"]) == ("false", "")
    assert chest["rads.Lung-RADS"] == "4A"
    abdomen = table_row("abd-1", _results("abd-1", ABDOMEN))
    assert abdomen["followup.modality"] == "US"
    assert abdomen["followup.due"] == "2025-05-05/2025-06-02"  # a range: start/end
    assert abdomen["critical"] == "true" and abdomen["critical.findings"]
    assert abdomen["rads.O-RADS"]
    # every insight column has its codebook line
    rows = [chest, abdomen]
    columns = table_columns(rows)
    lines = {line.column: line for line in codebook(columns, rows, load_builtin_templates())}
    for column in [*INSIGHT_COLUMN_MEANINGS, "rads.Lung-RADS", "rads.O-RADS"]:
        assert column in columns and lines[column].meaning, column
    assert "no LOINC/RadElement code is verified" in lines["rads.Lung-RADS"].meaning


def _evidence(template: str, variable: str) -> dict[str, Any]:
    return {
        "url": EVIDENCE_EXTENSION,
        "extension": [
            {"url": "template", "valueString": f"{template}|1"},
            {"url": "variable", "valueString": variable},
        ],
    }


def _size(value: float, unit: str) -> dict[str, Any]:
    quantity = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    return {"code": {"text": "size"}, "valueQuantity": quantity}


def test_largest_size_per_finding_reads_the_size_components() -> None:
    nodule = {
        "resourceType": "Observation",
        "extension": [_evidence("chest_ct", "nodule")],
        "component": [_size(8, "mm"), _size(1.2, "cm"), {"code": {"text": "side"}}],
    }
    without = {"resourceType": "Observation", "extension": [_evidence("chest_ct", "effusion")]}
    other = {**nodule, "extension": [_evidence("abdomen_us", "cyst")]}
    assert largest_sizes([nodule, without, other], "chest_ct") == {"nodule.largest_size_mm": "12"}
    assert largest_sizes([nodule], "chest_ct", "chest_ct.") == {
        "chest_ct.nodule.largest_size_mm": "12"
    }
    odd = {**nodule, "component": [_size(3, "[in_i]"), {"valueQuantity": {"value": True}}]}
    assert largest_sizes([odd], "chest_ct") == {}  # no mm/cm size: no column, never a guess


def _obx(message: bytes) -> list[list[str]]:
    return [s.split("|") for s in message.decode().split("\r") if s.startswith("OBX|")]


def test_oru_out_carries_the_insights_as_obx() -> None:
    [result] = _results("abd-1", ABDOMEN)[:1]
    assert result.bundle is not None
    segments = _obx(oru_from_bundle(result.bundle, control_id="OUT1"))
    by_name = {s[3]: s for s in segments if s[2] == "ST"}
    assert set(by_name) == {"^Follow-up recommendation", "^Critical result", "^Result communicated"}
    follow_up = by_name["^Follow-up recommendation"]
    assert "modality US" in follow_up[5] and "due 2025-05-05 to 2025-06-02" in follow_up[5]
    assert follow_up[11] == "P"  # a draft awaits review
    assert by_name["^Critical result"][11] == "F"
    assert [int(s[1]) for s in segments] == list(range(1, len(segments) + 1))  # one numbering
    # a rejected follow-up is withdrawn
    for request in _resources(result.bundle, "ServiceRequest"):
        request["status"] = "entered-in-error"
    again = {s[3]: s for s in _obx(oru_from_bundle(result.bundle, control_id="OUT2"))}
    assert again["^Follow-up recommendation"][11] == "W"
    assert "Recommend" not in oru_from_bundle(result.bundle, control_id="OUT3").decode()


def test_show_lists_every_insight_type_with_its_status() -> None:
    [result] = _results("abd-1", ABDOMEN)[:1]
    assert result.bundle is not None
    issue = {
        "resourceType": "DetectedIssue",
        "id": "d1",
        "status": "preliminary",
        "code": {"text": "laterality mismatch"},
        "detail": "ordered: left knee; report: right knee",
    }
    bundle = {**result.bundle, "entry": [*result.bundle["entry"], {"resource": issue}]}
    rows = insight_rows(bundle)
    assert [row[0] for row in rows] == ["ServiceRequest", "Flag", "Communication", "DetectedIssue"]
    assert rows[0][4] == "draft" and rows[1][4] == "active"
    assert rows[3][1:3] == ("laterality mismatch", "ordered: left knee; report: right knee")


def _size_observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in _resources(bundle, "Observation") if template_of(r) == ("insights", "size")]


def test_research_table_lists_the_insight_size_observations() -> None:
    abdomen = table_row("abd-1", _results("abd-1", ABDOMEN))
    assert abdomen["size.finding"] == "Non-compressible appendix;Incidental left adnexal cyst"
    assert abdomen["size.largest_mm"] == "11;20"  # 2 cm in mm
    chest = table_row("ct-1", _results("ct-1", CHEST_CT))  # the nodule's size is the template's
    assert (chest["size.finding"], chest["size.largest_mm"]) == ("", "")
    assert chest["nodule.largest_size_mm"] == "9"


def test_show_and_the_review_page_give_a_size_observation_its_size_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [result] = _results("abd-1", ABDOMEN)[:1]
    assert result.bundle is not None
    cyst = _size_observations(result.bundle)[1]
    assert cyst["code"]["text"] == "Incidental left adnexal cyst"
    path = tmp_path / "abd-1.json"
    path.write_text(json.dumps(result.bundle), "utf-8")
    monkeypatch.setattr(results, "out", Console(width=300))  # one line per row
    shown = CliRunner().invoke(app, ["show", str(path)])
    assert shown.exit_code == 0, shown.output
    [line] = [row for row in shown.output.splitlines() if "Incidental left adnexal cyst" in row]
    assert "(sct 81827009): 2 cm" in line  # its diameter, once (not in the insights table)
    assert value_text(cyst).endswith("; diameter 2 cm")
    assert value_label_text(cyst) == "Present; diameter 2 cm"
    # an Observation: the Observations table (and review rows) list it, the insights table not
    assert "Observation" not in {row[0] for row in insight_rows(result.bundle)}
