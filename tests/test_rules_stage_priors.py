"""A template's score/category variables (enum, ordinal) do not read a prior exam's value as
this exam's: the first line of a history/comparison section, or a RADS category the insights
step reads as a prior result (`workers.insights.rads.prior_spans`)."""

from __future__ import annotations

import pytest

from mappings.inbound import report_from_record
from mappings.report import Report, ScalarValue
from mappings.template import Template, load_builtin_templates
from workers.rules_stage import extract_rules


def _report(text: str) -> Report:
    return report_from_record({"id": "r", "text": text, "language": "en"}, default_language="en")


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    return load_builtin_templates()


def _value(templates: dict[str, Template], template_id: str, variable: str, text: str) -> object:
    extraction = extract_rules(_report(text), templates[template_id])
    (value,) = [v for v in extraction.values if v.variable_id == variable]
    return value.value


@pytest.mark.parametrize(
    ("template_id", "variable", "text", "expected"),
    [
        # a prior category in a sentence of the findings, no heading: the insights' prior rule
        (  # the highest level stated is a prior one: not this exam's
            "thyroid_us",
            "tirads_highest",
            "US THYROID\nFINDINGS: Right lobe nodule, previously TI-RADS 4, now 8 mm spongiform, "
            "TI-RADS 1.",
            1,
        ),
        (
            "breast",
            "birads",
            "MAMMOGRAM\nCompared with the prior BI-RADS 3 exam, stable. Overall BI-RADS 2.",
            "birads_2",
        ),
        # the prior result closed ("now"): this exam's category counts
        (
            "thyroid_us",
            "tirads_highest",
            "US THYROID\nThe nodule, previously TI-RADS 3, is now TI-RADS 4.",
            4,
        ),
        # a current category after the comparison section's first line still counts
        (
            "breast",
            "birads",
            "MAMMOGRAM\nCOMPARISON: 2023.\nNo suspicious mass. BI-RADS 1.",
            "birads_1",
        ),
    ],
)
def test_a_prior_score_is_not_this_exams(
    templates: dict[str, Template],
    template_id: str,
    variable: str,
    text: str,
    expected: ScalarValue,
) -> None:
    assert _value(templates, template_id, variable, text) == expected
