"""Lobe attribution on chest CT (issue 10): every common phrasing of where a finding is.

Adjective order, "in the", abbreviations, bases and apices, a side right before the finding, a
lobe named in the next sentence or in the impression, several sites of one finding, the lobe
winning over its lung, Korean-English; and the `part_of` key that drives it.
"""

from __future__ import annotations

import pytest

from conformance.labels import predicted_pairs
from mappings.report import Report
from mappings.template import Template, TemplateError, load_template, parse_template
from tests.labelled import template_path
from workers.rules_stage import extract_rules


@pytest.fixture(scope="module")
def chest_ct() -> Template:
    return load_template(template_path("chest_ct"))


def _sites(template: Template, text: str, variable_id: str) -> set[str | None]:
    language = "ko" if any("\uac00" <= c <= "\ud7a3" for c in text) else "en"
    report = Report(source_format="fhir", report_id="r", text=text, language=language)
    pairs = predicted_pairs(extract_rules(report, template), template)
    return {site for variable, site in pairs if variable == variable_id}


@pytest.mark.parametrize(
    ("text", "variable_id", "expected"),
    [
        ("Findings: A small right upper lobe nodule, 5 mm.", "nodule", {"rul"}),
        ("Findings: 5 mm nodule in the left lower lobe.", "nodule", {"lll"}),
        ("Findings: 5 mm LUL nodule.", "nodule", {"lul"}),
        ("Findings: Nodule, RML, 4 mm.", "nodule", {"rml"}),
        ("Findings: Bibasilar atelectasis.", "atelectasis", {"rll", "lll"}),
        ("Findings: Subsegmental atelectasis at the left base.", "atelectasis", {"lll"}),
        ("Findings: Dependent atelectasis at the lung bases.", "atelectasis", {"rll", "lll"}),
        ("Findings: Scarring and emphysema at the right apex.", "emphysema", {"rul"}),
        ("Findings: Emphysema, upper lobe predominant.", "emphysema", {"rul", "lul"}),
        ("Findings: Ground-glass opacity in the upper lobe of the left lung.", "ggo", {"lul"}),
        ("Findings: Small right effusion.", "pleural_effusion", {"right_lung"}),
        ("Findings: Tiny left apical pneumothorax.", "pneumothorax", {"left_lung"}),
        ("Findings: Pneumothorax with collapse of the RLL.", "pneumothorax", {"right_lung"}),
        ("Findings: Left pleural effusion with atelectasis of the left lower lobe.",
         "atelectasis", {"lll"}),
        ("Findings: A 9 mm spiculated nodule. It is located in the right middle lobe.",
         "nodule", {"rml"}),
        ("Findings: Part-solid nodule (image 45).\nImpression: Part-solid LLL nodule.",
         "nodule", {"lll"}),
        ("Findings: 4 mm RUL nodule. Another 3 mm nodule at the left base.",
         "nodule", {"rul", "lll"}),
        ("Findings: No nodule in the right lung. 6 mm nodule in the LUL.", "nodule", {"lul"}),
        ("Findings:\n좌상엽에 6 mm 결절 있음.", "nodule", {"lul"}),
        ("Findings:\n양측 하엽에 무기폐.", "atelectasis", {"rll", "lll"}),
        ("Findings:\n우측 기흉 소량 있음.", "pneumothorax", {"right_lung"}),
    ],
)  # fmt: skip
def test_the_lobe_of_a_present_finding(
    chest_ct: Template, text: str, variable_id: str, expected: set[str]
) -> None:
    assert _sites(chest_ct, text, variable_id) == expected


def test_a_modifier_needs_to_stand_right_before_the_finding(chest_ct: Template) -> None:
    text = "Findings: Small effusion. The right hilum is normal."
    assert _sites(chest_ct, text, "pleural_effusion") == {None}


def test_a_history_mention_lends_no_site(chest_ct: Template) -> None:
    text = "History: RUL nodule on outside CT.\nFindings: 5 mm nodule, unchanged."
    assert _sites(chest_ct, text, "nodule") == {None}


def test_part_of_must_name_a_declared_location() -> None:
    text = """
id: t
version: "1"
title: t
languages: [en]
locations:
  - {id: rul, label: RUL, part_of: right_lungs, synonyms: {en: [RUL]},
     code: {system: "http://snomed.info/sct", code: "42400003",
            display: "Structure of upper lobe of right lung (body structure)", source: x}}
variables:
  - {id: nodule, label: Nodule, type: presence, definition: A rounded lung opacity., uncoded_reason: test,
     synonyms: {en: [nodule]}, locations: [rul]}
"""
    with pytest.raises(TemplateError, match="part_of"):
        parse_template(text, "t.yaml")
