"""The insights step's rules (workers/insights), on sentences written for these tests (not
taken from the labelled set): RADS categories, critical results, communications and follow-up
recommendations, the traps of issue 20 ("Bad input") included."""

from __future__ import annotations

from datetime import date

import pytest

from mappings.insights.model import Insights
from mappings.report import Report
from workers.insights.extract import InsightContext, extract_insights
from workers.insights.timing import add_duration, find_intervals

DAY = date(2025, 8, 31)


def _insights(text: str, language: str = "en", day: date = DAY) -> Insights:
    report = Report(source_format="fhir", report_id="t", text=text, language=language)
    return extract_insights(report, InsightContext(report_date=day))


# --- RADS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: Irregular mass in the left breast, BI-RADS 4a.", ("BI-RADS", "4A", "left")),
        ("IMPRESSION: Spiculated mass right breast. BI-RADS 4.", ("BI-RADS", "4", "right")),
        ("Conclusion: part-solid nodule, Lung-RADS 4B.", ("Lung-RADS", "4B", None)),
        ("Beurteilung: Lung-RADS 2S (S: Koronarsklerose).", ("Lung-RADS", "2S", None)),
        ("Conclusie: laesie links in de perifere zone, PI-RADS 5.", ("PI-RADS", "5", "left")),
        ("Beurteilung: Knoten rechts, ACR TI-RADS 5 (8 Punkte).", ("TI-RADS", "TR5", "right")),
        ("IMPRESSION: 2.4 cm arterially enhancing observation, LR-5.", ("LI-RADS", "LR-5", None)),
        ("IMPRESSION: Left adnexal cyst, O-RADS US 3.", ("O-RADS", "3", "left")),
        ("Composition: heterogeneously dense breasts (ACR c).", ("BI-RADS density", "c", None)),
    ],
)
def test_rads_category_as_the_system_writes_it(
    text: str, expected: tuple[str, str, str | None]
) -> None:
    found = [(r.system, r.category, r.side) for r in _insights(text).rads]
    assert found == [expected]


def test_a_prior_rads_category_is_not_this_reports() -> None:
    text = (
        "INDICATION: Recall after screening (BI-RADS 0 left).\n"
        "FINDINGS: Compared with the prior study (BI-RADS 3), the mass is stable.\n"
        "IMPRESSION: Benign-appearing mass right breast, BI-RADS 2."
    )
    assert [(r.system, r.category) for r in _insights(text).rads] == [("BI-RADS", "2")]


def test_bosniak_and_fazekas_are_not_rads() -> None:
    assert _insights("Bosniak 2F cyst. Fazekas 2 white matter change.").rads == ()


# --- critical results ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "finding"),
    [
        ("IMPRESSION: Large right pneumothorax with mediastinal shift.", "en", "pneumothorax"),
        ("IMPRESSION: Findings consistent with acute appendicitis.", "en", "appendicitis"),
        ("Conclusie: Acute subduraal hematoom links.", "nl", "intracranial_haemorrhage"),
        ("Beurteilung: Freie intraperitoneale Luft subphrenisch.", "de", "pneumoperitoneum"),
        ("IMPRESSION: Right tension pneumothorax.", "en", "tension_pneumothorax"),
    ],
)
def test_a_stated_critical_finding_flags(text: str, language: str, finding: str) -> None:
    assert [c.finding for c in _insights(text, language).critical] == [finding]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("IMPRESSION: No pneumothorax. No pulmonary embolism.", "en"),
        ("IMPRESSION: Possible early appendicitis.", "en"),
        ("IMPRESSION: Small pulmonary embolism cannot be excluded.", "en"),
        ("Conclusie: Geen aanwijzingen voor longembolie.", "nl"),
        ("Conclusie: Mogelijk beginnende appendicitis.", "nl"),
        ("Beurteilung: V.a. Ovarialtorsion rechts.", "de"),
        ("Beurteilung: Kein Anhalt für eine Lungenarterienembolie.", "de"),
        ("INDICATION: r/o PE.\nIMPRESSION: Normal study.", "en"),
        ("CT CHEST (PE PROTOCOL)\nIMPRESSION: Normal study.", "en"),
        ("IMPRESSION: Known chronic subdural hematoma, unchanged.", "en"),
    ],
)
def test_negated_hedged_history_and_known_findings_do_not_flag(text: str, language: str) -> None:
    assert _insights(text, language).critical == ()


