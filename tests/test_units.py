"""Unit tests of mappings/units.py: where a unit ends, one test per class of line break (issue 26).

Classes: a line break inside a sentence (lower case, function word, open German noun phrase,
hard-wrapped block), a blank line, headings, all-capitals labels, list items and numbered items,
"key: value" lines, tables, and statements one per line; plus the API's promises (same length,
offsets into the text as received, quotes with their line breaks).
"""

from __future__ import annotations

import pytest

from conformance.rewrap import rewrap
from mappings.units import flowed, soft_breaks, unit_ends, unit_spans


def _units(text: str) -> list[str]:
    return [text[start:end] for start, end in unit_spans(text)]


def _joined(text: str) -> list[str]:
    """The units with their line breaks read as spaces (what the rules stage reads)."""
    return [" ".join(unit.split()) for unit in _units(text)]


ISSUE_EXAMPLE = (
    "FINDINGS: Heart is normal in size. There is no pericardial\n"
    "effusion. No pneumothorax. The lungs are clear and there is no\n"
    "pleural effusion or consolidation."
)


def test_the_issue_example_reads_as_sentences() -> None:
    assert _units(ISSUE_EXAMPLE) == [
        "FINDINGS: Heart is normal in size",
        "There is no pericardial\neffusion",
        "No pneumothorax",
        "The lungs are clear and there is no\npleural effusion or consolidation",
    ]


def test_flowed_keeps_length_and_offsets() -> None:
    flow = flowed(ISSUE_EXAMPLE)
    assert len(flow) == len(ISSUE_EXAMPLE)
    assert "\n" not in flow
    assert [ISSUE_EXAMPLE[i] for i in soft_breaks(ISSUE_EXAMPLE)] == ["\n", "\n"]
    for start, end in unit_spans(ISSUE_EXAMPLE):  # the same spans read from either text
        assert " ".join(flow[start:end].split()) == " ".join(ISSUE_EXAMPLE[start:end].split())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the next line starts in lower case
        ("No pleural effusion or\npneumothorax.", ["No pleural effusion or pneumothorax"]),
        ("Heart normal, lungs\nclear. No effusion.", ["Heart normal, lungs clear", "No effusion"]),
        # the line ends with a word a statement cannot end with (any case)
        ("THERE IS NO\nPLEURAL EFFUSION.", ["THERE IS NO PLEURAL EFFUSION"]),
        ("Kein Nachweis eines\nPleuraergusses.", ["Kein Nachweis eines Pleuraergusses"]),
        ("Geen aanwijzingen voor\nPE.", ["Geen aanwijzingen voor PE"]),
        # a comma, hyphen or an abbreviation that needs its object
        ("Keine Infiltrate,\nLunge frei.", ["Keine Infiltrate, Lunge frei"]),
        ("V.a.\nPneumonie rechts basal.", ["V.a. Pneumonie rechts basal"]),
        # German: an open noun phrase continues with its capitalised noun
        ("Kein pathologischer\nPleuraerguss.", ["Kein pathologischer Pleuraerguss"]),
        ("Erguss im rechten\nUnterlappen.", ["Erguss im rechten Unterlappen"]),
        # a laterality and its organ
        ("Consolidation in the left\nlower lobe.", ["Consolidation in the left lower lobe"]),
    ],
)
def test_a_line_break_inside_a_sentence_is_a_space(text: str, expected: list[str]) -> None:
    assert _joined(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # one statement per line, no punctuation (German nouns start the next line)
        ("Herz normal groß\nLunge frei\nKein Pneumothorax", ["Herz normal groß", "Lunge frei",
                                                            "Kein Pneumothorax"]),
        ("Kein Pleuraerguss\nPneumothorax rechts", ["Kein Pleuraerguss", "Pneumothorax rechts"]),
        ("No effusion\nPneumothorax on the right", ["No effusion", "Pneumothorax on the right"]),
        # a blank line
        ("No effusion or\n\npneumothorax", ["No effusion or", "pneumothorax"]),
        # a heading alone on its line, and an all-capitals label
        ("FINDINGS\nThe lungs are clear", ["FINDINGS", "The lungs are clear"]),
        ("Beurteilung\nUnauffälliger Befund", ["Beurteilung", "Unauffälliger Befund"]),
        ("Normal study\nCHEST PA AND LATERAL\nLungs clear", ["Normal study",
                                                          "CHEST PA AND LATERAL", "Lungs clear"]),
        ("Findings:\nno effusion", ["Findings:", "no effusion"]),
        # list items, numbered items, key: value lines
        ("Pleural\n- effusion: none\n- pneumothorax: none",
         ["Pleural", "- effusion: none", "- pneumothorax: none"]),
        ("Impression\n1. No effusion\n2) Small nodule", ["Impression", "1. No effusion",
                                                        "2) Small nodule"]),
        ("effusion: none\npneumothorax: none", ["effusion: none", "pneumothorax: none"]),
        ("Lacunes: geen,\nMicrobloedingen: 2", ["Lacunes: geen,", "Microbloedingen: 2"]),
        # a value "no" is the value, not "no <finding>"
        ("Pneumothorax: no\nSmall effusion", ["Pneumothorax: no", "Small effusion"]),
        # table rows
        ("Scores        li   re\nMTA            2    3", ["Scores li re", "MTA 2 3"]),
        ("| LVEF | 55 |\n| RVEF | 50 |", ["| LVEF | 55 |", "| RVEF | 50 |"]),
        # a capitalised function word starts a new statement
        ("Small effusion on the right side\nThe heart is normal",
         ["Small effusion on the right side", "The heart is normal"]),
    ],
)  # fmt: skip
def test_a_line_break_between_units_ends_one(text: str, expected: list[str]) -> None:
    assert _joined(text) == expected


