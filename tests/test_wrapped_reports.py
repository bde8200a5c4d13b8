"""Reports wrapped across lines and OBX segments keep their negations and qualifiers (issue 26).

The issue's example (three TX segments of one report) as HL7v2 and FHIR fixtures, and the same
text arriving every other way: ST and FT segments, `~` repetitions, CSV and JSONL records with
CRLF line ends. Then wraps at several widths in English, Dutch and German, a wrap inside "no ...
or ..." coordination, between a laterality and its organ, after a heading, and a genuine list of
one finding per line; sections, ConText, the LLM prompt and the stage-1 hints read the same units.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.inputs import read_records
from conformance.rewrap import rewrap
from mappings.fhir_in import reports_from_fhir
from mappings.framing import split_frames
from mappings.hl7.oru_in import parse_oru
from mappings.inbound import report_from_record
from mappings.report import Extraction, FindingStatus, Report
from mappings.sections import find_sections
from mappings.template import get_template
from workers.context import assess
from workers.evidence import locate_quote
from workers.prompt import user_text
from workers.rules_stage import extract_rules, variable_spans
from workers.stages import hints_text

FIXTURES = Path(__file__).parent / "fixtures"
WRAPPED_HL7 = FIXTURES / "hl7v2" / "wrapped_obx.hl7"
WRAPPED_FHIR = FIXTURES / "fhir" / "wrapped_presented_form.json"
ISSUE_LINES = (
    "FINDINGS: Heart is normal in size. There is no pericardial",
    "effusion. No pneumothorax. The lungs are clear and there is no",
    "pleural effusion or consolidation.",
)
ABSENT = ("pleural_effusion", "consolidation", "pneumothorax", "cardiomegaly")


def _report(text: str, language: str | None = "en") -> Report:
    return Report(
        source_format="fhir",
        report_id="r",
        language=language,
        text=text,
        sections=find_sections(text),
    )


def _rules(report: Report, template: str = "chest_findings") -> Extraction:
    return extract_rules(report, get_template(template))


def _statuses(extraction: Extraction) -> dict[str, str]:
    return {value.variable_id: value.status.value for value in extraction.values}


def _located(extraction: Extraction) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        v.variable_id: (v.status.value, v.locations)
        for v in extraction.values
        if v.status is not FindingStatus.NOT_MENTIONED
    }


def _assert_issue_example(report: Report) -> None:
    """Pleural effusion and consolidation absent, and nothing pleural from the pericardial line."""
    extraction = _rules(report)
    statuses = _statuses(extraction)
    assert {name: statuses[name] for name in ABSENT} == dict.fromkeys(ABSENT, "absent")
    effusion = extraction.value_of("pleural_effusion")
    assert effusion is not None and effusion.evidence is not None
    # the quote is what the report says, line break included, at its offsets in the text
    evidence = effusion.evidence
    assert evidence.start is not None and evidence.end is not None
    assert report.text[evidence.start : evidence.end] == evidence.quote
    assert " ".join(evidence.quote.split()) == (
        "The lungs are clear and there is no pleural effusion or consolidation"
    )
    pericardial = report.text.index("There is no pericardial")
    spans = variable_spans(report, get_template("chest_findings"))["pleural_effusion"]
    assert all(not start <= pericardial < end for start, end in spans)


def test_issue_example_hl7_tx_segments() -> None:
    (frame,) = split_frames(WRAPPED_HL7.read_bytes())
    (report,) = parse_oru(frame.payload).reports
    assert report.text == "\n".join(ISSUE_LINES)
    _assert_issue_example(report)


@pytest.mark.parametrize("value_type", ["ST", "FT"])
def test_issue_example_other_obx_types(value_type: str) -> None:
    payload = WRAPPED_HL7.read_bytes().replace(b"|TX|", f"|{value_type}|".encode())
    (report,) = parse_oru(payload).reports
    _assert_issue_example(report)


def test_issue_example_ft_line_breaks_and_repetitions() -> None:
    """One FT segment with `\\.br\\` escapes, and one TX segment with `~` repetitions."""
    segments = WRAPPED_HL7.read_bytes().split(b"\r")
    head = b"\r".join(s for s in segments if s and not s.startswith(b"OBX"))
    for joiner, value_type in ((b"\\.br\\", b"FT"), (b"~", b"TX")):
        obx = b"OBX|1|" + value_type + b"|&GDT|1|"
        obx += joiner.join(line.encode() for line in ISSUE_LINES) + b"||||||F"
        (report,) = parse_oru(head + b"\r" + obx + b"\r").reports
        assert report.text == "\n".join(ISSUE_LINES)
        _assert_issue_example(report)


def test_issue_example_fhir_presented_form_and_conclusion() -> None:
    (report,) = reports_from_fhir(json.loads(WRAPPED_FHIR.read_text("utf-8")))
    assert "\r" not in report.text
    _assert_issue_example(report)
    conclusion = report.text.index("No pleural effusion or\npneumothorax")
    extraction = _rules(report)
    assert _statuses(extraction)["pneumothorax"] == "absent"
    spans = variable_spans(report, get_template("chest_findings"))["pneumothorax"]
    assert any(start <= conclusion + len("No pleural effusion or\n") < end for start, end in spans)


def test_a_conclusion_already_in_the_wrapped_text_is_not_added_again() -> None:
    resource = json.loads(WRAPPED_FHIR.read_text("utf-8"))
    resource["conclusion"] = (
        "The lungs are clear and there is no pleural effusion or consolidation."
    )
    (report,) = reports_from_fhir(resource)
    assert report.text == "\n".join(ISSUE_LINES)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_issue_example_text_records(tmp_path: Path, suffix: str) -> None:
    text = "\r\n".join(ISSUE_LINES)
    path = tmp_path / f"reports{suffix}"
    if suffix == ".csv":
        quoted = text.replace('"', '""')
        path.write_bytes(f'id,text,language\r\nr1,"{quoted}",en\r\n'.encode())
    else:
        path.write_text(json.dumps({"id": "r1", "text": text, "language": "en"}) + "\n", "utf-8")
    (record,) = read_records(path)
    report = report_from_record(record.data, default_language="en")
    assert report.text == "\n".join(ISSUE_LINES)
    _assert_issue_example(report)


ENGLISH = (
    "FINDINGS: The heart is normal in size. There is no pericardial effusion. There is no "
    "pleural effusion or pneumothorax on either side. The lungs are clear without focal "
    "consolidation. There is patchy atelectasis in the left lower lobe. No pulmonary nodule or "
    "mass is seen.\nIMPRESSION: Left lower lobe atelectasis. No pleural effusion."
)
DUTCH = (
    "Bevindingen: Normale grootte van het hart, geen cardiomegalie. Geen pleuravocht en geen "
    "pneumothorax aan beide zijden. Geen consolidatie in de longvelden. Wel een kleine "
    "atelectase in de linker onderkwab. Geen nodulus of massa.\nConclusie: Atelectase links "
    "basaal. Geen pleuravocht."
)
GERMAN = (
    "Befund: Herz normal groß, keine Kardiomegalie. Kein Nachweis eines Pleuraergusses oder "
    "eines Pneumothorax beidseits. Keine Konsolidierung der Lunge. Kleine Atelektase im "
    "linken Unterlappen. Kein Rundherd und keine Raumforderung.\nBeurteilung: Atelektase "
    "links basal. Kein Pleuraerguss."
)


@pytest.mark.parametrize(("text", "language"), [(ENGLISH, "en"), (DUTCH, "nl"), (GERMAN, "de")])
def test_wraps_at_any_width_read_as_the_unwrapped_text(text: str, language: str) -> None:
    plain = _rules(_report(text, language))
    statuses = _statuses(plain)
    assert {name: statuses[name] for name in (*ABSENT, "lung_nodule", "lung_mass")} == (
        dict.fromkeys((*ABSENT, "lung_nodule", "lung_mass"), "absent")
    )
    assert statuses["atelectasis"] == "present"
    for width in (40, 50, 60, 70, 80):
        wrapped = rewrap(text, width)
        assert wrapped.count("\n") > text.count("\n")
        assert _located(_rules(_report(wrapped, language))) == _located(plain), width


@pytest.mark.parametrize(
    "text",
    [
        "No pleural effusion or\npneumothorax.",
        "No pleural effusion,\npneumothorax or consolidation.",
        "There is no evidence of\npneumothorax or pleural effusion.",
        "NO PLEURAL EFFUSION OR\nPNEUMOTHORAX.",
        "Geen pleuravocht of\npneumothorax.",
        "Kein Pleuraerguss und kein\nPneumothorax.",
    ],
)
def test_a_wrap_inside_coordination_keeps_the_negation(text: str) -> None:
    assert _statuses(_rules(_report(text, None)))["pneumothorax"] == "absent"


@pytest.mark.parametrize(
    ("text", "site"),
    [
        ("Patchy consolidation in the left\nlower lobe.", "left_lower_lobe"),
        ("Consolidation of the right\nupper lobe.", "right_upper_lobe"),
        ("Consolidatie in de linker\nonderkwab.", "left_lower_lobe"),
        ("Konsolidierung im linken\nUnterlappen.", "left_lower_lobe"),
    ],
)
def test_a_wrap_between_laterality_and_organ_keeps_the_site(text: str, site: str) -> None:
    consolidation = _rules(_report(text, None)).value_of("consolidation")
    assert consolidation is not None
    assert consolidation.status is FindingStatus.PRESENT
    assert consolidation.locations == (site,)


def test_a_wrap_after_a_heading() -> None:
    text = (
        "CLINICAL HISTORY:\nShortness of breath, rule out effusion.\nFINDINGS:\n"
        "There is no pleural effusion or\npneumothorax. Small nodule in the right\n"
        "upper lobe.\nIMPRESSION:\nNo effusion."
    )
    report = _report(text)
    assert [s.name for s in report.sections] == ["history", "findings", "impression"]
    extraction = _rules(report)
    assert _located(extraction)["pleural_effusion"] == ("absent", ())
    assert _located(extraction)["pneumothorax"] == ("absent", ())
    assert _located(extraction)["lung_nodule"] == ("present", ("right_upper_lobe",))


def test_a_wrapped_word_is_no_heading() -> None:
    text = "Findings: Unchanged small effusion compared with the previous\nstudy\nNo pneumothorax."
    assert [s.name for s in find_sections(text)] == ["findings"]


def test_one_finding_per_line_stays_one_per_line() -> None:
    text = (
        "Findings:\n- effusion: none\n- pneumothorax: right apical, small\n"
        "- consolidation: none\n- heart: enlarged"
    )
    statuses = _statuses(_rules(_report(text)))
    assert statuses["pleural_effusion"] == "absent"
    assert statuses["pneumothorax"] == "present"
    assert statuses["consolidation"] == "absent"
    german = "Kein Pleuraerguss\nPneumothorax rechts apikal\nHerz normal groß"
    statuses = _statuses(_rules(_report(german, "de")))
    assert statuses["pleural_effusion"] == "absent"
    assert statuses["pneumothorax"] == "present"


def test_context_reads_a_sentence_across_the_wrap() -> None:
    text = "\n".join(ISSUE_LINES)
    start = text.index("pleural effusion")
    assert assess(text, start, start + len("pleural effusion"), "en").negated
    start = text.index("consolidation")
    assert assess(text, start, start + len("consolidation"), "en").negated


def test_prompt_and_hints_read_the_same_sentences() -> None:
    report = _report("\n".join(ISSUE_LINES))
    prompt = user_text(report, hints_text(_rules(report)))
    assert "There is no pericardial effusion." in prompt
    assert "there is no pleural effusion or consolidation." in prompt
    hints = hints_text(_rules(report))
    assert "\n" not in " ".join(line for line in hints.splitlines() if '"' in line)
    assert all(line.count('"') == 2 for line in hints.splitlines())
    # a quote the model copies from the prompt is found in the report as written
    span = locate_quote(report.text, "no pericardial effusion")
    assert span is not None
    assert report.text[span[0] : span[1]] == "no pericardial\neffusion"
