"""The model path of the insights step (issue 20, `workers.insights.llm`): every item's quote is
checked against the report (an item whose quote is not there is dropped, never kept), the
rules win where they found something, an invalid answer leaves the rules' insights, and the use
case asks the engine only with a model stage. Plumbing with the shipped SmolLM2 (`llm` mark):
it is weak, so the test checks that whatever it returns rests on the report's own words."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from conformance.errors import EvaluationError
from mappings.inbound import report_from_record
from mappings.insights.critical_list import load_critical_list
from mappings.insights.model import CriticalResult, FollowUp, Insights, RadsCategory, Span
from mappings.report import ModelInfo, Report
from tests.test_insights_bundle import ABDOMEN, CHEST_CT
from workers.extraction_engine import ChatPrompt, Generation
from workers.insights.extract import InsightContext, extract_insights
from workers.insights.llm import (
    ModelInsights,
    check_model_insights,
    insights_schema,
    merge_insights,
    with_model_insights,
)
from workers.process import process_reports

FINDINGS = load_critical_list()
DAY = date(2025, 3, 10)
NOTE = (
    "CT ABDOMEN\n"
    "FINDINGS: Free intraperitoneal air under the diaphragm. No pneumothorax.\n"
    "IMPRESSION: Pneumoperitoneum. BI-RADS 3 lesion of the right breast incidentally.\n"
    "Suggest MRI of the liver in 6 months if symptoms persist."
)


def _report(text: str, report_id: str = "r1") -> Report:
    return report_from_record(
        {"id": report_id, "text": text, "date": "2025-03-10T09:00:00"}, default_language="en"
    )


def _answer(**kinds: list[dict[str, Any]]) -> ModelInsights:
    return ModelInsights.model_validate({"followups": [], "critical": [], "rads": [], **kinds})


def _followup(evidence: str, **extra: Any) -> dict[str, Any]:
    item = {"evidence": evidence, "procedure": "MRI liver", "modality": "MR", "interval": "P6M",
            "interval_end": None, "conditional": True}  # fmt: skip
    return {**item, **extra}


def test_an_item_whose_quote_is_not_in_the_report_is_dropped() -> None:
    report = _report(NOTE)
    checked = check_model_insights(
        report,
        _answer(
            followups=[
                _followup("Suggest MRI of the liver in 6 months if symptoms persist."),
                _followup("Recommend CT chest in 3 months."),  # not in the report
                _followup("no"),  # too short to carry meaning
            ],
            critical=[
                {"evidence": "Free intraperitoneal air", "finding": "pneumoperitoneum"},
                {"evidence": "Tension pneumothorax", "finding": "tension_pneumothorax"},
            ],
            rads=[
                {"evidence": "BI-RADS 3", "system": "BI-RADS", "category": "3", "side": "right"},
                {"evidence": "BI-RADS 4A", "system": "BI-RADS", "category": "4A", "side": None},
            ],
        ),
        FINDINGS,
        DAY,
    )
    [followup] = checked.followups
    assert (followup.modality, followup.interval, followup.conditional) == ("MR", ("P6M",), True)
    assert followup.due == date(2025, 9, 10) and followup.kind == "imaging"
    assert [c.finding for c in checked.critical] == ["pneumoperitoneum"]
    assert [(r.system, r.category, r.side) for r in checked.rads] == [("BI-RADS", "3", "right")]
    for item in (*checked.followups, *checked.critical, *checked.rads):
        evidence = item.evidence
        assert report.text[evidence.start : evidence.end] == evidence.quote


def test_the_quote_must_state_the_attribute_and_the_finding() -> None:
    report = _report(NOTE)
    checked = check_model_insights(
        report,
        _answer(
            followups=[  # the quote names no CT and states no 3 months: those are dropped
                _followup("Suggest MRI of the liver", modality="CT", interval="P3M"),
            ],
            critical=[
                {"evidence": "No pneumothorax", "finding": "pneumothorax"},  # negated
                {"evidence": "Pneumoperitoneum", "finding": "aortic_dissection"},  # not named
            ],
            rads=[  # no such category; the quote does not hold the category
                {
                    "evidence": "BI-RADS 3 lesion",
                    "system": "BI-RADS",
                    "category": "4X",
                    "side": None,
                },
                {
                    "evidence": "BI-RADS 3 lesion",
                    "system": "PI-RADS",
                    "category": "3",
                    "side": None,
                },
                {
                    "evidence": "BI-RADS 3 lesion",
                    "system": "BI-RADS",
                    "category": "5",
                    "side": None,
                },
            ],
        ),
        FINDINGS,
        DAY,
    )
    [followup] = checked.followups
    assert (followup.modality, followup.interval, followup.due) == (None, (), None)
    assert checked.critical == () and checked.rads == ()


def test_an_item_the_model_repeats_is_kept_once() -> None:
    report = _report(NOTE)
    quote = "Suggest MRI of the liver in 6 months if symptoms persist."
    rads = {"evidence": "BI-RADS 3", "system": "BI-RADS", "category": "3", "side": "right"}
    checked = check_model_insights(
        report,
        _answer(
            followups=[_followup(quote), _followup(quote), _followup(quote, modality=None)],
            critical=[{"evidence": "Pneumoperitoneum", "finding": "pneumoperitoneum"}] * 2,
            rads=[rads, rads],
        ),
        FINDINGS,
        DAY,
    )
    assert [f.modality for f in checked.followups] == ["MR", None]
    assert len(checked.critical) == 1 and len(checked.rads) == 1


@pytest.mark.parametrize(
    ("quote", "system", "category", "holds"),
    [
        ("ACR TI-RADS TR4", "TI-RADS", "TR4", True),
        ("TI-RADS 4 nodule", "TI-RADS", "TR4", True),
        ("ACR TI-RADS TR4", "TI-RADS", "TR5", False),
        ("LI-RADS LR-5", "LI-RADS", "LR-5", True),
        ("LR5 observation", "LI-RADS", "LR-5", True),
        ("LI-RADS LR-5", "LI-RADS", "LR-M", False),
        ("Lung-RADS 4A", "Lung-RADS", "4A", True),
        ("Lung-RADS 4A", "Lung-RADS", "4", False),
        ("Lung-RADS 4A", "BI-RADS", "4A", False),
        ("Density ACR c", "BI-RADS density", "c", True),
    ],
)
def test_a_rads_quote_must_hold_its_system_and_category(
    quote: str, system: str, category: str, holds: bool
) -> None:
    report = _report(f"IMPRESSION: {quote}.")
    item = {"evidence": quote, "system": system, "category": category, "side": None}
    checked = check_model_insights(report, _answer(rads=[item]), FINDINGS, DAY)
    assert len(checked.rads) == int(holds)


def test_a_range_is_kept_only_as_stated() -> None:
    report = _report("IMPRESSION: Nodule. Follow-up CT chest in 6-12 months.")
    quote = "Follow-up CT chest in 6-12 months."
    stated = _followup(quote, modality="CT", interval="P6M", interval_end="P12M", conditional=False)
    other = _followup(quote, modality="CT", interval="P3M", interval_end="P6M", conditional=False)
    checked = check_model_insights(report, _answer(followups=[stated, other]), FINDINGS, DAY)
    assert [(f.interval, f.due_start, f.due_end) for f in checked.followups] == [
        (("P6M", "P12M"), date(2025, 9, 10), date(2026, 3, 10)),
        ((), None, None),
    ]


def _span(start: int, end: int) -> Span:
    return Span(quote="x" * (end - start), start=start, end=end)


def test_the_rules_win_where_they_found_something() -> None:
    rules = Insights(
        followups=(
            FollowUp(
                kind="imaging",
                modality="CT",
                procedure_text="CT",
                interval=("P3M",),
                evidence=_span(100, 140),
            ),
        ),
        critical=(CriticalResult(finding="tension_pneumothorax", evidence=_span(10, 30)),),
        rads=(RadsCategory(system="Lung-RADS", category="4A", evidence=_span(60, 75)),),
    )
    model = Insights(
        followups=(
            FollowUp(kind="imaging", modality="MR", procedure_text="MR", evidence=_span(120, 150)),
            FollowUp(kind="biopsy", procedure_text="biopsy", evidence=_span(200, 230)),
        ),
        critical=(
            CriticalResult(finding="tension_pneumothorax", evidence=_span(10, 30)),
            CriticalResult(finding="pneumothorax", evidence=_span(18, 30)),  # superseded
            CriticalResult(finding="pneumoperitoneum", evidence=_span(40, 55)),
        ),
        rads=(
            RadsCategory(system="Lung-RADS", category="3", evidence=_span(65, 70)),  # overlaps
            RadsCategory(system="Lung-RADS", category="4A", evidence=_span(300, 310)),  # same
            RadsCategory(system="BI-RADS", category="2", evidence=_span(60, 75)),
        ),
    )
    merged = merge_insights(rules, model, FINDINGS)
    assert merged.followups == (rules.followups[0], model.followups[1])
    assert [c.finding for c in merged.critical] == ["tension_pneumothorax", "pneumoperitoneum"]
    assert merged.critical[0] is rules.critical[0]
    assert [(r.system, r.category) for r in merged.rads] == [("Lung-RADS", "4A"), ("BI-RADS", "2")]
    assert merge_insights(rules, Insights(), FINDINGS) == rules
    assert merge_insights(Insights(), model, FINDINGS).critical == model.critical


class SchemaEngine:
    """An engine stand-in that answers the insights schema with `insights` and any other
    schema (a template's) with `template`; records which schemas it was asked."""

    model_info = ModelInfo(name="fake", sha256="f" * 64)

    def __init__(self, insights: str, template: str = "{}") -> None:
        self.insights, self.template = insights, template
        self.asked: list[str] = []

    def generate(
        self, prompt: ChatPrompt, schema: dict[str, Any], *, max_tokens: int
    ) -> Generation:
        kind = "insights" if "followups" in schema.get("properties", {}) else "template"
        self.asked.append(kind)
        text = self.insights if kind == "insights" else self.template
        return Generation(text, 100, 100, 10, 0, 0.1)


def test_an_invalid_answer_leaves_the_rules_insights() -> None:
    report = _report(CHEST_CT)
    rules = extract_insights(report, InsightContext(report_date=DAY))
    for answer in ('{"followups": [', '{"followups": [], "critical": []}', "[]"):
        engine = SchemaEngine(answer)
        assert with_model_insights(report, rules, engine, FINDINGS, DAY) == rules


def test_the_use_case_asks_the_engine_for_insights_only_with_a_model_stage() -> None:
    # RADBRIDGE_INSIGHTS_MODEL false (the default with the bundled model): the engine is not asked
    report = _report(NOTE, "note-0")
    engine = SchemaEngine(json.dumps({"followups": [], "critical": [], "rads": []}))
    process_reports([report], [], Settings(stage="llm"), lambda e=engine: e)  # type: ignore[misc]
    assert engine.asked == []
    text = NOTE + "\nProstate: the PI-RADS assessment is 4."  # the rules do not read this one
    report = _report(text, "note-1")
    answer = json.dumps(
        {
            "followups": [],
            "critical": [
                {"evidence": "Free intraperitoneal air", "finding": "pneumoperitoneum"},
                {"evidence": "invented words", "finding": "aortic_dissection"},
            ],
            "rads": [
                {"evidence": "PI-RADS assessment is 4", "system": "PI-RADS", "category": "4",
                 "side": None},
            ],
        }
    )  # fmt: skip
    for stage in ("rules", "llm", "hybrid"):
        engine = SchemaEngine(answer)
        # no templates: the report's own Bundle (report_only) with its insights
        settings = Settings(stage=stage, insights_model=True)  # as with a hospital's model
        outcome = process_reports([report], [], settings, lambda e=engine: e)  # type: ignore[misc]
        [result] = outcome.results
        assert result.insights is not None and result.bundle is not None
        found = [c.finding for c in result.insights.critical]
        rads = [(r.system, r.category) for r in result.insights.rads]
        assert found.count("pneumoperitoneum") == 1 and "aortic_dissection" not in found
        if stage == "rules":
            assert engine.asked == [] and ("PI-RADS", "4") not in rads
        else:
            assert engine.asked == ["insights"] and ("PI-RADS", "4") in rads
        kinds = [e["resource"]["resourceType"] for e in result.bundle["entry"]]
        assert kinds.count("Flag") == len(found)


def test_the_schema_names_the_critical_list_and_the_rads_systems() -> None:
    schema = insights_schema(FINDINGS)
    critical = schema["properties"]["critical"]["items"]["properties"]["finding"]["enum"]
    assert critical == [f.id for f in FINDINGS]
    rads = schema["properties"]["rads"]["items"]["properties"]
    assert "Lung-RADS" in rads["system"]["enum"] and "4A" in rads["category"]["enum"]
    assert next(iter(schema["properties"]["followups"]["items"]["properties"])) == "evidence"


@pytest.mark.llm
def test_the_shipped_model_answers_the_schema_and_only_quotes_stand() -> None:
    from workers.engine_registry import get_engine
    from workers.insights.llm import model_insights

    settings = Settings(stage="llm")
    report = _report(ABDOMEN, "abd")
    found = model_insights(report, get_engine(settings), FINDINGS, DAY, max_tokens=768)
    for item in (*found.followups, *found.critical, *found.rads):
        start, end = item.evidence.start, item.evidence.end
        assert report.text[start:end] == item.evidence.quote
    rules = extract_insights(report, InsightContext(report_date=DAY))
    merged = merge_insights(rules, found, FINDINGS)
    assert set(rules.followups) <= set(merged.followups)  # the rules' finds stay
    assert set(rules.critical) <= set(merged.critical)
    assert set(rules.rads) <= set(merged.rads)


def _dev_rows(tmp_path: Path, count: int = 6) -> Path:
    source = Path(__file__).parent / "fixtures" / "labelled" / "insights.jsonl"
    rows = [line for line in source.read_text("utf-8").splitlines() if '"split": "dev"' in line]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(rows[:count]) + "\n", "utf-8")
    return path


