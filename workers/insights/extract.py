"""The insights of one report by rules: RADS categories, critical results, communications,
follow-up recommendations, mismatches with the order and the patient
and the sizes of findings (`extract_insights`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mappings.insights.critical_list import CriticalFinding, load_critical_list
from mappings.insights.model import Insights
from mappings.report import Report
from workers.insights.communications import find_communications
from workers.insights.critical import find_critical
from workers.insights.followups import find_followups
from workers.insights.llm import with_model_insights
from workers.insights.mismatch import Patient, find_mismatches
from workers.insights.rads import find_rads
from workers.insights.sizes import find_sizes
from workers.insights.text import ReportText

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapter.settings import Settings
    from workers.extraction_engine import ExtractionEngine


@dataclass(frozen=True)
class InsightContext:
    """What the message says beside the text: the date due dates count from, the order and the
    patient's sex and birth date (the mismatch checks)."""

    report_date: date | None = None
    critical_findings: tuple[CriticalFinding, ...] | None = None
    """The critical list (None: the shipped default)."""
    exam: str | None = None
    """The order as the RIS names it (OBR-4 / DiagnosticReport.code)."""
    patient_sex: str | None = None
    birth_date: date | None = None


def extract_insights(report: Report, context: InsightContext | None = None) -> Insights:
    """Everything the rules find in `report` (never raises on odd text: finds nothing)."""
    context = context or InsightContext()
    doc = ReportText.of(report)
    findings = context.critical_findings or load_critical_list()
    return Insights(
        rads=find_rads(doc),
        critical=find_critical(doc, findings),
        communications=find_communications(doc),
        followups=find_followups(doc, context.report_date),
        mismatches=find_mismatches(
            doc,
            Patient(context.patient_sex, context.birth_date, context.exam, context.report_date),
        ),
        sizes=find_sizes(doc),
    )


def critical_list(path: Path | None) -> tuple[CriticalFinding, ...]:
    """The configured critical list (`RADBRIDGE_CRITICAL_FINDINGS`), else the shipped one."""
    return load_critical_list(path) if path is not None else load_critical_list()


def insights_of(
    report: Report, settings: Settings, engine: Callable[[], ExtractionEngine] | None = None
) -> Insights:
    """The insights of one report in the per-message use case: due dates count from the
    report's observation time (in the source zone when naive), else today. With a model stage
    (llm, hybrid), `engine` and RADBRIDGE_INSIGHTS_MODEL on, the model's checked insights are
    merged in (`workers.insights.llm`: the rules win)."""
    moment = report.observation_time
    if moment is None:
        report_date = datetime.now(UTC).astimezone(settings.zone()).date()
    else:
        report_date = (
            moment.date() if moment.tzinfo is None else moment.astimezone(settings.zone()).date()
        )
    procedure = report.procedure
    context = InsightContext(
        report_date,
        critical_list(settings.critical_findings),
        exam=(procedure.display or procedure.code) if procedure else None,
        patient_sex=report.patient_sex,
        birth_date=report.birth_date,
    )
    rules = extract_insights(report, context)
    if engine is None or settings.stage == "rules" or not settings.insights_model:
        return rules
    findings = context.critical_findings or load_critical_list()
    return with_model_insights(
        report, rules, engine(), findings, report_date, max_tokens=settings.max_tokens
    )
