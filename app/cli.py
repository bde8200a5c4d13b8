"""The `radbridge` command line: the composition root.

Commands import `workers` and `conformance` lazily inside their bodies, so a command loads only
what it runs (the model engine, the validators). Exit codes: 0 = input read (rejections are normal),
2 = bad options or nothing readable, 1 = internal error, 130 = a resumable `extract` stopped by
Ctrl-C (the same command continues it).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapter.errors import ConfigError, InputError
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
from adapter.settings import Settings, load_settings
from app.users_cli import users_app as _users_app
from mappings.errors import RadbridgeError, TemplateError

if TYPE_CHECKING:
    from app.checkpoint import Checkpoint
    from mappings.report import Report
    from mappings.routing import Routing
    from mappings.template import Template
    from workers.process import Result

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C during a resumable extract: run the same command again

log = logging.getLogger("radbridge.cli")
app = typer.Typer(
    name="radbridge",
    help="Radiology reports (HL7v2 / FHIR) -> coded FHIR R4 Observations with a local model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _serving_settings() -> Settings:
    """Settings for a command that serves (`serve`, `worker`): every configuration problem is
    checked here, once per command, and all are listed before refusing to start; offline
    commands (extract, validate, eval, templates) never need an API key."""
    from adapter.config_check import check_config

    settings, problems = check_config()
    errors = [problem.message for problem in problems if problem.severity == "error"]
    for problem in problems:
        if problem.severity == "warning":
            log.warning("%s", problem.message)
    if errors or settings is None:
        for message in errors:
            err.print(f"[bold red]error:[/] {message}")
        err.print(f"{len(errors)} configuration error(s): not started (radbridge check-config)")
        raise typer.Exit(EXIT_USAGE)
    if "log_level" in settings.model_fields_set:  # else the WARNING of main() stands
        logging.getLogger().setLevel(settings.log_level.upper())
    return settings


@app.command("check-config")
def check_config_command() -> None:
    """List every configuration problem at once (RADBRIDGE_* variables, files they name,
    production rules), one per line: `error|warning<TAB>problem`. Exit 2 on an error; `serve`
    and `worker` run the same check before they start."""
    from adapter.config_check import check_config

    settings, problems = check_config()
    for problem in problems:
        sys.stdout.write(f"{problem.severity}\t{problem.message}\n")
    errors = sum(1 for problem in problems if problem.severity == "error")
    env = settings.env.value if settings is not None else "unknown"
    err.print(f"{env}: {errors} error(s), {len(problems) - errors} warning(s)")
    if errors:
        raise typer.Exit(EXIT_USAGE)


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


def _resolve_templates(template_id: str | None, folder: Path | None = None) -> dict[str, Template]:
    """All templates (built-in and those of `folder`, RADBRIDGE_TEMPLATES_DIR), one by id, one
    from a YAML file (a path ending .yaml/.yml), or one imported from an llm_extractinator task
    file (a path ending .json)."""
    from mappings.template import get_template, load_template, load_templates

    if template_id is None:
        return load_templates(folder)
    if Path(template_id).suffix.lower() in (".yaml", ".yml"):
        loaded = load_template(Path(template_id))
        return {loaded.id: loaded}
    if Path(template_id).suffix.lower() == ".json":
        from mappings.extractinator import load_task

        imported = load_task(Path(template_id)).template
        return {imported.id: imported}
    return {template_id: get_template(template_id, folder)}


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


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command()
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

    settings = _settings(model_path=model, stage=stage)
    if table is not None and (problem := check_table_path(table)) is not None:
        raise _fail(problem)
    if restart and retry_rejected:
        raise _fail("--restart and --retry-rejected exclude each other")
    try:
        templates = _resolve_templates(template, settings.templates_dir)
    except TemplateError as exc:
        raise _fail(str(exc)) from None
    try:
        files = collect_files(inputs)
        record_files = [path for path in files if is_record_file(path)]
        sourced, rejections = _read_inputs(
            [path for path in files if not is_record_file(path)], settings
        )
        records = [record for path in record_files for record in read_records(path)]
    except InputError as exc:
        raise _fail(str(exc)) from None
    if not files:
        raise _fail("no input files found")
    if not sourced and not rejections and not records:
        raise _fail("nothing readable in the input")
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
            raise _fail(str(exc)) from None
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
        raise _fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
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


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Bundles or resources (files or folders)")],
) -> None:
    """Validate FHIR R4 JSON: R4B models, the official R4 JSON schema, project rules."""
    from conformance.errors import ConformanceError
    from conformance.validate import format_problem, validate_paths
    from mappings.template import load_templates

    missing = [p for p in paths if not p.exists()]
    if missing:
        raise _fail(f"{missing[0]}: no such file or folder")
    settings = _settings()
    try:
        templates = list(load_templates(settings.templates_dir).values())
        problems = validate_paths(paths, templates=templates)
    except (ConformanceError, TemplateError) as exc:
        raise _fail(str(exc)) from None
    for problem in problems:
        sys.stdout.write(format_problem(problem) + "\n")
    errors = sum(1 for p in problems if p.severity == "error")
    err.print(f"{len(problems)} problem(s), {errors} error(s)")
    if errors:
        raise typer.Exit(EXIT_INTERNAL)


@app.command()
def show(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Bundles written by `radbridge extract`")
    ] = None,
    message: Annotated[
        int | None,
        typer.Option("--message", "-m", help="a stored message (job) id: its delivery states"),
    ] = None,
) -> None:
    """Print the coded Observations of Bundles as a table, or (--message) where a stored
    message's results stand at each destination."""
    if message is not None:
        _show_deliveries(message)
        return
    if not paths:
        raise _fail("give Bundle files or --message ID")
    try:
        files = [p for p in collect_files(paths) if p.suffix == ".json"]
    except InputError as exc:
        raise _fail(str(exc)) from None
    for path in files:
        bundle = json.loads(path.read_text("utf-8"))
        table = Table(title=path.name)
        for column in ("code", "value", "body site", "evidence"):
            table.add_column(column)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") != "Observation":
                continue
            table.add_row(
                _concept_text(resource.get("code")),
                _observation_value_text(resource),
                _concept_text(resource.get("bodySite") or {}),
                _evidence_text(resource),
            )
        out.print(table)
        insights = _insight_rows(bundle)
        if insights:
            found = Table(title=f"{path.name}: insights")
            for column in ("resource", "what", "detail", "evidence"):
                found.add_column(column)
            for row in insights:
                found.add_row(*row)
            out.print(found)


