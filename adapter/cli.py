"""The `radbridge` command line: the composition root.

Commands import `workers` and `conformance` lazily inside their bodies (DESIGN.md: adapter
never imports them at module level). Exit codes: 0 = input read (rejections are normal),
2 = bad options or nothing readable, 1 = internal error.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapter.errors import ConfigError, InputError
from adapter.inputs import REJECTED_FILE, Rejection, SourcedReport, collect_files, read_file
from adapter.settings import Settings, load_settings
from mappings.errors import RadbridgeError, TemplateError

if TYPE_CHECKING:
    from mappings.template import Template

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2

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


def _resolve_templates(template_id: str | None) -> dict[str, Template]:
    from mappings.template import get_template, load_builtin_templates

    if template_id is None:
        return load_builtin_templates()
    return {template_id: get_template(template_id)}


def _read_inputs(
    inputs: list[Path], settings: Settings
) -> tuple[list[SourcedReport], list[Rejection], int]:
    files = collect_files(inputs)
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
    return reports, rejections, len(files)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", "utf-8")
    tmp.replace(path)


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
        list[Path], typer.Argument(help="files or folders: HL7v2, MLLP, scout .log, FHIR JSON")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="output folder for <id>.json Bundles")],
    template: Annotated[
        str | None, typer.Option(help="template id; default: route each report")
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="rules | llm | hybrid (default from settings)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="GGUF model file (RADBRIDGE_MODEL_PATH)")
    ] = None,
) -> None:
    """Extract coded FHIR transaction Bundles from report files, offline."""
    settings = _settings(model_path=model, stage=stage)
    try:
        templates = _resolve_templates(template)
    except TemplateError as exc:
        raise _fail(str(exc)) from None
    try:
        sourced, rejections, n_files = _read_inputs(inputs, settings)
    except InputError as exc:
        raise _fail(str(exc)) from None
    if n_files == 0:
        raise _fail("no input files found")
    if not sourced and not rejections:
        raise _fail("nothing readable in the input")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ExtractSummary(reports=len(sourced))
    try:
        _extract_all(
            sourced, rejections, templates, template is not None, settings, out_dir, summary
        )
    except RadbridgeError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
    with (out_dir / REJECTED_FILE).open("w", encoding="utf-8") as fh:
        for rejection in rejections:
            fh.write(rejection.to_json() + "\n")
            summary.rejected[rejection.reason] += 1
    out.print(summary.table())


def _extract_all(
    sourced: list[SourcedReport],
    rejections: list[Rejection],
    templates: dict[str, Template],
    forced: bool,
    settings: Settings,
    out_dir: Path,
    summary: ExtractSummary,
) -> None:
    from mappings.fhir import build_bundle
    from mappings.routing import route
    from workers.engine import get_engine
    from workers.stages import run_stage

    with _progress() as progress:
        task = progress.add_task("extracting", total=len(sourced))
        for item in sourced:
            chosen = (
                list(templates.values()) if forced else route(item.report, list(templates.values()))
            )
            if not chosen:
                rejections.append(
                    Rejection(
                        item.source,
                        item.frame,
                        item.report.message_control_id,
                        "no_template",
                        "no template applies to this report (procedure, modality, body part, keywords)",
                    )
                )
                progress.advance(task)
                continue
            for tmpl in chosen:
                started = time.perf_counter()
                extraction = run_stage(item.report, tmpl, settings, lambda: get_engine(settings))
                bundle = build_bundle(
                    item.report,
                    extraction,
                    tmpl,
                    observation_status=settings.observation_status,
                    default_tz=settings.zone(),
                )
                name = (
                    item.report.report_id
                    if len(chosen) == 1
                    else f"{item.report.report_id}-{tmpl.id}"
                )
                _write_json(out_dir / f"{name}.json", bundle)
                summary.seconds.append(time.perf_counter() - started)
                summary.bundles += 1
                summary.completion_tokens += extraction.timings.completion_tokens
                summary.decode_seconds += extraction.timings.seconds
                summary.observations += sum(
                    1
                    for entry in bundle.get("entry", [])
                    if entry.get("resource", {}).get("resourceType") == "Observation"
                )
            progress.advance(task)


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Bundles or resources (files or folders)")],
) -> None:
    """Validate FHIR R4 JSON: R4B models, the official R4 JSON schema, project rules."""
    from conformance.errors import ConformanceError
    from conformance.validate import format_problem, validate_paths

    missing = [p for p in paths if not p.exists()]
    if missing:
        raise _fail(f"{missing[0]}: no such file or folder")
    try:
        problems = validate_paths(paths)
    except ConformanceError as exc:
        raise _fail(str(exc)) from None
    for problem in problems:
        sys.stdout.write(format_problem(problem) + "\n")
    errors = sum(1 for p in problems if p.severity == "error")
    err.print(f"{len(problems)} problem(s), {errors} error(s)")
    if errors:
        raise typer.Exit(EXIT_INTERNAL)


@app.command()
def show(
    paths: Annotated[list[Path], typer.Argument(help="Bundles written by `radbridge extract`")],
) -> None:
    """Print the coded Observations of Bundles as a table."""
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
                _concept_text(resource.get("valueCodeableConcept")),
                _concept_text(resource.get("bodySite") or {}),
                _evidence_text(resource),
            )
        out.print(table)


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
    for ext in resource.get("extension", []):
        for sub in ext.get("extension", []):
            if sub.get("url") == "quote":
                return str(sub.get("valueString", ""))
    return ""


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

    from adapter.serve import run_services

    settings = _settings()
    try:
        settings.check_production()
        asyncio.run(run_services(settings, with_worker=worker))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def worker(
    beat: Annotated[bool, typer.Option(help="also schedule the periodic reconcile task")] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, help="worker processes (each loads the model)")
    ] = 1,
) -> None:
    """Run a Celery worker that extracts and delivers (RADBRIDGE_REDIS_URL, else embedded Redis)."""
    from adapter.serve import run_worker

    run_worker(_settings(), beat=beat, concurrency=concurrency)


@app.command("dead-letters")
def dead_letters() -> None:
    """List messages that were given up on, with the reason."""
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


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        app()
    except RadbridgeError as exc:
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        sys.exit(EXIT_INTERNAL)
