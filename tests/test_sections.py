"""Unit tests of mappings/sections.py: headings per language, joined and dated headings."""

from __future__ import annotations

import pytest

from mappings.sections import HEADINGS, find_sections


def _named(text: str) -> list[tuple[str, str]]:
    return [(s.name, text[s.start : s.end]) for s in find_sections(text)]


def test_english_report() -> None:
    text = (
        "EXAMINATION: CT chest\nClinical history: cough\nTechnique: axial 1 mm\n"
        "Comparison: none\nFINDINGS:\nNo effusion.\nIMPRESSION:\nNormal."
    )
    assert _named(text) == [
        ("exam", "EXAMINATION: CT chest\n"),
        ("history", "Clinical history: cough\n"),
        ("technique", "Technique: axial 1 mm\n"),
        ("comparison", "Comparison: none\n"),
        ("findings", "FINDINGS:\nNo effusion.\n"),
        ("impression", "IMPRESSION:\nNormal."),
    ]


def test_dutch_report() -> None:
    text = (
        "Klinische gegevens: geheugenklachten\nTechniek: 3D T1\nVergelijking: geen\n"
        "Bevindingen:\nGeen infarcten.\nConclusie:\nFazekas 1."
    )
    assert [name for name, _ in _named(text)] == [
        "history",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]


def test_german_cardiac_report_with_quantitative_part() -> None:
    text = (
        "Fragestellung: Dyspnoe\nTechnik: Cine, LGE\nVoruntersuchung: keine\n"
        "Quantitative Analyse:\nLVEF 28 %, LVEDV 265 ml\nBefund:\nKein Perikarderguss.\n"
        "Beurteilung:\nDilatative Kardiomyopathie."
    )
    named = _named(text)
    assert [name for name, _ in named] == [
        "history",
        "technique",
        "comparison",
        "quantitative",
        "findings",
        "impression",
    ]
    assert named[3][1] == "Quantitative Analyse:\nLVEF 28 %, LVEDV 265 ml\n"


@pytest.mark.parametrize(
    ("heading", "name"),
    [
        ("Messwerte", "quantitative"),
        ("Anamnese", "history"),
        ("Indikation", "history"),
        ("Klinische Angaben", "history"),
        ("Vraagstelling", "history"),
        ("Conclusion", "impression"),
        ("Zusammenfassung", "impression"),
        ("Verslag", "findings"),
        ("소견", "findings"),
        ("결론", "impression"),
    ],
)
def test_single_headings(heading: str, name: str) -> None:
    text = f"{heading}:\ntext"
    assert _named(text) == [(name, text)]


def test_joined_dated_and_decorated_headings() -> None:
    text = (
        "**Befund:**\nKein Erguss.\nBeurteilung und Empfehlung: DCM.\n"
        "Voruntersuchung vom 03.01.2024: keine\nVergeleken met 2022: stabiel"
    )
    assert [name for name, _ in _named(text)] == [
        "findings",
        "impression",
        "comparison",
        "comparison",
    ]


def test_subheadings_and_words_inside_sentences_are_not_headings() -> None:
    text = "Befund:\nBeurteilung der Pumpfunktion: normal.\nThe findings are stable."
    assert [name for name, _ in _named(text)] == ["findings"]


def test_inline_upper_case_headings() -> None:
    text = "CT HEAD. FINDINGS: No bleed. IMPRESSION: Normal."
    assert _named(text) == [
        ("findings", "FINDINGS: No bleed. "),
        ("impression", "IMPRESSION: Normal."),
    ]


def test_heading_names_are_the_template_section_names() -> None:
    assert set(HEADINGS) == {
        "exam",
        "history",
        "technique",
        "comparison",
        "findings",
        "quantitative",
        "impression",
    }
    assert find_sections("no headings here") == ()


def test_a_two_word_upper_case_heading_is_one_heading() -> None:
    text = "CLINICAL HISTORY: cough\nFINDINGS: No effusion."
    assert _named(text) == [
        ("history", "CLINICAL HISTORY: cough\n"),
        ("findings", "FINDINGS: No effusion."),
    ]


def test_a_word_wrapped_onto_its_own_line_is_no_heading() -> None:
    """Issue 26: the line starts that count are unit starts (`mappings.units`)."""
    text = "Findings: Unchanged effusion compared with the previous\nstudy\nNo pneumothorax."
    assert [name for name, _ in _named(text)] == ["findings"]
    wrapped = "Befund: Kleiner Erguss.\nBeurteilung\nKein Pneumothorax."
    assert [name for name, _ in _named(wrapped)] == ["findings", "impression"]