def _insight_rows(bundle: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One row per follow-up (ServiceRequest), critical result (Flag) and communication."""
    rows = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        kind = resource.get("resourceType")
        if kind == "ServiceRequest":
            period = resource.get("occurrencePeriod") or {}
            when = resource.get("occurrenceDateTime") or "–".join(str(v) for v in period.values())
            detail = f"due {when}" if when else "no time frame"
            detail += ", conditional" if resource.get("asNeededBoolean") else ""
            what = _concept_text(resource.get("code"))
        elif kind == "Flag":
            what, detail = _concept_text(resource.get("code")), str(resource.get("status"))
        elif kind == "Communication":
            names = ", ".join(str(r.get("display")) for r in resource.get("recipient", []))
            what, detail = (f"to {names}" if names else "communicated"), ""
        else:
            continue
        rows.append((str(kind), what, detail, _evidence_text(resource)))
    return rows


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _show_deliveries(message_id: int) -> None:
    """The message's state and each delivery of its Bundles, per destination."""
    from adapter import destinations
    from adapter.store import Store, shown_delivery_state

    settings = _settings()
    store = Store.open(settings)
    row = store.get_message(message_id)
    if row is None:
        raise _fail(f"no message {message_id}")
    out.print(f"message {message_id}: {row.state}" + (f" ({row.reason})" if row.reason else ""))
    table = Table(title=f"deliveries of message {message_id}")
    for column in ("bundle", "destination", "state", "attempts", "next attempt", "failing since",
                   "reason"):  # fmt: skip
        table.add_column(column)
    records = store.delivery_states(message_id)
    for record in records:
        state = str(record["state"])
        table.add_row(
            str(record["bundle_id"])[:8],
            str(record["target"]),
            shown_delivery_state(state),
            str(record["attempts"]),
            _when(record["next_attempt_at"]) if state == "retry" else "",
            _when(record["failing_since"]),
            str(record["reason"] or ""),
        )
    out.print(table)
    recorded = {str(r["target"]) for r in records}
    for destination in destinations.bundle_destinations(settings):
        if destination.name not in recorded and store.bundles_of_message(message_id):
            out.print(f"{destination.name}: nothing recorded yet (queued for reconcile)")


def _observation_value_text(observation: dict[str, Any]) -> str:
    """The Observation's value: a concept, an integer (scale), or a quantity with its unit;
    a qualifier component is appended."""
    if "valueInteger" in observation:
        text = str(observation["valueInteger"])
    elif "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        text = f"{quantity.get('value')} {quantity.get('unit') or quantity.get('code') or ''}"
    else:
        text = _concept_text(observation.get("valueCodeableConcept"))
    for component in observation.get("component") or []:
        text += (
            f"; {_concept_text(component.get('code'))}: "
            f"{_concept_text(component.get('valueCodeableConcept'))}"
        )
    return text.strip()


def _concept_text(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    codings = concept.get("coding") or []
    if codings:
        first = codings[0]
        system = str(first.get("system", "")).rsplit("/", 1)[-1]
        return f"{first.get('display', '')} ({system} {first.get('code', '')})"
    return str(concept.get("text", ""))


def _evidence_text(resource: dict[str, Any]) -> str:
    from mappings.review import evidence

    return str((evidence(resource).get("quote") or [""])[0] or "")


@app.command()
def serve(
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker", help="also run a worker (off when workers run elsewhere)"
        ),
    ] = True,
) -> None:
    """Run the service: HTTP API, MLLP listener and a worker (embedded Redis when none is set)."""
    import asyncio

    from app.serve import run_services

    settings = _serving_settings()
    try:
        asyncio.run(run_services(settings, with_worker=worker))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def worker(
    beat: Annotated[bool, typer.Option(help="also schedule the periodic reconcile task")] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="worker processes (default RADBRIDGE_WORKER_PROCESSES, else one per CPU core "
            "for the rules stage and 1 where each process loads the model; "
            "RADBRIDGE_ENGINE=openai: one process with RADBRIDGE_LLM_CONCURRENCY threads)",
        ),
    ] = None,
    supervised: Annotated[
        bool, typer.Option(hidden=True, help="started by `radbridge serve`, which checked")
    ] = False,
    reclaim_on_start: Annotated[
        bool, typer.Option(hidden=True, help="serve's only worker: reclaim older claims at start")
    ] = False,
) -> None:
    """Run a Celery worker that extracts and delivers (RADBRIDGE_REDIS_URL, else embedded Redis,
    stopped when the worker exits)."""
    from app.serve import run_worker

    settings = _settings() if supervised else _serving_settings()
    try:
        run_worker(settings, beat=beat, concurrency=concurrency, reclaim_on_start=reclaim_on_start)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command("llm-server")
