"""Stage 1 on chest X-ray phrasing, one test per class of error (issue 10), not per example.

Classes: normal-size statements and graded heart size (`states`), excluded phrases (CheXpert's
unmention lists), coordination scope, the labels' hedge convention (`probable_existence`),
mimics that explain an opacity away, stems, and bad input that must invent nothing.
"""

from __future__ import annotations

import pytest

from mappings.report import Report
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules


def _status(text: str, variable: str) -> str:
    report = Report(
        source_format="fhir", report_id="r", language="en", text=text, sections=find_sections(text)
    )
    value = extract_rules(report, get_template("chest_findings")).value_of(variable)
    assert value is not None
    return value.status.value


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Heart size normal. Lungs are clear.", "absent"),
        ("The heart is normal in size.", "absent"),
        ("Normal heart size and mediastinal contours.", "absent"),
        ("The heart size is at the upper limits of normal.", "absent"),
        ("The cardiac silhouette is within normal limits.", "absent"),
        ("The heart is not enlarged.", "absent"),
        ("Borderline heart size.", "present"),
        ("The cardiac silhouette is borderline enlarged.", "present"),
        ("Heart size is mildly enlarged.", "present"),
        ("The heart is large.", "present"),
        ("Marked interval increase in heart size.", "present"),
        ("Moderate enlargement of the cardiac silhouette.", "present"),
        ("Stable mild cardiomegaly.", "present"),
        ("Heart size possibly enlarged.", "uncertain"),
        # a negation elsewhere in the clause does not turn a normal statement into a finding
        ("There is no pleural effusion or The heart is normal.", "absent"),
        (
            "No pneumothorax or pleural effusion.Heart size and vascularity are within normal limits.",
            "absent",
        ),
        # a subject without a state says nothing about the size
        ("The heart and lungs have not changed in the interval.", "not_mentioned"),
    ],
)
def test_heart_size_statements(text: str, status: str) -> None:
    assert _status(text, "cardiomegaly") == status


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("The mediastinum is within normal limits.", "absent"),
        ("Mediastinal contours are unremarkable.", "absent"),
        ("The mediastinum is widened.", "present"),
        ("Widened mediastinum.", "present"),
    ],
)
def test_mediastinum_statements(text: str, status: str) -> None:
    assert _status(text, "enlarged_cardiomediastinum") == status


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ("Small pericardial effusion. Lungs clear.", "pleural_effusion"),
        ("Soft tissue edema of the chest wall.", "pulmonary_oedema"),
        ("Subcutaneous emphysema in the left chest wall.", "emphysema"),
        ("Compression collapse of the T8 vertebral body.", "atelectasis"),
        ("Known cystic fibrosis.", "fibrosis"),
        ("Left breast mass, correlate with mammography.", "lung_mass"),
    ],
)
def test_excluded_phrases_name_something_else(text: str, variable: str) -> None:
    assert _status(text, variable) == "not_mentioned"


@pytest.mark.parametrize(
    "text",
    [
        "No effusion or pneumothorax.",
        "Without consolidation, effusion, or pneumothorax.",
        "There is no focal airspace consolidation, pleural effusion or pneumothorax.",
    ],
)
def test_negation_covers_a_coordinated_list(text: str) -> None:
    assert _status(text, "pneumothorax") == "absent"
    assert _status(text, "pleural_effusion") == "absent"


@pytest.mark.parametrize(
    ("text", "variable", "status"),
    [
        # strong hedges count as present (the Open-i/NegBio and CheXpert convention) ...
        ("Probable small bilateral pleural effusions.", "pleural_effusion", "present"),
        ("Opacities most suggestive of pulmonary edema.", "pulmonary_oedema", "present"),
        ("Left basilar atelectasis versus infiltrate.", "infiltration", "present"),
        # ... weak ones stay uncertain
        ("Possible small right pneumothorax.", "pneumothorax", "uncertain"),
        ("Opacity may represent pneumonia.", "pneumonia", "uncertain"),
        ("Hyperinflated lungs suggesting emphysema.", "emphysema", "uncertain"),
        ("Pneumonia cannot be excluded.", "pneumonia", "uncertain"),
        ("Question small bilateral pleural effusions.", "pleural_effusion", "uncertain"),
        ("Bony overlap could obscure a small pulmonary nodule.", "lung_nodule", "uncertain"),
    ],
)
def test_hedge_convention(text: str, variable: str, status: str) -> None:
    assert _status(text, variable) == status


def test_probable_is_uncertain_where_the_template_keeps_the_default() -> None:
    assert get_template("chest_findings").probable_existence == "present"
    assert get_template("brain_mri_memory").probable_existence == "uncertain"


@pytest.mark.parametrize(
    "text",
    [
        "A small nodule in the right base likely represents a nipple shadow.",
        "Nodule over the left lower zone, nipple shadow.",
        "The previously seen nodule is not definitely seen on today's study.",
    ],
)
def test_an_opacity_explained_away_is_no_finding(text: str) -> None:
    assert _status(text, "lung_nodule") == "absent"


def test_stems_match_word_forms() -> None:
    assert _status("Mild atelectatic change at the left base.", "atelectasis") == "present"
    assert _status("Patchy consolidative opacity.", "consolidation") == "present"


@pytest.mark.parametrize(
    "text",
    [
        "XXXX XXXX XXXX.",
        "Comparison: XXXX. Indication: XXXX.",
        "PA AND LATERAL VIEWS OF THE CHEST.",
        "see prior",
        "",
        "1.",
    ],
)
def test_bad_input_invents_nothing(text: str) -> None:
    report = Report(source_format="fhir", report_id="r", language="en", text=text)
    extraction = extract_rules(report, get_template("chest_findings"))
    assert all(value.status.value == "not_mentioned" for value in extraction.values)


@pytest.mark.parametrize(
    ("text", "variable", "status"),
    [
        ("NO PNEUMOTHORAX. MILD CARDIOMEGALY.", "pneumothorax", "absent"),
        ("NO PNEUMOTHORAX. MILD CARDIOMEGALY.", "cardiomegaly", "present"),
        ("Impression only: small left pleural effusion.", "pleural_effusion", "present"),
        ("Right XXXX effusion. No XXXX pneumothorax.", "pneumothorax", "absent"),
    ],
)
def test_capitals_placeholders_and_missing_headings(text: str, variable: str, status: str) -> None:
    assert _status(text, variable) == status


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Thyroid nodule, correlate with ultrasound.", "not_mentioned"),
        ("No adrenal or renal nodules.", "not_mentioned"),
        ("Mediastinal calcifications and dense nodule in the lingula.", "present"),
        ("8 mm nodule projecting over the right 6th rib.", "present"),
        ("No pulmonary or thyroid nodules.", "absent"),
    ],
)
def test_a_nodule_of_another_organ_is_no_lung_nodule(text: str, status: str) -> None:
    assert _status(text, "lung_nodule") == status
