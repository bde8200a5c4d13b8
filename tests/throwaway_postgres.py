"""Run a command with a throwaway PostgreSQL cluster, the way `.ci/run` gives CI one: `make test`
runs pytest through this, so the PostgreSQL tests run on any machine with PostgreSQL's server
binaries (Debian: the `postgresql` package), not only where a server is already listening.

    python -m tests.throwaway_postgres -- COMMAND...

- RADBRIDGE_TEST_DATABASE_URL already set (CI, a developer's own server): the command runs as is.
- Binaries found (`initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql/*/bin): a cluster is made
  in a temporary folder (initdb, trust auth on 127.0.0.1 only, a free port, its socket in that
  folder), the database `test` is created, RADBRIDGE_TEST_DATABASE_URL points at it, the command
  runs, then the cluster is stopped and the folder deleted, also after Ctrl-C, SIGTERM or a
  failure.
  initdb refuses to run as root: as root the cluster belongs to the `postgres` account (Debian's
  package creates it) and is run with runuser.
- No binaries: the command runs without it and the PostgreSQL tests skip, saying why.

The command's exit status is this script's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

URL_VARIABLE = "RADBRIDGE_TEST_DATABASE_URL"
START_TIMEOUT_S = 120


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb (the newest Debian version first), or
    None."""
    initdb = shutil.which("initdb")
    if initdb is not None:  # often a link into the versioned folder that holds createdb too
        folder = Path(initdb).resolve().parent
        if all((folder / tool).is_file() for tool in ("pg_ctl", "createdb")):
            return folder
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    for initdb_path in reversed(versions):
        if all((initdb_path.parent / tool).is_file() for tool in ("pg_ctl", "createdb")):
            return initdb_path.parent
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_owner(owner: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextlib.contextmanager
def throwaway_cluster(bindir: Path) -> Iterator[str]:
    """A running cluster with a database `test`; yields its SQLAlchemy URL; stopped and deleted
    on exit."""
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError:
            raise RuntimeError("as root, initdb needs the `postgres` account") from None
    folder = Path(tempfile.mkdtemp(prefix="radbridge-pg-"))
    data = folder / "data"
    if owner is not None:
        shutil.chown(folder, user=owner)
    port = free_port()
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    started = False
    try:
        subprocess.run(
            _as_owner(owner, [str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                              "--auth=trust", "-E", "UTF8", "--no-sync"]),
            timeout=START_TIMEOUT_S, **run,  # type: ignore[arg-type]
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_owner(owner, [str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
                              "-l", str(folder / "server.log"), "-w", "start"]),
            timeout=START_TIMEOUT_S, **run,  # type: ignore[arg-type]
        )  # fmt: skip
        started = True
        subprocess.run(
            _as_owner(owner, [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                              "-U", "postgres", "test"]),
            timeout=START_TIMEOUT_S, **run,  # type: ignore[arg-type]
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    finally:
        if started:
            subprocess.run(
                _as_owner(owner, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                  "stop"]),
                timeout=START_TIMEOUT_S, check=False, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Run `argv` (after `--`) with a PostgreSQL test database; the command's exit status."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print("usage: python -m tests.throwaway_postgres -- COMMAND...", file=sys.stderr)
        return 2
    if os.environ.get(URL_VARIABLE):
        return subprocess.call(command)
    bindir = find_bindir()
    if bindir is None:
        print(
            ">> PostgreSQL server binaries not found (initdb, pg_ctl; Debian: apt-get install "
            "postgresql): the PostgreSQL tests will skip",
            file=sys.stderr,
        )
        return subprocess.call(command)
    # a SIGTERM (a CI timeout) unwinds like Ctrl-C, so the cluster is stopped and deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with throwaway_cluster(bindir) as url:
            print(f">> throwaway PostgreSQL for the tests at {url}", file=sys.stderr)
            return subprocess.call(command, env={**os.environ, URL_VARIABLE: url})
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(
            f"error: could not start a throwaway PostgreSQL ({type(exc).__name__}): "
            f"{detail.decode(errors='replace').strip()[-500:]}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
