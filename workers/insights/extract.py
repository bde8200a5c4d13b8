"""The insights of one report by rules: RADS categories, critical results, communications and
follow-up recommendations (`extract_insights`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mappings.insights.critical_list import CriticalFinding, load_critical_list
from mappings.insights.model import Insights
from mappings.report import Report
from workers.insights.communications import find_communications
from workers.insights.critical import find_critical
from workers.insights.followups import find_followups
from workers.insights.rads import find_rads
from workers.insights.text import ReportText


@dataclass(frozen=True)
class InsightContext:
    """What the message says beside the text: the date due dates count from."""

    report_date: date | None = None
    critical_findings: tuple[CriticalFinding, ...] | None = None
    """The critical list (None: the shipped default)."""


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
    )