def test_sentence_marks_and_abbreviations() -> None:
    text = "Rundherd von ca. 5 mm, z.B. im Oberlappen. V.a. Pneumonie; kein Erguss! Gut?"
    assert _units(text) == [
        "Rundherd von ca. 5 mm, z.B. im Oberlappen",
        "V.a. Pneumonie",
        "kein Erguss",
        "Gut",
    ]
    assert [text[a:b] for a, b in unit_ends(text)] == [".", ";", "!", "?"]
    items = "IMPRESSION:\n1. Retrocardiac density. Suggests hiatal hernia. 2. Basal atelectasis."
    assert _units(items) == [
        "IMPRESSION:",
        "1. Retrocardiac density",
        "Suggests hiatal hernia",
        "2. Basal atelectasis",
    ]
    assert _units("Fazekas 2. Geen lacunes") == ["Fazekas 2", "Geen lacunes"]
    assert _units("LV mass 142 g. Vitamin D. No LGE") == ["LV mass 142 g", "Vitamin D. No LGE"]
    assert _units("T2 56 ms. Kein Erguss") == ["T2 56 ms", "Kein Erguss"]
    assert _units("MRI hersenen i.v.m. geheugenklachten") == [
        "MRI hersenen i.v.m. geheugenklachten"
    ]
    assert _units("Microbloedingen: 0. Lacunes: 0.") == ["Microbloedingen: 0", "Lacunes: 0"]


def test_a_run_of_blank_lines_is_one_end() -> None:
    text = "No effusion\n\n \nNo pneumothorax"
    assert [text[a:b] for a, b in unit_ends(text)] == ["\n\n \n"]


def test_hard_wrapped_block_continues_capitalised_lines() -> None:
    """A full line in a hard-wrapped block continues onto the next, whatever its first letter
    (all-capitals text, German nouns, numbers): the wrap, not the words, decides."""
    sentence = (
        "THE CARDIOMEDIASTINAL SILHOUETTE IS WITHIN NORMAL LIMITS FOR SIZE. THERE IS NO "
        "PERICARDIAL EFFUSION SEEN ON THIS EXAMINATION. THE LUNGS ARE CLEAR WITHOUT FOCAL "
        "AIRSPACE CONSOLIDATION, PLEURAL EFFUSION OR PNEUMOTHORAX SEEN."
    )
    for width in (40, 50, 60, 70, 80):
        wrapped = rewrap(sentence, width)
        assert "\n" in wrapped
        assert _joined(wrapped) == _joined(sentence), width


@pytest.mark.parametrize("width", [40, 50, 60, 70, 80])
def test_german_nouns_on_a_wrapped_line(width: int) -> None:
    text = (
        "Befund: Das Herz ist normal groß. Kein Nachweis eines Pleuraergusses oder "
        "Pneumothorax beidseits. Im rechten Unterlappen ein kleiner Rundherd von 6 mm "
        "Durchmesser ohne Verkalkungen. Mediastinum mittelständig und nicht verbreitert."
    )
    assert _joined(rewrap(text, width)) == _joined(text)


def test_text_without_line_breaks_is_its_own_flow() -> None:
    text = "No effusion. Small pneumothorax"
    assert flowed(text) == text
    assert soft_breaks(text) == ()
    assert _units("") == []