def test_eval_of_the_model_path_scores_the_merge_and_the_model_alone(tmp_path: Path) -> None:
    from conformance.insights_eval import insights_html, run_insights_evaluation

    path = _dev_rows(tmp_path)
    rules, _ = run_insights_evaluation(path, None, resamples=20)
    empty = json.dumps({"followups": [], "critical": [], "rads": []})
    for answer, invalid in ((empty, 0), ("{", 6)):
        result, tables = run_insights_evaluation(
            path, None, resamples=20, stage="llm", engine=lambda a=answer: SchemaEngine(a)
        )
        assert result["stage"] == "llm" and len(tables) == 2
        assert result["model"]["invalid_answers"] == invalid
        # the model found nothing: the merge is the rules' result, the model alone scores 0 TP
        for kind, scores in result["kinds"].items():
            assert (scores["tp"], scores["fp"]) == (
                rules["kinds"][kind]["tp"],
                rules["kinds"][kind]["fp"],
            )
        assert set(result["model_only"]) <= {"followups", "critical", "rads"}
        assert all(m["tp"] == 0 and m["fp"] == 0 for m in result["model_only"].values())
        assert "The model alone" in insights_html(result)
    with pytest.raises(EvaluationError, match="needs a model engine"):
        run_insights_evaluation(path, None, resamples=20, stage="llm")


def test_eval_refuses_stage_all_on_an_insights_set(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    path = _dev_rows(tmp_path, 2)
    answer = CliRunner().invoke(
        app, ["eval", str(path), "--stage", "all", "--out", str(tmp_path / "out")]
    )
    assert answer.exit_code == 2 and "--stage all" in answer.output
