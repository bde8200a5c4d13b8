"""Stage 1 scope rules that protect the verdict: the clinical question and family history.

A mention in the history/indication section is the question asked ("r/o PE"), not a finding of
this examination: it never counts. A mention about someone else (ConText other experiencer) does
not vote at all."""

from __future__ import annotations

import pytest

from mappings.report import Report
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules


def _status(text: str, variable: str) -> str:
    report = Report(source_format="hl7v2", report_id="r", text=text, sections=find_sections(text))
    value = extract_rules(report, get_template("chest_findings")).value_of(variable)
    assert value is not None
    return value.status.value


@pytest.mark.parametrize(
    ("text", "variable", "status"),
    [
        # the impression answers the question in the indication
        (
            "Indication: rule out pneumothorax.\nFindings: Lungs are clear.\n"
            "Impression: No pneumothorax.",
            "pneumothorax",
            "absent",
        ),
        (
            "Clinical history: possible pleural effusion.\nImpression: Small left pleural effusion.",
            "pleural_effusion",
            "present",
        ),
        # the question is not a finding of this examination, even when nothing else names it
        (
            "Indication: possible pneumothorax.\nImpression: Normal chest radiograph.",
            "pneumothorax",
            "not_mentioned",
        ),
        (
            "INDICATION: XXXX-year-old with edema and dyspnea\nFINDINGS: Lungs are clear.",
            "pulmonary_oedema",
            "not_mentioned",
        ),
        (
            "INDICATION: history of lung nodules\nIMPRESSION: No acute disease.",
            "lung_nodule",
            "not_mentioned",
        ),
    ],
)
def test_history_mentions_never_count(text: str, variable: str, status: str) -> None:
    assert _status(text, variable) == status


def test_family_history_does_not_vote() -> None:
    text = "Findings: Mother had a pneumothorax. Lungs are clear, no effusion."
    assert _status(text, "pneumothorax") == "not_mentioned"
    assert _status(text, "pleural_effusion") == "absent"


def test_number_followed_by_another_unit_is_not_this_variable() -> None:
    text = "Quantitative Analyse: LV mass index 102 g/m². LVEF 58 %."
    report = Report(source_format="hl7v2", report_id="r", text=text, sections=find_sections(text))
    values = extract_rules(report, get_template("cardiac_mri"))
    lv_mass, lv_mass_index, lvef = (
        values.value_of("lv_mass"),
        values.value_of("lv_mass_index"),
        values.value_of("lvef"),
    )
    assert lv_mass is not None and lv_mass.status.value == "not_mentioned"
    assert lv_mass_index is not None and lv_mass_index.value == 102
    assert lvef is not None and lvef.value == 58
