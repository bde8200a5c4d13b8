"""`radbridge users add NAME --role R`: write a UI user (issue 13) to RADBRIDGE_UI_USERS_FILE.

The password is asked for twice without echo, or read from standard input with
`--password-stdin` (one line; for scripts). Only its argon2id hash is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from adapter.errors import ConfigError
from adapter.settings import load_settings

users_app = typer.Typer(
    help="Users of the browser UI (RADBRIDGE_UI_USERS_FILE).", no_args_is_help=True
)
_err = Console(stderr=True)


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, _.@-)")],
    role: Annotated[str, typer.Option("--role", help="operator or reviewer")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    users_file: Annotated[
        Path | None,
        typer.Option("--file", help="the users file (default: RADBRIDGE_UI_USERS_FILE)"),
    ] = None,
) -> None:
    """Add a user (or replace its role and password)."""
    from adapter.ui.auth import add_user

    try:
        path = users_file or load_settings().ui_users_file
    except ConfigError as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if path is None:
        _err.print("[bold red]error:[/] set RADBRIDGE_UI_USERS_FILE or pass --file")
        raise typer.Exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        add_user(path, name, role, password)
    except ConfigError as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    typer.echo(f"user {name} ({role}) written to {path}")
