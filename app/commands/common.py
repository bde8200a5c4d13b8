"""What every command shares: the exit codes, the consoles, refusing with a message, the
settings (checked once for the serving commands), templates by id or file, a progress bar."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapter.errors import ConfigError
from adapter.settings import Settings, load_settings

if TYPE_CHECKING:
    from mappings.template import Template

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C during a resumable extract: run the same command again

log = logging.getLogger("radbridge.cli")
err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def cli_settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise fail(str(exc)) from None


def serving_settings() -> Settings:
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


def resolve_templates(template_id: str | None, folder: Path | None = None) -> dict[str, Template]:
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


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
