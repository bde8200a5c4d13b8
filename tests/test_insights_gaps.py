"""Gaps the audit of issue 20 found in the insights step: a Communication's `sent` from a stated
date and time, a conditional recommendation without a recommending verb ("MRI knee if symptoms
persist."), and an interval next to a follow-up exam that does not time a biopsy before it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from adapter.settings import Settings
from mappings.inbound import report_from_record
from mappings.template import load_builtin_templates
from workers.insights.extract import InsightContext, extract_insights
from workers.process import process_reports

REPORT_DATE = date(2025, 3, 10)


def _insights(text: str, language: str = "en") -> object:
    report = report_from_record(
        {"id": "g", "text": text, "language": language}, default_language=language
    )
    return extract_insights(report, InsightContext(report_date=REPORT_DATE))


@pytest.mark.parametrize(
    ("text", "language", "sent"),
    [
        (
            "IMPRESSION: PE. Communicated to Dr. Jansen by telephone on 2025-03-10 at 09:40.",
            "en",
            datetime(2025, 3, 10, 9, 40),
        ),
        (
            "IMPRESSION: PE. Discussed with Dr. Smith at 9:40 pm on 10 March 2025.",
            "en",
            datetime(2025, 3, 10, 21, 40),
        ),
        (
            "CONCLUSIE: Longembolie. Besproken met dr. De Vries op 10-03-2025 om 09:40 uur.",
            "nl",
            datetime(2025, 3, 10, 9, 40),
        ),
        (
            "BEURTEILUNG: LAE. Befund am 10.03.2025 um 09:40 Uhr an Dr. Weber telefonisch "
            "übermittelt.",
            "de",
            datetime(2025, 3, 10, 9, 40),
        ),
        # a clock time alone, or a date that reads two ways in English: no moment
        ("IMPRESSION: PE. Communicated to Dr. Jansen at 09:40.", "en", None),
        ("IMPRESSION: PE. Communicated to Dr. Jansen at 09:40 on 02/03/2025.", "en", None),
    ],
)
def test_a_communication_has_the_moment_it_states(
    text: str, language: str, sent: datetime | None
) -> None:
    (communication,) = _insights(text, language).communications  # type: ignore[attr-defined]
    assert communication.sent == sent


@pytest.mark.parametrize(
    ("text", "language", "modality"),
    [
        ("XR KNEE LEFT\nIMPRESSION: Mild OA. MRI knee if symptoms persist.", "en", "MR"),
        ("XR ENKEL\nCONCLUSIE: Geen fractuur. CT bij aanhoudende klachten.", "nl", "CT"),
        ("RÖNTGEN SCHULTER\nBEURTEILUNG: Keine Fraktur. MRT bei Beschwerdepersistenz.", "de", "MR"),
    ],
)
def test_a_conditional_exam_without_a_verb_is_a_conditional_recommendation(
    text: str, language: str, modality: str
) -> None:
    (followup,) = _insights(text, language).followups  # type: ignore[attr-defined]
    assert (followup.modality, followup.conditional) == (modality, True)


@pytest.mark.parametrize(
    "text",
    [
        "XR KNEE\nIMPRESSION: Joint effusion, if any, is small.",
        "CT HEAD\nIMPRESSION: MRI was performed if symptoms persisted last year.",
    ],
)
def test_a_finding_with_a_condition_is_no_recommendation(text: str) -> None:
    assert _insights(text).followups == ()  # type: ignore[attr-defined]


def test_an_interval_next_to_a_follow_up_exam_does_not_time_the_biopsy_before_it() -> None:
    followups = _insights(  # type: ignore[attr-defined]
        "US THYROID\nIMPRESSION: Recommend fine-needle aspiration and follow-up ultrasound "
        "in 12 months."
    ).followups
    assert [(f.kind, f.due) for f in followups] == [
        ("biopsy", None),
        ("imaging", date(2026, 3, 10)),
    ]


@pytest.mark.parametrize(
    ("text", "dues"),
    [
        # two exams share the interval; a biopsy next to its interval takes it
        ("IMPRESSION: Recommend CT and MRI in 6 months.", [date(2025, 9, 10)] * 2),
        ("IMPRESSION: Recommend repeat biopsy in 6 months.", [date(2025, 9, 10)]),
    ],
)
def test_an_interval_still_times_the_actions_it_belongs_to(text: str, dues: list[date]) -> None:
    followups = _insights(text).followups  # type: ignore[attr-defined]
    assert [f.due for f in followups] == dues


def _communication_resource(text: str) -> dict[str, Any]:
    report = report_from_record(
        {"id": "g", "text": text, "date": "2025-03-10T09:00:00", "language": "en"},
        default_language="en",
    )
    outcome = process_reports(
        [report], list(load_builtin_templates().values()), Settings(stage="rules"), _no_engine
    )
    (result,) = outcome.results
    assert result.bundle is not None
    (resource,) = [
        e["resource"]
        for e in result.bundle["entry"]
        if e["resource"]["resourceType"] == "Communication"
    ]
    return dict(resource)


def _no_engine() -> Any:
    raise AssertionError("the rules stage needs no engine")


def test_sent_has_the_offset_of_the_reports_time_and_only_near_it() -> None:
    near = _communication_resource(
        "CT CHEST\nIMPRESSION: PE. Communicated to Dr. Jansen on 2025-03-10 at 09:40."
    )
    assert near["sent"].startswith("2025-03-10T09:40:00")
    # a moment weeks from the report's: its offset may differ (summer time), so no `sent`
    far = _communication_resource(
        "CT CHEST\nIMPRESSION: PE. Communicated to Dr. Jansen on 2025-04-10 at 09:40."
    )
    assert "sent" not in far and far["note"][0]["text"].endswith("09:40")