def llm_server(
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="port (RADBRIDGE_LLM_SERVER_PORT, 8081)")
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(min=1, help="slots decoded together (RADBRIDGE_LLM_SERVER_PARALLEL, 4)"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="GGUF model file (RADBRIDGE_MODEL_PATH)")
    ] = None,
) -> None:
    """Serve the model over an OpenAI-compatible API (llama.cpp's server, continuous batching)
    for RADBRIDGE_ENGINE=openai workers; Ctrl-C stops it."""
    from workers.llm_server import run_llm_server

    settings = _settings(model_path=model)
    logging.getLogger("radbridge").setLevel(logging.INFO)
    run_llm_server(settings, port=port, parallel=parallel)


@app.command("dead-letters")
def dead_letters() -> None:
    """List messages that were given up on, with the reason, and deliveries refused or dead
    (per destination; the message itself is not dead)."""
    from adapter.store import Store

    store = Store.open(_settings())
    table = Table(title="dead letters")
    for column in ("id", "received", "channel", "control id", "attempts", "reason"):
        table.add_column(column)
    for row in store.dead_letters():
        table.add_row(
            str(row.id),
            row.received_at.isoformat(),
            row.channel,
            row.control_id,
            str(row.attempts),
            row.reason or "",
        )
    out.print(table)
    given_up = store.given_up_deliveries()
    if given_up:
        deliveries = Table(title="deliveries given up on (radbridge resend ID --to DESTINATION)")
        for column in ("message", "bundle", "destination", "state", "attempts", "reason"):
            deliveries.add_column(column)
        for record in given_up:
            deliveries.add_row(
                str(record["message_id"]),
                str(record["bundle_id"])[:8],
                str(record["target"]),
                str(record["state"]),
                str(record["attempts"]),
                str(record["reason"] or ""),
            )
        out.print(deliveries)