def test_a_tension_pneumothorax_is_not_also_a_pneumothorax() -> None:
    text = "IMPRESSION: Left tension pneumothorax. The pneumothorax is large."
    assert [c.finding for c in _insights(text).critical] == ["tension_pneumothorax"]


# --- communications -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "recipient", "time"),
    [
        ("Findings discussed with Dr. A. Smith by phone at 14:05.", "en", "Dr. A. Smith", "14:05"),
        ("Telefonisch doorgegeven aan de dienstdoende chirurg om 23.10 uur.", "nl",
         "de dienstdoende chirurg", "23.10 uur"),
        ("Befund um 07:45 Uhr an Dr. Berger übermittelt.", "de", "Dr. Berger", "07:45 Uhr"),
    ],
)  # fmt: skip
def test_a_communication_has_its_recipient_and_time_as_written(
    text: str, language: str, recipient: str, time: str
) -> None:
    found = _insights(text, language).communications
    assert [(c.recipient, c.time) for c in found] == [(recipient, time)]


@pytest.mark.parametrize(
    "text",
    ["Please call the referring physician with these results.", "To be discussed at the MDT."],
)
def test_requests_and_future_discussions_are_not_communications(text: str) -> None:
    assert _insights(text).communications == ()


# --- follow-up recommendations ------------------------------------------------------------


def test_a_recommendation_with_modality_and_due_date() -> None:
    (followup,) = _insights("IMPRESSION: 7 mm nodule. Recommend chest CT in 6 months.").followups
    assert (followup.kind, followup.modality, followup.interval) == ("imaging", "CT", ("P6M",))
    assert followup.due == date(2026, 2, 28)  # 31 August + 6 months: clamped to February's end
    assert followup.evidence.quote == "Recommend chest CT in 6 months"


def test_a_range_gives_a_period_and_a_condition_makes_it_as_needed() -> None:
    text = "Conclusie: bij persisterende klachten herhaling van de thoraxfoto over 10 à 14 dagen."
    (followup,) = _insights(text, "nl", date(2025, 3, 1)).followups
    assert followup.modality == "CR" and followup.conditional
    assert (followup.due_start, followup.due_end) == (date(2025, 3, 11), date(2025, 3, 15))


def test_several_actions_in_one_sentence_are_one_each_and_biopsies_keep_their_guidance() -> None:
    text = "Empfehlung: sonographisch gesteuerte Stanzbiopsie und gynäkologische Vorstellung."
    found = [(f.kind, f.modality) for f in _insights(text, "de").followups]
    assert found == [("biopsy", "US"), ("consultation", None)]


def test_a_recommendation_split_over_two_sentences() -> None:
    text = "A follow-up ultrasound is recommended. This should be done in six weeks."
    (followup,) = _insights(text, "en", date(2025, 1, 1)).followups
    assert followup.modality == "US" and followup.due == date(2025, 2, 12)
    assert followup.evidence.quote == text.rstrip(".")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("IMPRESSION: Simple renal cyst. No follow-up imaging is needed.", "en"),
        ("Compared with the follow-up CT of March 2024, no change.", "en"),
        ("Conclusie: Simpele cyste. Geen aanvullend onderzoek nodig.", "nl"),
        ("Beurteilung: Keine weitere Kontrolle erforderlich.", "de"),
        ("INDICATION: Referred for follow-up of a lung nodule.\nIMPRESSION: Stable.", "en"),
        ("IMPRESSION: Clinical correlation is recommended.", "en"),
    ],
)
def test_negated_past_and_non_actions_are_not_recommendations(text: str, language: str) -> None:
    assert _insights(text, language).followups == ()


@pytest.mark.parametrize(
    ("text", "durations"),
    [
        ("in een jaar", ("P1Y",)),
        ("halbjährlich", ("P6M",)),
        ("in six weeks", ("P6W",)),
        ("over 6 à 8 weken", ("P6W", "P8W")),
        ("in 6 months, then annually", ("P6M",)),
        ("am Folgetag", ("P1D",)),
    ],
)
def test_intervals_in_words_and_ranges(text: str, durations: tuple[str, ...]) -> None:
    assert find_intervals(text)[0].durations == durations


def test_calendar_months_clamp_to_the_months_end() -> None:
    assert add_duration(date(2024, 1, 31), "P1M") == date(2024, 2, 29)
    assert add_duration(date(2025, 1, 10), "P2W") == date(2025, 1, 24)


def test_odd_text_gives_nothing_and_never_raises() -> None:
    for text in ("", "   ", "BI-RADS", "Recommend", "in 3 months", "Dr.", "\n\n;;.."):
        assert _insights(text).empty()
