"""Stage 1 (workers/rules_stage.py) on the hand-written fixtures, and the hybrid merge rules.

The fixture expectations (tests/fixtures/hl7v2/*.expected.json) were written before the trigger
lists, but by the same hand: treat the agreement below as a smoke test, not as accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings.framing import split_frames
from mappings.hl7.oru_in import parse_oru
from mappings.report import Evidence, FindingStatus, FindingValue, Report, Stage
from mappings.template import get_template
from workers.lexicon_text import clauses
from workers.rules_stage import extract_rules
from workers.stages import merge_values

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"


def report(text: str) -> Report:
    return Report(source_format="hl7v2", report_id="r", text=text)


@pytest.mark.parametrize(
    ("text", "variable", "status"),
    [
        ("Small right pleural effusion.", "pleural_effusion", "present"),
        ("No pleural effusion.", "pleural_effusion", "absent"),
        ("Pneumothorax is absent.", "pneumothorax", "absent"),
        ("Possible small left pleural effusion.", "pleural_effusion", "uncertain"),
        ("Geen pleuravocht.", "pleural_effusion", "absent"),
        ("Kein Pleuraerguss, aber Pneumothorax links.", "pneumothorax", "present"),
        ("Kein Pleuraerguss, aber Pneumothorax links.", "pleural_effusion", "absent"),
        ("Pneumothorax nicht auszuschließen.", "pneumothorax", "uncertain"),
        ("No effusion; mild cardiomegaly.", "cardiomegaly", "present"),
        ("The heart is normal.", "cardiomegaly", "absent"),  # a normal-size statement
    ],
)
def test_assertions(text: str, variable: str, status: str) -> None:
    extraction = extract_rules(report(text), get_template("chest_findings"))
    value = extraction.value_of(variable)
    assert value is not None and value.status.value == status


def test_clauses_keep_abbreviations_together() -> None:
    text = "Pneumothorax links, ca. 2 cm Mantelsaum. Kein Erguss"
    assert [text[a:b] for a, b in clauses(text)] == [
        "Pneumothorax links, ca. 2 cm Mantelsaum",
        "Kein Erguss",
    ]


def test_evidence_is_a_verified_clause_with_locations() -> None:
    text = "FINDINGS:\nConsolidation in the right lower lobe."
    value = extract_rules(report(text), get_template("chest_findings")).value_of("consolidation")
    assert value is not None and value.evidence is not None and value.evidence.verified
    assert (
        text[value.evidence.start : value.evidence.end] == "Consolidation in the right lower lobe"
    )  # type: ignore[misc]
    assert value.locations == ("right_lower_lobe",)


@pytest.mark.parametrize(
    "name", ["chest_ct", "chest_xray", "dutch_report", "german_report", "multi_obr"]
)
def test_rules_agree_with_hand_labels_on_stated_findings(name: str) -> None:
    template = get_template("chest_findings")
    expected = json.loads((HL7_DIR / f"{name}.expected.json").read_text("utf-8"))["reports"]
    (frame,) = split_frames((HL7_DIR / f"{name}.hl7").read_bytes())
    agreement = total = 0
    for parsed in parse_oru(frame.payload).reports:
        extraction = extract_rules(parsed, template)
        for variable_id, gold in expected[parsed.report_id].items():
            value = extraction.value_of(variable_id)
            assert value is not None
            total += 1
            agreement += value.status.value == gold["status"]
    assert agreement / total >= 0.75, f"{agreement}/{total}"


def _value(
    status: FindingStatus, *, verified: bool, stage: Stage, flags: tuple[str, ...] = ()
) -> FindingValue:
    evidence = (
        Evidence(quote="q", start=0, end=1)
        if verified
        else (Evidence(quote="q") if status is not FindingStatus.NOT_MENTIONED else None)
    )
    return FindingValue(
        variable_id="v", status=status, evidence=evidence, confidence=0.8, stage=stage, flags=flags
    )


def test_merge_rules() -> None:
    present_rules = _value(FindingStatus.PRESENT, verified=True, stage=Stage.RULES)
    absent_llm = _value(FindingStatus.ABSENT, verified=True, stage=Stage.LLM)
    nothing = FindingValue(variable_id="v", status=FindingStatus.NOT_MENTIONED, stage=Stage.LLM)
    agreed = merge_values(
        present_rules, _value(FindingStatus.PRESENT, verified=True, stage=Stage.LLM)
    )
    assert (agreed.status, agreed.stage, agreed.flags, agreed.confidence) == (
        FindingStatus.PRESENT,
        Stage.HYBRID,
        (),
        0.8,
    )
    disagree = merge_values(present_rules, absent_llm)
    assert (disagree.status, disagree.flags, disagree.confidence) == (
        FindingStatus.PRESENT,
        ("stages_disagree",),
        0.4,
    )
    rules_only = merge_values(present_rules, nothing)
    assert (rules_only.status, rules_only.flags) == (FindingStatus.PRESENT, ())
    unverified = _value(
        FindingStatus.UNCERTAIN, verified=False, stage=Stage.LLM, flags=("evidence_not_found",)
    )
    assert merge_values(present_rules, unverified).flags == ("llm_unverified",)
    kept = merge_values(
        FindingValue(variable_id="v", status=FindingStatus.NOT_MENTIONED, stage=Stage.RULES),
        unverified,
    )
    assert kept.flags == ("evidence_not_found",) and kept.stage is Stage.HYBRID
