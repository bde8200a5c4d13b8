"""The insights step's sizes (issue 20): every current size with the finding phrase it measures;
priors, walls, distances, normal structures, thresholds, negations and restatements left out."""

from __future__ import annotations

import pytest

from workers.insights.sizes import find_sizes
from workers.insights.text import ReportText


def _sizes(text: str, language: str = "en") -> list[tuple[str, tuple[float, ...], str]]:
    return [
        (s.finding, s.size.dims_mm, s.evidence.quote)
        for s in find_sizes(ReportText(text, language))
    ]


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        (
            "A 9 mm hypodense lesion in segment 4 is seen.",
            "en",
            [("hypodense lesion in segment 4", (9.0,), "9 mm")],
        ),
        (
            "Baker cyst measuring 3.5 x 1.2 cm.",
            "en",
            [("Baker cyst", (35.0, 12.0), "3.5 x 1.2 cm")],
        ),
        (
            "In de bovenpool een cyste van 2,6 cm.",
            "nl",
            [("In de bovenpool een cyste", (26.0,), "2,6 cm")],
        ),
        (
            "Läsion 1: periphere Zone links apikal, 9 mm, PI-RADS 4.",
            "de",
            [("periphere Zone links apikal", (9.0,), "9 mm")],
        ),
    ],
)
def test_a_size_gets_the_finding_phrase_it_measures(
    text: str, language: str, expected: list[tuple[str, tuple[float, ...], str]]
) -> None:
    assert _sizes(text, language) == expected


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Nodule, previously 6 mm.", "en"),  # a prior value
        ("Gallbladder wall thickened to 5 mm.", "en"),  # a wall
        ("ETT tip 4 cm above the carina.", "en"),  # a distance
        ("Bile ducts: CBD 4 mm.", "en"),  # a normal structure
        ("Kidneys: Right 10.9 cm, left 11.2 cm.", "en"),
        ("Milt 11 cm.", "nl"),
        ("Below the FNA threshold (2.5 cm).", "en"),  # a threshold
        ("No nodule over 5 mm.", "en"),  # negated
        ("Kein Rundherd über 6 mm.", "de"),
    ],
)
def test_what_is_no_current_size_of_a_finding(text: str, language: str) -> None:
    assert _sizes(text, language) == []


def test_a_restatement_is_not_a_new_size_and_a_fuller_size_is() -> None:
    text = (
        "Mammography: mass in the left upper outer quadrant, 8 mm. Ultrasound: hypoechoic mass "
        "measuring 8 x 5 x 6 mm. Right nodule 1.6 x 1.1 x 1.0 cm.\n"
        "IMPRESSION: Right nodule, 1.6 cm."
    )
    assert [dims for _, dims, _ in _sizes(text)] == [(8.0,), (8.0, 5.0, 6.0), (16.0, 11.0, 10.0)]


def test_a_side_alone_takes_the_sentence_label() -> None:
    (sized,) = find_sizes(ReportText("Nodules: right 16 mm.", "en"))
    assert sized.finding == "Nodules right"


def test_odd_text_gives_nothing() -> None:
    assert _sizes("") == [] and _sizes("12 x mm cm x 3") == []
