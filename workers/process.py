"""The per-message use case, written once: input -> Reports -> route -> stages -> timeline -> Bundle.

    raw bytes + content type ──(mappings.inbound)──┐
                                                   ├─> Reports ─> route (mappings.routing.decide)
    Reports (files, records, labelled cases) ──────┘     ─> stages (workers.stages.run_stage,
                                                            any ExtractionEngine)
                                                         ─> timeline links ─> Bundle ─> ProcessedReports

The Celery task (`workers.tasks`), `radbridge extract` (`app.cli`, `app.backfill`),
`radbridge eval` (`conformance.evaluate`) and replay's expected routing (`conformance.replay`)
all go through here. The callers differ only in what they pass:

- the timeline: `stored_links` (the worker: the patient's earlier Observations in the store,
  asked per result as it is built) or, when None, `mappings.timeline.link_reports` over the
  reports of this call (the CLI: the reports of one run);
- `on_result`: called with each result as soon as its Bundle exists (the worker stores it then,
  so the next report of the same patient links to it);
- `reject_failed`: an extraction that produced no valid output (`ExtractionError`, e.g. a report
  longer than the model's context) becomes a typed rejection of that report and the others go
  on (offline); False raises it (the worker retries the message);
- `with_bundles`: False for evaluation (extraction records only).

A rejection (`Rejected`) carries its HL7 table 0357 code and its OperationOutcome issue code. A
Bundle that cannot be built or fails its output check (`mappings.output_check`) never leaves:
its report is rejected `invalid_output` (whatever `reject_failed` says: building it again gives
the same Bundle), with the check's message, which names the element and never its value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from adapter.settings import Settings
from mappings.errors import FhirMappingError, HL7ErrorCode, MessageRejected, RadbridgeError
from mappings.fhir_out import build_bundle
from mappings.inbound import parse_message
from mappings.insights.fhir import add_insights
from mappings.insights.model import Insights
from mappings.insights.report_only import report_only_template
from mappings.output_check import check_bundle
from mappings.report import Extraction, Report, Stage
from mappings.routing import RouteReason, Routing, decide
from mappings.template import Template
from mappings.timeline import TimelineEntry, link_reports
from workers.errors import ExtractionError
from workers.extraction_engine import ExtractionEngine
from workers.insights.extract import critical_list, insights_of
from workers.rules_stage import RULES_MODEL
from workers.stages import run_stage

EngineFactory = Callable[[], ExtractionEngine]
StoredLinks = Callable[[TimelineEntry], dict[str, str]]
NO_TEMPLATE = "no_template"
EXTRACTION_FAILED = "extraction_failed"
INVALID_OUTPUT = "invalid_output"


@dataclass(frozen=True)
class Rejected:
    """A typed rejection: a whole message (report None) or one report, with its codes."""

    reason: str
    detail: str
    hl7_code: HL7ErrorCode | None  # None where no 0357 condition applies (no template)
    issue_code: str
    report: Report | None = None

    @classmethod
    def of(cls, exc: RadbridgeError, reason: str, report: Report | None = None) -> Rejected:
        """The rejection an error stands for (its message never holds report text)."""
        code = exc.code if isinstance(exc, MessageRejected) else exc.hl7_code
        return cls(reason, str(exc), code, exc.issue_code, report)


@dataclass(frozen=True)
class Result:
    """One report under one template: its extraction record and (unless evaluating) its Bundle."""

    report: Report
    template: Template
    extraction: Extraction
    route: RouteReason | None
    name: str
    seconds: float
    bundle: dict[str, Any] | None = None
    insights: Insights | None = None
    """The report-level insights (issue 20), the same for every template of the report."""
    no_template: str | None = None
    """Why no template applies, for the result of a report under `report_only`."""

    def record(self) -> dict[str, Any]:
        """The extraction record the store keeps (the extraction, why it was routed and the
        report's insights)."""
        routing = self.route.as_dict() if self.route else None
        record = {**self.extraction.model_dump(mode="json"), "routing": routing}
        if self.insights is not None:
            record["insights"] = self.insights.model_dump(mode="json")
        if self.no_template is not None:
            record[NO_TEMPLATE] = self.no_template
        return record


@dataclass
class ProcessedReports:
    """What one call produced: results in input order, and rejections."""

    results: list[Result] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def message_rejected(self) -> Rejected | None:
        """The rejection of the whole message (it could not be parsed), if any."""
        return next((r for r in self.rejected if r.report is None), None)


def route(report: Report, templates: Sequence[Template], *, explicit: bool = False) -> Routing:
    """The templates for a report (`mappings.routing.decide`; all of them when `explicit`)."""
    return decide(report, list(templates), explicit=explicit)


def _name(report: Report, template: Template, chosen: int) -> str:
    return report.report_id if chosen == 1 else f"{report.report_id}-{template.id}"


def _finish(
    result: Result,
    settings: Settings,
    derived_from: dict[str, str],
    started: float,
    outcome: ProcessedReports,
) -> Result | None:
    """`result` with its Bundle (the time building it took added to its seconds), added to
    `outcome`; None when its Bundle cannot be built or fails the output check: the report is
    then rejected (INVALID_OUTPUT) and nothing of it leaves."""
    try:
        bundle = build_bundle(
            result.report,
            result.extraction,
            result.template,
            observation_status=settings.observation_status,
            default_tz=settings.zone(),
            derived_from=derived_from,
            check=False,
        )
        if result.insights is not None:
            bundle = add_insights(
                bundle,
                result.report,
                result.insights,
                findings=critical_list(settings.critical_findings),
                observation_status=settings.observation_status,
                created=result.extraction.created,
                check=False,
            )
        check_bundle(bundle)  # once, complete: an invalid Bundle never leaves
    except FhirMappingError as exc:
        outcome.rejected.append(Rejected.of(exc, INVALID_OUTPUT, result.report))
        return None
    finished = replace(
        result, seconds=result.seconds + time.perf_counter() - started, bundle=bundle
    )
    outcome.results.append(finished)
    return finished


def _report_only(report: Report, insights: Insights, detail: str) -> Result:
    """The result of a report no template applies to: no values, its DiagnosticReport and
    insights (`mappings.insights.report_only`); its record says `no_template`."""
    started = time.perf_counter()
    template = report_only_template()
    extraction = Extraction(
        report_id=report.report_id,
        template_id=template.id,
        template_version=template.version,
        model=RULES_MODEL,
        stage=Stage.RULES,
        values=(),
        created=datetime.now(UTC),
    )
    seconds = time.perf_counter() - started
    return Result(
        report, template, extraction, None, report.report_id, seconds, None, insights, detail
    )


def process_reports(
    reports: Sequence[Report],
    templates: Sequence[Template],
    settings: Settings,
    engine: EngineFactory,
    *,
    explicit: bool = False,
    stored_links: StoredLinks | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_routing: Callable[[Report, Routing], None] | None = None,
    on_report: Callable[[Report], None] | None = None,
    reject_failed: bool = False,
    with_bundles: bool = True,
) -> ProcessedReports:
    """Route each report, run the configured stage for each chosen template, link the timeline
    and build the Bundles (see the module docstring for what each option changes)."""
    outcome = ProcessedReports()
    pending: list[Result] = []
    for report in reports:
        routing = route(report, templates, explicit=explicit)
        if on_routing is not None:
            on_routing(report, routing)
        # the model's insights only where they are delivered (an evaluation scores templates)
        insights = insights_of(report, settings, engine if with_bundles else None)
        if not routing.chosen:
            detail = f"no template applies to this report: {routing.detail()}"
            outcome.rejected.append(Rejected(NO_TEMPLATE, detail, None, "not-supported", report))
            only = _report_only(report, insights, detail)
            if with_bundles and stored_links is not None:
                finished = _finish(only, settings, {}, time.perf_counter(), outcome)
                if finished is not None and on_result is not None:
                    on_result(finished)
            else:
                pending.append(only)
        for template in routing.chosen:
            started = time.perf_counter()
            try:
                extraction = run_stage(report, template, settings, engine)
            except ExtractionError as exc:
                if not reject_failed:
                    raise
                outcome.rejected.append(Rejected.of(exc, EXTRACTION_FAILED, report))
                continue
            name = _name(report, template, len(routing.chosen))
            result = Result(
                report,
                template,
                extraction,
                routing.reason_for(template.id),
                name,
                time.perf_counter() - started,
                insights=insights,
            )
            if with_bundles and stored_links is not None:
                links = stored_links(TimelineEntry(report, extraction, template))
                finished = _finish(result, settings, links, time.perf_counter(), outcome)
                if finished is not None and on_result is not None:
                    on_result(finished)
            else:
                pending.append(result)
        if on_report is not None:
            on_report(report)
    if not pending:
        return outcome
    if not with_bundles:
        outcome.results.extend(pending)
        return outcome
    # the timeline of this call: a finding in a patient's later report derives from the same
    # finding in an earlier one
    entries = [TimelineEntry(r.report, r.extraction, r.template) for r in pending]
    for result, derived_from in zip(pending, link_reports(entries, settings.zone()), strict=True):
        finished = _finish(result, settings, derived_from, time.perf_counter(), outcome)
        if finished is not None and on_result is not None:
            on_result(finished)
    return outcome


def process_message(
    raw: bytes,
    content_type: str,
    templates: Sequence[Template],
    settings: Settings,
    engine: EngineFactory,
    **options: Any,
) -> ProcessedReports:
    """One stored message: parse it (`mappings.inbound.parse_message`), then `process_reports`
    with `options`. A message that cannot be used is an ProcessedReports with one message rejection."""
    try:
        reports = parse_message(
            raw,
            content_type,
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
    except MessageRejected as exc:
        return ProcessedReports(rejected=[Rejected.of(exc, exc.reason)])
    return process_reports(reports, templates, settings, engine, **options)