@app.command()
def requeue(message_id: Annotated[int, typer.Argument(help="the message (job) id")]) -> None:
    """Put a dead or failed message back in the queue."""
    from adapter.errors import StoreError
    from adapter.queue import enqueue_extract, make_celery
    from adapter.store import Store

    settings = _settings()
    store = Store.open(settings)
    try:
        store.requeue(message_id)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    if settings.redis_url:
        enqueue_extract(make_celery(settings), message_id)
        out.print(f"message {message_id} requeued")
    else:
        out.print(
            f"message {message_id} is accepted again; the running service's reconcile picks it up"
        )


@app.command()
def resend(
    message_id: Annotated[int, typer.Argument(help="the message (job) id")],
    to: Annotated[str, typer.Option("--to", help="the destination: fhir or oru")],
) -> None:
    """Send a message's current results to one destination again, now (never re-extracted);
    a dead or refused delivery starts a new retry horizon."""
    from adapter import destinations
    from adapter.queue import make_celery
    from adapter.store import Store

    settings = _settings()
    names = [d.name for d in destinations.bundle_destinations(settings)]
    if to not in names:
        raise _fail(f"{to!r} is not a configured destination ({', '.join(names) or 'none'})")
    store = Store.open(settings)
    bundle_ids = store.bundles_of_message(message_id)
    if not bundle_ids:
        raise _fail(f"message {message_id} has no result to send")
    app_ = make_celery(settings) if settings.redis_url else None
    destinations.dispatch(app_, settings, store, bundle_ids, [to], fresh=True)
    store.audit(message_id, "resend_by_operator", to)
    where = "queued" if app_ is not None else "queued for the running service's reconcile"
    out.print(f"message {message_id}: {len(bundle_ids)} result(s) to {to} {where}")


