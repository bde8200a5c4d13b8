"""`radbridge users add|list|passwd|disable|enable|remove`: the UI users (issues 13, 23) in
RADBRIDGE_UI_USERS_FILE.

A password is asked for twice without echo, or read from standard input with `--password-stdin`
(one line; for scripts). Only its argon2id hash is written. `passwd`, `disable` and `remove` end
every session of that user (the session cookie carries a digest of the password hash and is
checked against the file on each request); `list` shows names, roles and whether each is
disabled, never hashes.
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


FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="the users file (default: RADBRIDGE_UI_USERS_FILE)"),
]
NameArgument = Annotated[str, typer.Argument(help="user name")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from standard input")
]


def _fail(text: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {text}")
    return typer.Exit(2)


def _users_file(users_file: Path | None) -> Path:
    try:
        path = users_file or load_settings().ui_users_file
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if path is None:
        raise _fail("set RADBRIDGE_UI_USERS_FILE or pass --file")
    return path


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, _.@-)")],
    role: Annotated[str, typer.Option("--role", help="operator or reviewer")],
    password_stdin: PasswordStdin = False,
    users_file: FileOption = None,
) -> None:
    """Add a user (or replace its role and password)."""
    from adapter.ui.auth import add_user

    path = _users_file(users_file)
    try:
        add_user(path, name, role, _password(password_stdin))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} ({role}) written to {path}")


@users_app.command("list")
def list_users(users_file: FileOption = None) -> None:
    """The users: name, role, and `disabled` where a user cannot sign in (no hashes)."""
    from adapter.ui.auth import read_users

    path = _users_file(users_file)
    if not path.exists():
        typer.echo(f"no users yet ({path} does not exist)")
        return
    try:
        accounts = read_users(path)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    for account in sorted(accounts.values(), key=lambda a: a.name):
        state = "\tdisabled" if account.disabled else ""
        typer.echo(f"{account.name}\t{account.role}{state}")


@users_app.command("passwd")
def passwd(
    name: NameArgument, password_stdin: PasswordStdin = False, users_file: FileOption = None
) -> None:
    """Give a user a new password (its sessions end)."""
    from adapter.ui.auth import set_password

    path = _users_file(users_file)
    try:
        set_password(path, name, _password(password_stdin))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"new password for {name} written to {path}; their sessions have ended")


@users_app.command("disable")
def disable(name: NameArgument, users_file: FileOption = None) -> None:
    """Disable a user: sign-in refused, sessions ended; `enable` undoes it."""
    from adapter.ui.auth import set_disabled

    path = _users_file(users_file)
    try:
        set_disabled(path, name, True)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} disabled in {path}; their sessions have ended")


@users_app.command("enable")
def enable(name: NameArgument, users_file: FileOption = None) -> None:
    """Enable a disabled user again (with the password it had)."""
    from adapter.ui.auth import set_disabled

    path = _users_file(users_file)
    try:
        set_disabled(path, name, False)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} enabled in {path}")


@users_app.command("remove")
def remove(name: NameArgument, users_file: FileOption = None) -> None:
    """Remove a user (its sessions end)."""
    from adapter.ui.auth import remove_user

    path = _users_file(users_file)
    try:
        remove_user(path, name)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} removed from {path}; their sessions have ended")
