"""workers/evidence.py: quotes found in report text, offsets into the original text."""

from __future__ import annotations

import unicodedata

import pytest

from workers.evidence import is_meaningful, locate_quote, mentions_any

TEXT = (
    "FINDINGS:\nSmall right  pleural\neffusion. No pneumothorax.\n"
    "Größe ±2 cm; 우측 폐 consolidation."
)


def _found(text: str, quote: str) -> str:
    span = locate_quote(text, quote)
    assert span is not None, quote
    return text[span[0] : span[1]]


def test_case_and_whitespace_runs_are_normalised() -> None:
    assert _found(TEXT, "small RIGHT pleural effusion") == "Small right  pleural\neffusion"


def test_newline_inside_the_quote_matches_a_space_in_the_text() -> None:
    assert _found("No pleural effusion.", "no pleural\n effusion") == "No pleural effusion"


def test_offsets_are_code_points_with_non_ascii_text() -> None:
    span = locate_quote(TEXT, "größe ±2 cm")
    assert span == (TEXT.index("Größe"), TEXT.index("Größe") + len("Größe ±2 cm"))
    assert _found(TEXT, "우측 폐 CONSOLIDATION") == "우측 폐 consolidation"


def test_case_folding_and_decomposed_accents() -> None:
    assert _found(TEXT, "GRÖSSE ±2 CM") == "Größe ±2 cm"  # ß folds to ss
    decomposed = unicodedata.normalize("NFD", "Kein Pleuraerguss, Ödem rechts.")
    assert len(decomposed) > len("Kein Pleuraerguss, Ödem rechts.")
    span = locate_quote(decomposed, "Ödem rechts")  # composed quote, decomposed text
    assert span is not None
    assert unicodedata.normalize("NFC", decomposed[span[0] : span[1]]) == "Ödem rechts"


def test_first_occurrence_wins() -> None:
    text = "no effusion. later: no effusion."
    assert locate_quote(text, "No effusion") == (0, 11)


@pytest.mark.parametrize("quote", ["large effusion", "   ", "", "effusion pneumothorax"])
def test_absent_or_empty_quotes_are_not_found(quote: str) -> None:
    assert locate_quote(TEXT, quote) is None


@pytest.mark.parametrize("quote", ["no", "Geen", "normal", "kein", "없음", "ab", " . ", "No."])
def test_bare_verdicts_and_fragments_are_not_meaningful(quote: str) -> None:
    assert not is_meaningful(quote)


@pytest.mark.parametrize(
    "quote", ["No pneumothorax", "Kein Erguss", "PTX", "기흉 없음", "LVEF 26 %"]
)
def test_quotes_naming_a_finding_are_meaningful(quote: str) -> None:
    assert is_meaningful(quote)


@pytest.mark.parametrize(
    ("quote", "terms", "on_topic"),
    [
        ("Small right pleural effusion", ["pleural effusion"], True),
        ("bilateral effusions", ["effusion"], True),  # inflected, word start
        ("PLEURAERGUSS links", ["Pleuraerguss"], True),  # case folded
        ("Cor niet vergroot", ["cardiomegalie", "vergroot hart"], True),  # shared content word
        ("Mild cardiomegaly", ["LVEF", "ejection fraction"], False),
        ("(biplane)", ["LVEF", "Left ventricular ejection fraction"], False),
        ("left lower lobe", ["Left ventricular ejection fraction"], False),  # laterality only
        ("no pneumothorax", ["thorax"], False),  # inside a word, not at its start
        ("anything", [""], False),
    ],
)
def test_mentions_any_is_the_relevance_test(quote: str, terms: list[str], on_topic: bool) -> None:
    assert mentions_any(quote, terms) is on_topic