@app.command()
def replay(
    directory: Annotated[
        Path,
        typer.Argument(help="folder of fixtures, goldens beside them: NAME.ack, NAME.fhir.json"),
    ],
    to: Annotated[str, typer.Option("--to", help="mllp://HOST:PORT or http://HOST:PORT")],
    api: Annotated[
        str | None,
        typer.Option(help="HTTP API for FHIR input and results (default: --to when http)"),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds to wait for each answer and for the worker")
    ] = 120.0,
    update_golden: Annotated[
        bool, typer.Option("--update-golden", help="write the goldens; review them by hand")
    ] = False,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML to this file")] = None,
) -> None:
    """Replay fixtures against a running radbridge; compare ACKs and FHIR with golden files."""
    from rich.syntax import Syntax

    from conformance.junit import write_junit
    from conformance.replay import (
        ReplayError,
        ReplayOptions,
        api_base,
        find_fixtures,
        parse_target,
        run_replay,
        summary_table,
    )

    settings = _settings()
    try:
        target = parse_target(to)
        options = ReplayOptions(
            directory=directory,
            target=target,
            api=api_base(target, api, settings.http_port),
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=timeout,
            update_golden=update_golden,
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
        total = len(find_fixtures(directory))
    except ReplayError as exc:
        raise _fail(str(exc)) from None
    if total == 0:
        raise _fail(f"{directory}: no fixtures")
    with _progress() as progress:
        sending = progress.add_task("sending", total=total)
        waiting = progress.add_task("waiting for the worker", total=None, visible=False)
        comparing = progress.add_task("comparing", total=total, visible=False)
        try:
            result = run_replay(
                options,
                on_sent=lambda _: progress.advance(sending),
                on_wait=lambda n: progress.update(
                    waiting, visible=True, description=f"waiting for the worker ({n} pending)"
                ),
                on_compared=lambda _: progress.update(comparing, visible=True, advance=1),
            )
        except ReplayError as exc:
            raise _fail(str(exc), EXIT_INTERNAL) from None
    for name, diff in result.diffs:
        out.rule(f"[bold red]{name}")
        out.print(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
    out.print(summary_table(result))
    if junit is not None:
        write_junit(junit, "radbridge replay", result.cases)
    if result.written:
        err.print(
            f"{len(result.written)} golden file(s) written: review each by hand before committing"
        )
    if not result.ok:
        raise typer.Exit(EXIT_INTERNAL)


@app.command("eval")
def evaluate(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="labelled JSONL (DESIGN.md 'Contracts'), Open-i JSONL, NegEx annotations or DRAGON"
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for metrics.json, report.html")],
    template: Annotated[
        str | None, typer.Option(help="only the reports of this template id")
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option(help="rules | llm | hybrid | all (default: settings; NegEx: rules)"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="GGUF model file (RADBRIDGE_MODEL_PATH)")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="absolute tolerance for number variables")
    ] = 0.0,
    resamples: Annotated[int, typer.Option(min=1, help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    split: Annotated[
        str | None,
        typer.Option(help="dev | test: only that half of a labelled JSONL set"),
    ] = None,
    rewrap: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="hard-wrap every report text at N characters first, as a RIS that sends one "
            "OBX per display line does (compare with the unwrapped run)",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="no progress on stderr (else a bar on a terminal, a line per tenth elsewhere)",
        ),
    ] = False,
    modality: Annotated[
        str | None,
        typer.Option(
            metavar="CODE",
            help="Open-i: also route each report as sent with this DICOM modality (e.g. CR) "
            "and no exam line, and note how many get no template",
        ),
    ] = None,
) -> None:
    """Measure extraction accuracy on labelled reports: metrics.json, report.html, a table."""
    from collections.abc import Callable

    from app.progress import progress as progress_on
    from conformance import evaluate as ev
    from conformance.datasets import is_dragon
    from conformance.errors import EvaluationError
    from conformance.insights_eval import is_insights
    from conformance.report_html import write_report

    if stage is not None and stage not in ("rules", "llm", "hybrid", "all"):
        raise _fail(f"--stage must be rules, llm, hybrid or all (got {stage!r})")
    if split is not None and split not in ("dev", "test"):
        raise _fail(f"--split must be dev or test (got {split!r})")
    if is_insights(dataset):  # the labelled insights set (issue 20): the rules of the insights step
        _eval_insights(dataset, out_dir, split, resamples, seed)
        return
    settings = _settings(model_path=model, stage=None if stage == "all" else stage)
    if template is not None and not is_dragon(dataset):  # DRAGON: its own task templates
        try:
            _resolve_templates(template, settings.templates_dir)
        except TemplateError as exc:
            raise _fail(str(exc)) from None
    with progress_on(err, quiet=quiet) as start_task:

        def start(total: int) -> Callable[[], None]:
            return start_task(f"evaluating ({stage or settings.stage})", total)

        options = ev.EvalOptions(
            settings, stage, template, tolerance, resamples, seed, start, split=split,
            rewrap=rewrap, modality=modality,
        )  # fmt: skip
        try:
            result = ev.run_evaluation(dataset, options)
        except EvaluationError as exc:
            raise _fail(str(exc)) from None
        except RadbridgeError as exc:
            raise _fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
    for note in result.notes:
        err.print(note)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev.write_metrics_json(result, out_dir / "metrics.json")
    write_report(result, out_dir / "report.html")
    for table in ev.summary_tables(result):
        out.print(table)
    err.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'}")


def _eval_insights(
    dataset: Path, out_dir: Path, split: str | None, resamples: int, seed: int
) -> None:
    """`radbridge eval` on an insights set: metrics.json, report.html and the table."""
    import json

    from conformance.errors import EvaluationError
    from conformance.insights_eval import insights_html, run_insights_evaluation

    try:
        result, table = run_insights_evaluation(dataset, split, resamples=resamples, seed=seed)
    except EvaluationError as exc:
        raise _fail(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.html").write_text(insights_html(result), encoding="utf-8")
    out.print(table)
    err.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'}")


templates_app = typer.Typer(
    help="Extraction templates: list, show one, check built-in or your own YAML files.",
    no_args_is_help=True,
)
app.add_typer(templates_app, name="templates")
app.add_typer(_users_app, name="users")  # `radbridge users add` (browser UI, issue 13)


def _template_files(paths: list[Path]) -> list[Path]:
    import importlib.resources

    from mappings.template import template_files

    if not paths:
        folder = Path(str(importlib.resources.files("mappings") / "templates"))
        return sorted(folder.glob("*.yaml"))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(template_files(path))
        elif path.exists():
            files.append(path)
        else:
            raise _fail(f"{path}: no such file or folder")
    return files


@templates_app.command("list")
def templates_list(
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="a Markdown table (the README's, generated from here)"),
    ] = False,
) -> None:
    """The templates (built-in and RADBRIDGE_TEMPLATES_DIR), one per line: id, version, title,
    languages, variables by type."""
    from app.template_table import readme_block
    from mappings.template import load_templates

    try:
        templates = load_templates(_settings().templates_dir)
    except TemplateError as exc:
        raise _fail(str(exc), EXIT_INTERNAL) from None
    if markdown:
        sys.stdout.write(readme_block(templates.values()) + "\n")
        return
    for template in templates.values():
        kinds = Counter(variable.type.value for variable in template.variables)
        columns = [
            template.id,
            template.version,
            template.title,
            ",".join(template.languages),
            ", ".join(f"{count} {kind}" for kind, count in kinds.items()),
        ]
        sys.stdout.write("\t".join(columns) + "\n")


