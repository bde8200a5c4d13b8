"""Mismatches with the order and the patient (issue 20 item 6, workers/insights/mismatch.py), on
sentences written for these tests (not taken from the labelled sets); the order and the patient's
sex and birth date as HL7v2 (OBR-4, PID-7, PID-8) and FHIR (DiagnosticReport.code, Patient) carry
them; and the labelled mismatches set's shape."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mappings.fhir_in import reports_from_fhir
from mappings.hl7.oru_in import parse_oru
from mappings.insights.model import Mismatch
from mappings.report import Report
from workers.insights.extract import InsightContext, extract_insights
from workers.insights.mismatch import age_at, order_side, regions_of

DAY = date(2025, 6, 30)
SET = Path(__file__).parent / "fixtures" / "labelled" / "mismatches.jsonl"
KINDS = ("laterality", "sex", "age", "exam_type")


def _mismatches(
    text: str,
    *,
    exam: str | None = None,
    sex: str | None = None,
    birth: date | None = None,
    language: str = "en",
) -> dict[str, Mismatch]:
    report = Report(source_format="fhir", report_id="t", text=text, language=language)
    context = InsightContext(report_date=DAY, exam=exam, patient_sex=sex, birth_date=birth)
    found = extract_insights(report, context).mismatches
    assert len({m.kind for m in found}) == len(found)  # one per kind
    for mismatch in found:
        assert text[mismatch.evidence.start : mismatch.evidence.end] == mismatch.evidence.quote
    return {m.kind: m for m in found}


# --- laterality ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exam", "text", "language", "quote"),
    [
        ("XR ELBOW LEFT 2 VIEWS", "RIGHT ELBOW, 2 VIEWS\nFINDINGS: Joint effusion.", "en",
         "RIGHT ELBOW, 2 VIEWS"),
        ("US KNEE RT", "FINDINGS: Baker cyst in the left popliteal fossa of the left knee.", "en",
         "left popliteal fossa of the left knee"),
        ("X-ENKEL RECHTS", "Bevindingen: fractuur van de laterale malleolus links.", "nl",
         "malleolus links"),
        ("RÖ HAND LI", "Befund: Fraktur des Os metacarpale V. Rechte Hand sonst unauffällig.",
         "de", "Rechte Hand"),
    ],
)  # fmt: skip
def test_the_other_side_of_a_paired_part_is_a_laterality_mismatch(
    exam: str, text: str, language: str, quote: str
) -> None:
    found = _mismatches(text, exam=exam, language=language)
    assert list(found) == ["laterality"]
    assert found["laterality"].evidence.quote == quote
    assert found["laterality"].found != order_side(exam)


@pytest.mark.parametrize(
    ("exam", "text"),
    [
        # the ordered side named too (a comparison with the other knee)
        ("XR KNEE LEFT", "LEFT KNEE\nComparison: right knee of 2022.\nNo effusion."),
        # negated mention of the other side
        ("XR HIP RIGHT", "PELVIS\nFINDINGS: No left-sided hip effusion. No fracture."),
        ("X-KNIE RECHTS", "Bevindingen: geen hydrops in de linker knie."),
        # no paired body part: a lobe on a chest exam
        ("CT CHEST LEFT", "FINDINGS: 5 mm nodule in the right lower lobe."),
        # an order without a side, a bilateral order, an order that names both sides
        ("XR KNEE 2 VIEWS", "RIGHT KNEE\nFINDINGS: Effusion."),
        ("MG SCREENING BILATERAL", "Benign calcifications in the right breast."),
        ("MAMMOGRAFIE BDZ", "Rechter mamma: geen afwijkingen."),
        ("XR HANDS LEFT AND RIGHT", "Erosions of the right hand."),
        (None, "Right knee effusion."),
        # "re" in "re-demonstrated" is no side
        ("XR SHOULDER LEFT", "Findings: re-demonstrated calcific tendinitis of the shoulder."),
    ],
)
def test_no_laterality_mismatch(exam: str | None, text: str) -> None:
    assert "laterality" not in _mismatches(text, exam=exam)


def test_order_side() -> None:
    assert order_side("XR KNEE LEFT 3 VIEWS") == "left"
    assert order_side("RÖ SCHULTER RE") == "right"
    assert order_side("X-HEUP LINKS") == "left"
    assert order_side("MG BILATERAL") is None
    assert order_side("XR KNEES LEFT AND RIGHT") is None
    assert order_side("CT CHEST") is None
    assert order_side(None) is None


# --- sex -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sex", "text", "language", "organ"),
    [
        ("male", "FINDINGS: The ovaries are normal. Bladder normal.", "en", "ovaries"),
        ("male", "Bevindingen: baarmoeder normaal van grootte.", "nl", "baarmoeder"),
        ("female", "FINDINGS: Seminal vesicles symmetric.", "en", "seminal vesicles"),
        ("female", "Befund: Prostata 40 ml, glatt begrenzt.", "de", "prostata"),
        ("female", "Bevindingen: beide testes normaal.", "nl", "testes"),
    ],
)
def test_organs_of_the_other_sex_are_a_sex_mismatch(
    sex: str, text: str, language: str, organ: str
) -> None:
    found = _mismatches(text, sex=sex, language=language)
    assert list(found) == ["sex"]
    assert (found["sex"].expected, found["sex"].found) == (sex, organ)


@pytest.mark.parametrize(
    ("sex", "text"),
    [
        ("female", "FINDINGS: Uterus and ovaries unremarkable."),
        ("male", "FINDINGS: Prostate 30 ml."),
        ("other", "FINDINGS: Uterus normal. Prostate not seen."),
        ("unknown", "FINDINGS: Uterus normal."),
        (None, "FINDINGS: Uterus normal."),
        ("male", "FINDINGS: No uterus identified."),
        ("female", "Befund: Z.n. Prostatektomie, Prostataloge unauffällig."),
        ("male", "FINDINGS: Uterus absent, status post hysterectomy."),
    ],
)
def test_no_sex_mismatch(sex: str | None, text: str) -> None:
    assert "sex" not in _mismatches(text, sex=sex)


# --- age -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "stated"),
    [
        ("History: 45-year-old woman with cough.", "en", 45),
        ("Clinical: 30 yo male, trauma.", "en", 30),
        ("Klinische gegevens: 44-jarige patiënte.", "nl", 44),
        ("Klinische gegevens: man van 50 jaar, dyspneu.", "nl", 50),
        ("Klinische Angaben: 51-jähriger Patient.", "de", 51),
        ("Klinische Angaben: Pat., 55 J., Husten.", "de", 55),
    ],
)
def test_a_stated_age_far_from_the_birth_date_is_an_age_mismatch(
    text: str, language: str, stated: int
) -> None:
    birth = date(1985, 7, 1)  # 39 on DAY
    found = _mismatches(text, birth=birth, language=language)
    assert list(found) == ["age"]
    assert found["age"].found == f"{stated} years"
    assert found["age"].expected.startswith("39 years")


@pytest.mark.parametrize(
    ("text", "birth"),
    [
        ("History: 41-year-old man.", date(1985, 7, 1)),  # 2 years off: not more than 2
        ("History: 37-year-old man.", date(1985, 7, 1)),
        ("History: 70-year-old man.", None),  # no birth date
        ("History: 70-year-old man.", date(2026, 1, 1)),  # born after the report
        ("Klinische gegevens: sinds 10 jaar klachten.", date(1950, 1, 1)),  # a duration
        ("Klinische Angaben: Hüft-TEP vor 15 Jahren.", date(1950, 1, 1)),
        ("History: old fracture at age 30; a 12-year-old implant.", date(1950, 1, 1)),
    ],
)
def test_no_age_mismatch(text: str, birth: date | None) -> None:
    assert "age" not in _mismatches(text, birth=birth)


def test_age_counts_full_years() -> None:
    assert age_at(date(1985, 7, 1), date(2025, 6, 30)) == 39
    assert age_at(date(1985, 7, 1), date(2025, 7, 1)) == 40
    assert age_at(date(2000, 2, 29), date(2025, 2, 28)) == 24


# --- exam type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exam", "text", "language"),
    [
        ("CT CHEST W CONTRAST", "CT ABDOMEN WITH CONTRAST\nFINDINGS: Normal liver.", "en"),
        ("ECHO SCHILDKLIER", "Echo bovenbuik\nConclusie: normaal.", "nl"),
        ("MRT KNIE LI", "EXAM: MRT oberes Sprunggelenk links\nBefund: Bandruptur.", "de"),
    ],
)
def test_a_title_of_another_region_is_an_exam_type_mismatch(
    exam: str, text: str, language: str
) -> None:
    found = _mismatches(text, exam=exam, language=language)
    assert list(found) == ["exam_type"]
    assert found["exam_type"].evidence.quote == text.split("\n")[0].removeprefix("EXAM: ")


@pytest.mark.parametrize(
    ("exam", "text"),
    [
        ("CT CHEST ABDOMEN PELVIS", "CT THORAX/ABDOMEN\nFINDINGS: Normal."),
        ("ECHO ONDERBUIK", "Echo bovenbuik en onderbuik\nNormaal."),
        ("RÖ BECKEN", "Röntgen Hüfte links\nKeine Fraktur."),
        ("CT CHEST", "Indication: abdominal pain.\nFINDINGS: CT abdomen normal."),  # no title
        ("CT CHEST", "Abdomen pain, see below.\nNormal."),  # a first line that is no exam
        ("XR 2 VIEWS", "CT ABDOMEN\nNormal."),  # an order naming no region
        (None, "CT ABDOMEN\nNormal."),
    ],
)
def test_no_exam_type_mismatch(exam: str | None, text: str) -> None:
    assert "exam_type" not in _mismatches(text, exam=exam)


def test_regions_of_exam_names() -> None:
    assert regions_of("CT CHEST W CONTRAST") == {"chest"}
    assert regions_of("X-LWK") == {"spine"}
    assert "abdomen" in regions_of("MRT Becken") and "hip" in regions_of("MRT Becken")
    assert regions_of("XR 2 VIEWS") == frozenset()


def test_odd_input_gives_nothing_and_never_raises() -> None:
    for text in ("", "\n\n", "RIGHT", "45-year-old", "x" * 5000, "LEFT KNEE\n" * 200):
        _mismatches(text or " ", exam="XR KNEE LEFT", sex="male", birth=date(1, 1, 1))


# --- the order and the patient as the messages carry them -----------------------------------

ORU = "\r".join(
    [
        "MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|20250630101500||ORU^R01|MM0001|P|2.5",
        "PID|1||MRN-MM1^^^RBH^MR||TESTPATIENT^DELTA||{birth}|{sex}",
        "OBR|1|PL1|ACC1|73562^XR KNEE LEFT 3 VIEWS^CPT|||20250630100000|||||||||||||||"
        "20250630101400||CR|F",
        "OBX|1|TX|&GDT||RIGHT KNEE, THREE VIEWS~History: 30-year-old man.~"
        "Findings: The uterus is not imaged. No fracture.||||||F",
    ]
)


@pytest.mark.parametrize(
    ("birth", "sex", "expected_sex", "expected_birth"),
    [
        ("19500101", "M", "male", date(1950, 1, 1)),
        ("195001011230", "F", "female", date(1950, 1, 1)),
        ("19850230", "U", "unknown", None),  # impossible
        ("1985", "", None, None),  # partial
        ("", "X", None, None),
    ],
)
def test_pid_7_and_8_reach_the_report(
    birth: str, sex: str, expected_sex: str | None, expected_birth: date | None
) -> None:
    (report,) = parse_oru(ORU.format(birth=birth, sex=sex).encode()).reports
    assert (report.patient_sex, report.birth_date) == (expected_sex, expected_birth)
    assert report.procedure is not None and report.procedure.display == "XR KNEE LEFT 3 VIEWS"


def _fhir(patient: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p",
                "resource": {"resourceType": "Patient", "id": "p", **patient},
            },
            {
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "id": "dr1",
                    "status": "final",
                    "code": {"text": "US PELVIS"},
                    "subject": {"reference": "Patient/p"},
                    "effectiveDateTime": "2025-06-30T10:00:00Z",
                    "conclusion": "Normal pelvic ultrasound.",
                }
            },
        ],
    }


@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        ({"gender": "female", "birthDate": "1970-03-04"}, ("female", date(1970, 3, 4))),
        ({"gender": "other", "birthDate": "1970-03"}, ("other", None)),
        ({"birthDate": "1970"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_patient_gender_and_birth_date_reach_the_report(
    patient: dict[str, Any], expected: tuple[str | None, date | None]
) -> None:
    (report,) = reports_from_fhir(_fhir(patient))
    assert (report.patient_sex, report.birth_date) == expected


# --- the labelled set ------------------------------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text("utf-8").splitlines() if line.strip()]


def test_the_labelled_mismatches_set_has_its_shape_and_positives() -> None:
    rows = _rows()
    assert len(rows) >= 40
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    positives: dict[tuple[str, str], int] = {}
    for row in rows:
        assert row["kind"] == "insights" and row["split"] in ("dev", "test")
        assert row["language"] in ("en", "nl", "de")
        assert set(row["gold"]) == {"mismatches"}  # scored on this kind only
        context = row["context"]
        assert {"exam", "order_laterality", "patient_sex", "birth_date", "report_date"} <= set(
            context
        )
        for item in row["gold"]["mismatches"]:
            assert item["kind"] in KINDS and item["evidence"] in row["text"], row["id"]
            key = (row["split"], item["kind"])
            positives[key] = positives.get(key, 0) + 1
    for split in ("dev", "test"):
        for kind in KINDS:
            assert positives.get((split, kind), 0) >= 3, (split, kind)
    assert {row["language"] for row in rows if not row["gold"]["mismatches"]} == {"en", "nl", "de"}


def test_the_rules_read_the_ordered_side_the_annotator_read() -> None:
    # the product has only the exam line (OBR-4): `order_laterality` is the annotator's reading
    for row in _rows():
        context = row["context"]
        expected = context["order_laterality"]
        assert order_side(context["exam"]) == (None if expected == "bilateral" else expected)


def test_dutch_and_german_compounds_name_their_region() -> None:
    assert regions_of("Oberbauchsonographie") == {"abdomen"}
    assert regions_of("Thoraxaufnahme p.a.") == {"chest"}
    assert regions_of("MRT Schultergelenk rechts") == {"shoulder"}
    assert regions_of("Borstkasfoto") == {"chest"}
    assert regions_of("Handgelenk links") == {"wrist"}
