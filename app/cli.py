"""The `radbridge` command line: the composition root. `app` lists every command, in the order
`radbridge --help` shows them; each command group lives in a module of `app.commands`.

Commands import `workers` and `conformance` lazily inside their bodies, so a command loads only
what it runs (the model engine, the validators). Exit codes: 0 = input read (rejections are normal),
2 = bad options or nothing readable, 1 = internal error (an unexpected one is logged once with a
correlation id and its frames, never its message), 130 = a resumable `extract` stopped by Ctrl-C
(the same command continues it).
"""

from __future__ import annotations

import logging
import sys

import typer

from app.commands import extract, measure, operations, results, serving
from app.commands.common import EXIT_INTERNAL, err, log
from app.commands.templates import templates_app
from app.commands.users import users_app
from mappings.errors import RadbridgeError, log_unexpected

app = typer.Typer(
    name="radbridge",
    help="Radiology reports (HL7v2 / FHIR) -> coded FHIR R4 Observations with a local model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("check-config")(serving.check_config_command)
app.command()(extract.extract)
app.command()(results.validate)
app.command()(results.show)
app.command()(serving.serve)
app.command()(serving.worker)
app.command("llm-server")(serving.llm_server)
app.command("dead-letters")(operations.dead_letters)
app.command()(operations.requeue)
app.command()(operations.resend)
app.command()(measure.replay)
app.command("eval")(measure.evaluate)
app.add_typer(templates_app, name="templates")
app.add_typer(users_app, name="users")  # `radbridge users add` (browser UI, issue 13)


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
    except Exception as exc:  # a bug: its message may quote report text, so never printed
        where = f"radbridge {command}" if command.replace("-", "").isalpha() else "radbridge"
        correlation = log_unexpected(log, where, exc)
        err.print(f"[bold red]error:[/] internal error (correlation id {correlation}; see the log)")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":  # `python -m app.cli …` runs the same command line as `radbridge …`
    main()