def _code_text(code: Any, uncoded_reason: str | None) -> str:
    if code is None:
        return f"uncoded: {uncoded_reason or '(no reason)'}"
    system = str(code.system).rsplit("/", 1)[-1]
    return f"{system} {code.code} {code.display}"


def _value_text(variable: Any) -> str:
    if variable.scale is not None:
        return f"{variable.scale.min}..{variable.scale.max}"
    if variable.unit is not None:
        bounds = variable.range
        return (f"{bounds.min:g}..{bounds.max:g} " if bounds else "") + str(variable.unit.code)
    if variable.type.value == "presence":
        where = f"; at {', '.join(variable.locations)}" if variable.locations else ""
        return f"present|absent|uncertain{where}"
    return "|".join(option.id for option in variable.options)


@templates_app.command("show")
def templates_show(
    template: Annotated[str, typer.Argument(help="template id or a template YAML file")],
) -> None:
    """A template's variables, one per line (tab-separated): id (label), type, values, code or
    'uncoded: reason'; enum options and qualifiers indented below their variable."""
    try:
        (shown,) = _resolve_templates(template, _settings().templates_dir).values()
    except TemplateError as exc:
        raise _fail(str(exc)) from None
    lines = [f"{shown.id} {shown.version}: {shown.title} ({', '.join(shown.languages)})"]
    for variable in shown.variables:
        code = _code_text(variable.code, variable.uncoded_reason)
        lines.append(
            f"{variable.id} ({variable.label})\t{variable.type.value}\t{_value_text(variable)}\t{code}"
        )
        options, indent = list(variable.options), "  "
        if variable.qualifier is not None:
            qualifier = variable.qualifier
            code = _code_text(qualifier.code, qualifier.uncoded_reason)
            lines.append(f"  {qualifier.id} ({qualifier.label})\tqualifier\t\t{code}")
            options, indent = list(qualifier.options), "    "
        for option in options:
            code = _code_text(option.code, option.uncoded_reason)
            lines.append(f"{indent}{option.id} ({option.label})\toption\t\t{code}")
    sys.stdout.write("\n".join(lines) + "\n")


@templates_app.command("check")
def templates_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="template YAML files or folders; default: the built-in templates"),
    ] = None,
) -> None:
    """Validate templates: structure, types, codes (installed SNOMED CT / LOINC tables or a cited
    source), UCUM units, DICOM modalities, synonyms, ids unique and none a built-in's. Every
    problem of every file is listed, by key name; exit 1 on a problem."""
    from mappings.template import check_template_files

    files = _template_files(list(paths or []))
    if not files:
        raise _fail("no template files found")
    _, problems = check_template_files(files)
    for problem in problems:
        sys.stdout.write(f"{problem.source}\t{problem.field}\t{problem.problem}\n")
    err.print(f"{len(files)} template file(s) checked, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(EXIT_INTERNAL)


@templates_app.command("import")
def templates_import(
    task: Annotated[Path, typer.Argument(help="llm_extractinator task file (JSON)")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="template YAML to write (default: stdout)")
    ] = None,
    language: Annotated[
        list[str] | None,
        typer.Option("--language", help="template language, repeatable (default: nl, en)"),
    ] = None,
) -> None:
    """Import an llm_extractinator task as a template YAML to inspect, edit and run
    (`radbridge extract --template FILE.yaml`); unsupported tasks (NER) exit 2 with the reason."""
    from mappings.extractinator import DEFAULT_LANGUAGES, load_task

    try:
        imported = load_task(task, tuple(language or DEFAULT_LANGUAGES))
    except TemplateError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from None
    if out_file is None:
        sys.stdout.write(imported.yaml)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(imported.yaml, encoding="utf-8")
    kinds = Counter(variable.type.value for variable in imported.template.variables)
    summary = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    err.print(f"wrote {out_file}: template {imported.template.id} ({summary})")


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # serve's worker child: serve has warned already; serve, worker and check-config report
    # unknown variables themselves (errors in production)
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if "--supervised" not in sys.argv and command not in ("serve", "worker", "check-config"):
        import os

        from adapter.settings import unknown_variables

        for warning in unknown_variables(os.environ):
            log.warning("%s", warning)
    try:
        app()
    except RadbridgeError as exc:
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        sys.exit(EXIT_INTERNAL)
