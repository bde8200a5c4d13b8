"""The insights step's rules (workers/insights), on sentences written for these tests (not
taken from the labelled set): RADS categories, critical results, communications and follow-up
recommendations, the traps of issue 20 ("Bad input") included."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from mappings.insights.critical_list import load_critical_list
from mappings.insights.model import Insights
from mappings.report import Report
from workers.insights import communications, followups, rads, timing
from workers.insights.extract import InsightContext, extract_insights
from workers.insights.text import ReportText, may_match
from workers.insights.timing import add_duration, find_intervals

LABELLED = Path(__file__).parent / "fixtures" / "labelled" / "insights.jsonl"

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


# --- error classes of the accuracy work (issue 20): one sentence per notation or phrase family


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Conclusie: verdachte laesie links, BIRADS-4b.", ("BI-RADS", "4B", "left")),
        ("Beurteilung: Herdbefund, BI-RADS IV links.", ("BI-RADS", "4", "left")),
        ("Assessment: BI-RADS assessment category 3.", ("BI-RADS", "3", None)),
        ("IMPRESSION: Lung RADS 2, benign appearance.", ("Lung-RADS", "2", None)),
        ("Beurteilung: Lung-RADS v2022 Kategorie 4B.", ("Lung-RADS", "4B", None)),
        ("Conclusie: laesie links, PI-RADS 2.1 score 5.", ("PI-RADS", "5", "left")),
        ("IMPRESSION: Left lesion, PI-RADS v2.1 score 4.", ("PI-RADS", "4", "left")),
        ("Conclusie: nodus rechts, TIRADS-4.", ("TI-RADS", "TR4", "right")),
        ("Beurteilung: Läsion Segment 6, LI-RADS LR 5.", ("LI-RADS", "LR-5", None)),
        ("Conclusie: laesie segment 8, LI-RADS categorie 4.", ("LI-RADS", "LR-4", None)),
        ("IMPRESSION: Left ovarian lesion, O-RADS MRI score 4.", ("O-RADS", "4", "left")),
        ("Befund: Dichte C. Kein Herdbefund.", ("BI-RADS density", "c", None)),
        ("Befund: Parenchymdichte ACR-Typ 3.", ("BI-RADS density", "c", None)),
    ],
)
def test_rads_notation_variants(text: str, expected: tuple[str, str, str | None]) -> None:
    found = [(r.system, r.category, r.side) for r in _insights(text).rads]
    assert found == [expected]


def test_a_category_repeated_without_its_side_is_the_sided_one() -> None:
    text = "Befund: Läsion rechts apikal, PI-RADS-Score 3.\nBeurteilung: PI-RADS 3."
    assert [(r.category, r.side) for r in _insights(text, "de").rads] == [("3", "right")]


def test_per_side_birads_in_one_statement() -> None:
    found = _insights("Beurteilung: BI-RADS rechts 2, links 4.", "de").rads
    assert sorted((r.category, r.side) for r in found) == [("2", "right"), ("4", "left")]


@pytest.mark.parametrize(
    ("text", "language", "finding"),
    [
        ("IMPRESSION: Small-bowel obstruction with a transition point.", "en", "bowel_obstruction"),
        ("IMPRESSION: Acute SDH along the left convexity.", "en", "intracranial_haemorrhage"),
        ("Beurteilung: Akutes subdurales Hämatom rechts.", "de", "intracranial_haemorrhage"),
        ("Conclusie: passend bij een acuut herseninfarct links.", "nl", "acute_cerebral_infarct"),
        ("Beurteilung: Frischer Territorialinfarkt links.", "de", "acute_cerebral_infarct"),
        ("Beurteilung: Freie intraabdominelle Luft.", "de", "pneumoperitoneum"),
        ("IMPRESSION: Acute on chronic left subdural hematoma.", "en", "intracranial_haemorrhage"),
        (
            "Beurteilung: Akut-auf-chronisches Subduralhämatom links.",
            "de",
            "intracranial_haemorrhage",
        ),
        ("IMPRESSION: Segmental emboli in the right lower lobe.", "en", "pulmonary_embolism"),
        (
            "IMPRESSION: Stanford type A dissection to the iliac arteries.",
            "en",
            "aortic_dissection",
        ),
        ("Beurteilung: Thrombose der linken V. poplitea.", "de", "deep_vein_thrombosis"),
    ],
)
def test_critical_phrase_families(text: str, language: str, finding: str) -> None:
    assert [c.finding for c in _insights(text, language).critical] == [finding]


def test_restricted_diffusion_and_a_stable_patient_do_not_hide_a_finding() -> None:
    text = (
        "FINDINGS: Restricted diffusion and acute infarct in the left corona radiata.\n"
        "IMPRESSION: Segmental pulmonary emboli. The patient is hemodynamically stable."
    )
    assert {c.finding for c in _insights(text).critical} == {
        "acute_cerebral_infarct",
        "pulmonary_embolism",
    }


def test_a_report_that_opens_with_its_finding_has_no_title_line() -> None:
    text = (
        "Large right pneumothorax with complete collapse of the right lung and mild leftward "
        "shift of the mediastinum.\nSigned: J. Moore"
    )
    assert [c.finding for c in _insights(text).critical] == ["pneumothorax"]
    assert _insights("CTA CHEST PE PROTOCOL\nIMPRESSION: No embolism.").critical == ()


def test_a_communication_to_a_role_named_alone() -> None:
    found = _insights("Beurteilung: Fraktur. Kliniker informiert.", "de").communications
    assert [c.recipient for c in found] == ["Kliniker"]


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("IMPRESSION: Recommend multidisciplinary discussion.", "en", [("consultation", None)]),
        ("Beurteilung: Vorstellung im Tumorboard empfohlen.", "de", [("consultation", None)]),
        ("Beurteilung: Weitere Abklärung mittels PET-CT empfohlen.", "de", [("imaging", "PT")]),
        ("Beurteilung: Wir empfehlen eine MRT-gestützte Fusionsbiopsie.", "de", [("biopsy", None)]),
        ("IMPRESSION: Recall for diagnostic mammogram.", "en", [("imaging", "MG")]),
        ("IMPRESSION: Repeat CXR recommended.", "en", [("imaging", "CR")]),
        ("Conclusie: Aanvullend MRI lever ter karakterisering.", "nl", [("imaging", "MR")]),
        ("Beurteilung: Kontrolle mit Ultraschall empfohlen.", "de", [("imaging", "US")]),
        ("IMPRESSION: Tissue sampling may be considered.", "en", [("biopsy", None)]),
        (
            "Beurteilung: Stanzbiopsie links unter sonographischer Kontrolle empfohlen.",
            "de",
            [("biopsy", "US")],
        ),
    ],
)
def test_followup_phrase_families(
    text: str, language: str, expected: list[tuple[str, str | None]]
) -> None:
    assert [(f.kind, f.modality) for f in _insights(text, language).followups] == expected


def test_a_followup_without_its_exam_and_adjectival_intervals() -> None:
    (bare,) = _insights("Beurteilung: Kontrolle in 1 Jahr.", "de").followups
    assert (bare.kind, bare.modality, bare.due) == ("imaging", None, date(2026, 8, 31))
    (ranged,) = _insights("IMPRESSION: A 6-12 month follow-up CT is recommended.").followups
    assert (ranged.modality, ranged.due_start, ranged.due_end) == (
        "CT",
        date(2026, 2, 28),
        date(2026, 8, 31),
    )


def test_a_conditional_alternative_in_the_next_sentence() -> None:
    text = "Conclusie: Aanvullend MRI lever. Indien geen MRI mogelijk, een CT met contrast."
    found = [(f.modality, f.conditional) for f in _insights(text, "nl").followups]
    assert found == [("MR", False), ("CT", True)]


@pytest.mark.parametrize(
    ("text", "durations"),
    [
        ("at 6 and 12 months", ("P6M",)),
        ("Kontrolle in 3 Mon.", ("P3M",)),
        ("in sieben Tagen", ("P7D",)),
        ("6-monatige Kontrolle", ("P6M",)),
    ],
)
def test_more_interval_forms(text: str, durations: tuple[str, ...]) -> None:
    assert [i.durations for i in find_intervals(text)] == [durations]


def test_a_time_frame_alone_completes_the_previous_recommendation() -> None:
    (found,) = _insights("Advies: controle-CT. Over 3 maanden.", "nl").followups
    assert (found.modality, found.due) == ("CT", date(2025, 11, 30))


# --- the quick test before each scan (issue 20's cost): never hides a match


def _patterns() -> list[re.Pattern[str]]:
    patterns = [finding.pattern for finding in load_critical_list()]
    patterns += [pattern for _, pattern, _ in rads._PATTERNS]
    patterns += [pattern for _, pattern in followups._MODALITIES]
    patterns += [followups._TRIGGER, followups._TIME_WORD, followups._BIOPSY, followups._CONSULT]
    patterns += [communications._TRIGGER, timing._RANGE, timing._SINGLE, timing._ADJECTIVE]
    return patterns


def test_the_quick_test_never_hides_a_match() -> None:
    texts = [
        json.loads(line)["text"]
        for line in LABELLED.read_text("utf-8").splitlines()
        if line.strip()
    ]
    texts += ["PNEUMOTHORAX RECHTS. LUNGENARTERIENEMBOLIE. ÜBERWEISUNG. KONTROLLE IN 3 MONATEN."]
    texts += ["Kelvin \u212aontrolle, dotless \u0131ndicated, long \u017fuspected, İnfarct acute."]
    checked = 0
    for text in texts:
        doc = ReportText(text, None)
        for pattern in _patterns():
            if pattern.search(text):
                assert may_match(doc, pattern), (pattern.pattern[:60], text[:40])
                checked += 1
    assert checked > 500


def test_the_quick_test_skips_reports_without_the_words() -> None:
    doc = ReportText("Normal chest radiograph. Heart size normal.", "en")
    skipped = [p for p in _patterns() if not may_match(doc, p)]
    assert len(skipped) > len(_patterns()) // 2


def test_a_resolved_finding_does_not_hide_a_new_one_after_but() -> None:
    text = (
        "IMPRESSION: The left pneumothorax has resolved, but there is a new right pneumothorax.\n"
        "The known left pulmonary embolism is unchanged."
    )
    assert [c.finding for c in _insights(text).critical] == ["pneumothorax"]


def test_a_telegraphic_german_communication() -> None:
    (found,) = _insights("Beurteilung: SAB. Befund an Dr. Roth, 13:20 Uhr.", "de").communications
    assert (found.recipient, found.time) == ("Dr. Roth", "13:20 Uhr")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Breast composition: c. Heterogeneously dense.", [("BI-RADS density", "c", None)]),
        ("Densiteit: ACR-categorie c.", [("BI-RADS density", "c", None)]),
        ("Befund: Mammadichte: B.", [("BI-RADS density", "b", None)]),
        ("Composition: almost entirely fatty.", []),
        ("Knoten links, K-TIRADS 4 bzw. ACR TI-RADS 3.", [("TI-RADS", "TR3", "left")]),
        ("Nodule right, EU-TIRADS 4.", []),
    ],
)
def test_density_labels_and_non_acr_tirads(
    text: str, expected: list[tuple[str, str, str | None]]
) -> None:
    assert [(r.system, r.category, r.side) for r in _insights(text).rads] == expected
