"""`radbridge replay` (fixtures against a running radbridge, compared with goldens) and
`radbridge eval` (extraction accuracy on labelled reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.commands.common import (
    EXIT_INTERNAL,
    cli_settings,
    err,
    fail,
    out,
    progress_bar,
    resolve_templates,
)
from mappings.errors import RadbridgeError, TemplateError


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

    settings = cli_settings()
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
        raise fail(str(exc)) from None
    if total == 0:
        raise fail(f"{directory}: no fixtures")
    with progress_bar() as progress:
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
            raise fail(str(exc), EXIT_INTERNAL) from None
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


def evaluate(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="labelled JSONL (docs/architecture.md 'Contracts'), Open-i JSONL, NegEx annotations or DRAGON"
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
    from conformance.datasets import is_dragon
    from conformance.errors import EvaluationError
    from conformance.eval_output import summary_tables, write_metrics_json
    from conformance.eval_scoring import EvalOptions
    from conformance.evaluate import run_evaluation
    from conformance.insights_eval import is_insights
    from conformance.report_html import write_report

    if stage is not None and stage not in ("rules", "llm", "hybrid", "all"):
        raise fail(f"--stage must be rules, llm, hybrid or all (got {stage!r})")
    if split is not None and split not in ("dev", "test"):
        raise fail(f"--split must be dev or test (got {split!r})")
    if is_insights(dataset):  # the labelled insights set (issue 20): the insights step
        _eval_insights(dataset, out_dir, split, resamples, seed, stage, model, quiet)
        return
    settings = cli_settings(model_path=model, stage=None if stage == "all" else stage)
    if template is not None and not is_dragon(dataset):  # DRAGON: its own task templates
        try:
            resolve_templates(template, settings.templates_dir)
        except TemplateError as exc:
            raise fail(str(exc)) from None
    with progress_on(err, quiet=quiet) as start_task:

        def start(total: int) -> Callable[[], None]:
            return start_task(f"evaluating ({stage or settings.stage})", total)

        options = EvalOptions(
            settings, stage, template, tolerance, resamples, seed, start, split=split,
            rewrap=rewrap, modality=modality,
        )  # fmt: skip
        try:
            result = run_evaluation(dataset, options)
        except EvaluationError as exc:
            raise fail(str(exc)) from None
        except RadbridgeError as exc:
            raise fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
    for note in result.notes:
        err.print(note)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_json(result, out_dir / "metrics.json")
    write_report(result, out_dir / "report.html")
    for table in summary_tables(result):
        out.print(table)
    err.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'}")


def _eval_insights(
    dataset: Path,
    out_dir: Path,
    split: str | None,
    resamples: int,
    seed: int,
    stage: str | None,
    model: Path | None,
    quiet: bool,
) -> None:
    """`radbridge eval` on an insights set: metrics.json, report.html and the tables. The
    rules unless `--stage llm|hybrid` (the model path: rules merged with the model's items)."""
    import json

    from app.progress import progress as progress_on
    from conformance.errors import EvaluationError
    from conformance.insights_eval import insights_html, run_insights_evaluation
    from workers.engine_registry import get_engine

    if stage == "all":
        raise fail("--stage all is for templates; an insights set takes rules, llm or hybrid")
    chosen = stage or "rules"
    settings = cli_settings(model_path=model, stage=chosen)
    with progress_on(err, quiet=quiet) as start_task:
        try:
            result, tables = run_insights_evaluation(
                dataset, split, resamples=resamples, seed=seed, stage=chosen,
                engine=lambda: get_engine(settings), max_tokens=settings.max_tokens,
                progress=lambda total: start_task(f"evaluating insights ({chosen})", total),
            )  # fmt: skip
        except EvaluationError as exc:
            raise fail(str(exc)) from None
        except RadbridgeError as exc:
            raise fail(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.html").write_text(insights_html(result), encoding="utf-8")
    for table in tables:
        out.print(table)
    err.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'}")
