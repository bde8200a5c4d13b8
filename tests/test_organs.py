"""Organ qualifiers (issue 10): a finding of another organ never becomes a lung finding.

Driven by the template's `organ_qualifiers` (`workers.organs`); checked on the chest CT
template with wording the labelled set does not contain.
"""

from __future__ import annotations

import pytest

from mappings.report import Report
from mappings.template import Template, TemplateError, load_template, parse_template
from tests.labelled import template_path
from workers.rules_stage import extract_rules


@pytest.fixture(scope="module")
def chest_ct() -> Template:
    return load_template(template_path("chest_ct"))


def _status(template: Template, text: str, variable_id: str, language: str = "en") -> str:
    report = Report(source_format="fhir", report_id="r", text=text, language=language)
    value = extract_rules(report, template).value_of(variable_id)
    assert value is not None
    return value.status.value


@pytest.mark.parametrize(
    ("text", "variable_id"),
    [
        ("Findings: A 14 mm hypoechoic right thyroid nodule.", "nodule"),
        ("Findings: Stable 2 cm left adrenal nodule, likely adenoma.", "nodule"),
        ("Findings: There is a 6 mm nodule in the left lobe of the thyroid gland.", "nodule"),
        ("Findings: Incidental 8 mm nodule of the right kidney.", "nodule"),
        ("Findings: No thyroid or adrenal nodules.", "nodule"),
        ("Upper abdomen: 1.5 cm hypodense hepatic mass.", "mass"),
        ("Findings: Large anterior mediastinal mass, likely lymphoma.", "mass"),
        ("Findings: No chest wall mass.", "mass"),
        ("Findings: Soft tissue mass in the left breast.", "mass"),
        ("Findings: Extensive subcutaneous emphysema in the chest wall.", "emphysema"),
        ("Findings: Calcified granulomas in the spleen.", "calcified_granuloma"),
        ("Thyroid: multiple small nodules.", "nodule"),
        ("Findings:\n갑상선 우엽에 9 mm 결절 있음.", "nodule"),
        ("Findings:\n간에 다발성 저음영 결절 있음.", "nodule"),
        ("Findings:\n우측 부신 종괴 있음.", "mass"),
        ("Findings:\n흉벽 종괴 없음.", "mass"),
    ],
)
def test_a_finding_of_another_organ_is_not_a_lung_finding(
    chest_ct: Template, text: str, variable_id: str
) -> None:
    language = "ko" if any("\uac00" <= c <= "\ud7a3" for c in text) else "en"
    assert _status(chest_ct, text, variable_id, language) == "not_mentioned"


@pytest.mark.parametrize(
    ("text", "variable_id", "expected"),
    [
        ("Findings: No pulmonary or adrenal nodules.", "nodule", "absent"),
        ("Findings: Right upper lobe nodule and a left thyroid nodule.", "nodule", "present"),
        ("Findings: 2 cm mass in the RUL abutting the mediastinum.", "mass", "present"),
        ("Findings: No lung mass. Right adrenal mass.", "mass", "absent"),
        ("Findings: 5 mm nodule in the right lower lobe near the liver dome.", "nodule", "present"),
        ("Findings:\n우상엽에 8 mm 결절 있음.", "nodule", "present"),
        ("Findings: Mediastinal lymphadenopathy.", "lymphadenopathy", "present"),
    ],
)
def test_a_lung_finding_stays_one(
    chest_ct: Template, text: str, variable_id: str, expected: str
) -> None:
    language = "ko" if any("\uac00" <= c <= "\ud7a3" for c in text) else "en"
    assert _status(chest_ct, text, variable_id, language) == expected


def test_the_mechanism_is_off_without_the_yaml_key(chest_ct: Template) -> None:
    without = chest_ct.model_copy(update={"organ_qualifiers": None})
    text = "Findings: A 14 mm right thyroid nodule."
    assert _status(without, text, "nodule") == "present"
    assert _status(chest_ct, text, "nodule") == "not_mentioned"


def test_an_unknown_variable_in_organ_qualifiers_is_rejected() -> None:
    text = """
id: t
version: "1"
title: t
languages: [en]
organ_qualifiers: {variables: [nodul], other: {en: [thyroid]}}
variables:
  - {id: nodule, label: Nodule, type: presence, definition: A rounded lung opacity., uncoded_reason: test,
     synonyms: {en: [nodule]}}
"""
    with pytest.raises(TemplateError, match=r"organ_qualifiers\.variables"):
        parse_template(text, "t.yaml")
