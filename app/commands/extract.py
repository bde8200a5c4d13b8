"""`radbridge extract`: report files (HL7v2, FHIR) and resumable CSV/JSONL record tables through
the one use case (`workers.process`, `app.backfill`) to Bundles, a summary table and an
optional research table."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from adapter.errors import InputError
from adapter.inputs import (
    REJECTED_FILE,
    Record,
    Rejection,
    SourcedReport,
    collect_files,
    is_record_file,
    read_file,
    read_records,
)
from adapter.settings import Settings
from app.commands.common import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    cli_settings,
    err,
    fail,
    out,
    resolve_templates,
)
from mappings.errors import RadbridgeError, TemplateError

if TYPE_CHECKING:
    from app.checkpoint import Checkpoint
    from mappings.report import Report
    from mappings.routing import Routing
    from mappings.template import Template
    from workers.process import Result


@dataclass
class ExtractSummary:
    """What `radbridge extract` did, for the closing table."""

    reports: int = 0
    bundles: int = 0
    observations: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    decode_seconds: float = 0.0

    def table(self) -> Table:
        """The closing summary table."""
        table = Table(title="radbridge extract", show_header=True)
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("reports read", str(self.reports))
        table.add_row("bundles written", str(self.bundles))
        table.add_row("observations", str(self.observations))
        for reason, count in sorted(self.rejected.items()):
            table.add_row(f"rejected: {reason}", str(count))
        median = statistics.median(self.seconds) if self.seconds else 0.0
        table.add_row("median seconds / report", f"{median:.2f}")
        rate = self.completion_tokens / self.decode_seconds if self.decode_seconds else 0.0
        table.add_row("tokens / s (output)", f"{rate:.1f}")
        return table


def _read_inputs(
    files: list[Path], settings: Settings
) -> tuple[list[SourcedReport], list[Rejection]]:
    reports: list[SourcedReport] = []
    rejections: list[Rejection] = []
    for path in files:
        file_reports, file_rejections = read_file(
            path,
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
        reports.extend(file_reports)
        rejections.extend(file_rejections)
    return reports, rejections


def extract(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="files or folders: HL7v2, MLLP, scout .log, FHIR JSON; or CSV/JSONL tables of "
            "reports (id, text, optional language, modality, date, template), resumable"
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="output folder for <id>.json Bundles")],
    template: Annotated[
        str | None,
        typer.Option(help="template id or a template YAML file; default: route each report"),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="rules | llm | hybrid (default from settings)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="GGUF model file (RADBRIDGE_MODEL_PATH)")
    ] = None,
    explain_routing: Annotated[
        bool,
        typer.Option(
            "--explain-routing",
            help="print one line per report: id, template (or no_template), rule, detail",
        ),
    ] = False,
    table: Annotated[
        Path | None,
        typer.Option(
            "--table",
            help="also write one row per report, one column per variable, and its codebook "
            "beside it (OUT.codebook.csv): out.csv, or out.parquet (the parquet extra)",
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="CSV/JSONL: drop the output folder's checkpoint and its Bundles, do every "
            "record again (with these options)",
        ),
    ] = False,
    retry_rejected: Annotated[
        bool,
        typer.Option(
            "--retry-rejected",
            help="CSV/JSONL: do the records an earlier run rejected again (with these options, "
            "also when they differ); keep the accepted ones",
        ),
    ] = False,
) -> None:
    """Extract coded FHIR transaction Bundles from report files, offline."""
    from app.research_table import check_table_path

    settings = cli_settings(model_path=model, stage=stage)
    if table is not None and (problem := check_table_path(table)) is not None:
        raise fail(problem)
    if restart and retry_rejected:
        raise fail("--restart and --retry-rejected exclude each other")
    try:
        templates = resolve_templates(template, settings.templates_dir)
    except TemplateError as exc:
        raise fail(str(exc)) from None
    try:
        files = collect_files(inputs)
        record_files = [path for path in files if is_record_file(path)]
        sourced, rejections = _read_inputs(
            [path for path in files if not is_record_file(path)], settings
        )
        records = [record for path in record_files for record in read_records(path)]
    except InputError as exc:
        raise fail(str(exc)) from None
    if not files:
        raise fail("no input files found")
    if not sourced and not rejections and not records:
        raise fail("nothing readable in the input")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint: Checkpoint | None = None
    if records:  # before any work: a checkpoint written with other options is refused now
        from app.backfill import open_checkpoint
        from app.checkpoint import CheckpointMismatch, Resume

        resume = (
            Resume.RESTART
            if restart
            else Resume.RETRY_REJECTED
            if retry_rejected
            else Resume.REFUSE
        )
        try:
            checkpoint = open_checkpoint(out_dir, templates, template is not None, settings, resume)
        except CheckpointMismatch as exc:
            raise fail(str(exc)) from None
        if checkpoint.adopted:
            err.print(f"{checkpoint.path} recorded no options: it now records these")
    summary = ExtractSummary(reports=len(sourced) + len(records))
    rows: list[dict[str, Any]] = []
    interrupted = False
    try:
        rows += _extract_all(
            sourced, rejections, templates, template is not None, settings, out_dir, summary,
            explain_routing,
        )  # fmt: skip
        if checkpoint is not None:
            interrupted = _backfill(
                records, templates, template is not None, settings, out_dir, summary, rows,
                rejections, checkpoint,
            )  # fmt: skip
    except RadbridgeError as exc:
        raise fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
    with (out_dir / REJECTED_FILE).open("w", encoding="utf-8") as fh:
        for rejection in rejections:
            fh.write(rejection.to_json() + "\n")
            summary.rejected[rejection.reason] += 1
    if table is not None:
        from app.research_table import write_table
        from mappings.template import load_templates

        known = {**load_templates(settings.templates_dir), **templates}
        codebook = write_table(table, rows, known)
        err.print(f"wrote {table} ({len(rows)} rows) and its codebook {codebook}")
    out.print(summary.table())
    if interrupted:
        err.print("interrupted: run the same command again to continue where it stopped")
        raise typer.Exit(EXIT_INTERRUPTED)


def _print_routing(report: Report, routing: Routing) -> None:
    """One line per chosen template (or one no_template line): id, template, rule, detail."""
    if not routing.reasons:
        typer.echo(f"{report.report_id}\tno_template\t-\t{routing.detail()}")
    for reason in routing.reasons:
        typer.echo(f"{report.report_id}\t{reason.template}\t{reason.rule}\t{reason.detail}")


def _count(summary: ExtractSummary, result: Result) -> None:
    """Add one written Bundle to the summary."""
    assert result.bundle is not None
    summary.seconds.append(result.seconds)
    summary.bundles += 1
    summary.completion_tokens += result.extraction.timings.completion_tokens
    summary.decode_seconds += result.extraction.timings.seconds
    summary.observations += sum(
        1
        for item in result.bundle.get("entry", [])
        if item.get("resource", {}).get("resourceType") == "Observation"
    )


def _extract_all(
    sourced: list[SourcedReport],
    rejections: list[Rejection],
    templates: dict[str, Template],
    forced: bool,
    settings: Settings,
    out_dir: Path,
    summary: ExtractSummary,
    explain_routing: bool = False,
) -> list[dict[str, Any]]:
    """HL7v2/FHIR reports through the one use case (`workers.process`), the timeline linked
    across the run; a report that gets no valid extraction (e.g. longer than the model's
    context) is a rejection and the others are written. Returns the table rows."""
    from app.backfill import write_json
    from app.progress import progress as progress_on
    from app.research_table import table_row
    from workers.engine_registry import get_engine
    from workers.process import process_reports

    if not sourced:
        return []
    origin = {id(item.report): item for item in sourced}
    with progress_on(err) as start:
        advance = start("extracting", len(sourced))
        outcome = process_reports(
            [item.report for item in sourced],
            list(templates.values()),
            settings,
            lambda: get_engine(settings),
            explicit=forced,
            on_routing=_print_routing if explain_routing else None,
            on_report=lambda _: advance(),
            reject_failed=True,
        )
    for rejected in outcome.rejected:
        assert rejected.report is not None
        item = origin[id(rejected.report)]
        code = rejected.hl7_code.value if rejected.hl7_code else None
        rejections.append(
            Rejection(
                item.source,
                item.frame,
                item.report.message_control_id,
                rejected.reason,
                rejected.detail,
                code,
            )
        )
    by_report: dict[int, list[Result]] = {}
    for result in outcome.results:
        assert result.bundle is not None
        write_json(out_dir / f"{result.name}.json", result.bundle)
        _count(summary, result)
        by_report.setdefault(id(result.report), []).append(result)
    return [
        table_row(item.report.report_id, by_report[id(item.report)])
        for item in sourced
        if id(item.report) in by_report
    ]


def _backfill(
    records: list[Record],
    templates: dict[str, Template],
    forced: bool,
    settings: Settings,
    out_dir: Path,
    summary: ExtractSummary,
    rows: list[dict[str, Any]],
    rejections: list[Rejection],
    checkpoint: Checkpoint,
) -> bool:
    """CSV/JSONL records through `app.backfill` (resumable); adds every run's rows and
    rejections (from the checkpoint); returns whether Ctrl-C stopped it."""
    from app.backfill import run_backfill
    from app.progress import progress as progress_on
    from mappings.template import load_templates
    from workers.engine_registry import get_engine

    with progress_on(err) as start:
        pending = [r for r in records if not checkpoint.done(str(r.data.get("id") or "").strip())]
        advance = start("extracting records", len(pending))  # those done before are skipped
        run = run_backfill(
            records,
            templates,
            forced,
            settings,
            lambda: get_engine(settings),
            out_dir,
            builtin=lambda: load_templates(settings.templates_dir),
            on_done=lambda _: advance(),
            checkpoint=checkpoint,
        )
    for result in run.results:
        _count(summary, result)
    for entry in [*run.entries, *run.unkeyed]:
        rejections.extend(Rejection(**line) for line in entry.get("rejected", []))
        if entry.get("row"):
            rows.append(entry["row"])
    if run.skipped:
        err.print(f"{run.skipped} record(s) already done (in {checkpoint.path}): skipped")
    if run.retried:
        err.print(f"{run.retried} record(s) rejected before: done again")
    return run.interrupted
