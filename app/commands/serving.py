"""The serving commands: `check-config`, `serve` (API, MLLP listener and a worker), `worker`
and `llm-server`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from adapter.errors import ConfigError
from app.commands.common import EXIT_USAGE, cli_settings, err, fail, serving_settings


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

    settings = serving_settings()
    try:
        asyncio.run(run_services(settings, with_worker=worker))
    except ConfigError as exc:
        raise fail(str(exc)) from None


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
    warm_up: Annotated[
        bool,
        typer.Option(hidden=True, help="warm up before the pool forks (serve: not on a restart)"),
    ] = True,
) -> None:
    """Run a Celery worker that extracts and delivers (RADBRIDGE_REDIS_URL, else embedded Redis,
    stopped when the worker exits)."""
    from app.serve import run_worker

    settings = cli_settings() if supervised else serving_settings()
    try:
        run_worker(
            settings,
            beat=beat,
            concurrency=concurrency,
            reclaim_on_start=reclaim_on_start,
            warm=warm_up,
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None


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

    settings = cli_settings(model_path=model)
    logging.getLogger("radbridge").setLevel(logging.INFO)
    run_llm_server(settings, port=port, parallel=parallel)
