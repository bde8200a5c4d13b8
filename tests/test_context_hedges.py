"""The hedge (uncertainty) trigger families of workers/context_triggers.py, by class and language.

Weak hedges make a mention uncertain; strong ones ("likely", "waarschijnlijk", "am ehesten":
pyConText's probable existence) make it uncertain and probable, which templates with
`probable_existence: present` read as present. "Suggesting" stays weak (the Open-i labels read it
so). A word about a finding's nature ("indeterminate nodule") hedges nothing.
"""

from __future__ import annotations

import pytest

from workers.context import assess

STRONG, WEAK, NONE = "strong", "weak", "none"


@pytest.mark.parametrize(
    ("text", "mention", "language", "hedge"),
    [
        (
            "Narrowing of the medial joint space suggesting polyethylene wear.",
            "polyethylene wear",
            "en",
            WEAK,
        ),
        (
            "Mosaic attenuation suggests small airways disease.",
            "small airways disease",
            "en",
            WEAK,
        ),
        ("Right breast mass highly suggestive of malignancy.", "malignancy", "en", STRONG),
        ("Findings raise concern for osteomyelitis.", "osteomyelitis", "en", WEAK),
        ("Lucency with suspicion for loosening.", "loosening", "en", WEAK),
        ("Indeterminate 12 mm right adrenal nodule.", "adrenal nodule", "en", NONE),
        ("Conclusie: verdenking scaphoïdfractuur.", "scaphoïdfractuur", "nl", WEAK),
        ("Indicatie: hoofdpijn, uitsluiten bloeding.", "bloeding", "nl", WEAK),
        ("Waarschijnlijk een stressfractuur van MT2.", "stressfractuur", "nl", STRONG),
        ("Vermoedelijk galsteen in de hals.", "galsteen", "nl", STRONG),
        ("Een fractuur is waarschijnlijk.", "fractuur", "nl", STRONG),
        ("Mogelijk een subtiele fractuurlijn.", "fractuurlijn", "nl", WEAK),
        ("Osteolyse, am ehesten Enchondrom.", "Enchondrom", "de", STRONG),
        ("Wahrscheinlich Fraktur des Os scaphoideum.", "Fraktur", "de", STRONG),
        ("Der Befund spricht für eine Appendizitis.", "Appendizitis", "de", STRONG),
        ("V.a. Skaphoidfraktur.", "Skaphoidfraktur", "de", WEAK),
        ("Fragliche Fraktur des Radiusköpfchens.", "Fraktur", "de", WEAK),
        ("Wahrscheinlich keine Fraktur.", "Fraktur", "de", WEAK),
    ],
)
def test_hedge_class(text: str, mention: str, language: str, hedge: str) -> None:
    start = text.index(mention)
    result = assess(text, start, start + len(mention), language)
    found = NONE if not result.uncertain else STRONG if result.probable else WEAK
    assert found == hedge
    assert not result.negated or text.startswith("Wahrscheinlich keine")


def test_a_low_suspicion_stays_a_negation() -> None:
    text = "BI-RADS 4A - low suspicion for malignancy."
    start = text.index("malignancy")
    result = assess(text, start, start + len("malignancy"), "en")
    assert result.negated and not result.uncertain
