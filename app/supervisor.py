"""Child processes of `radbridge serve`: started, watched, restarted with backoff, stopped together.

Every child dies with its parent (Linux `prctl(PR_SET_PDEATHSIG)`, set between fork and exec), so
a kill -9 of `serve` leaves no worker or redis-server behind; a Celery worker sets the same on its
beat and pool processes (`die_with_parent`), so a killed worker leaves no beat queueing alone.
`serve` records its children in `serve.pid` in the data dir, held under an exclusive lock for
its lifetime: a second `serve` on the same data dir is refused, and a restarted one stops what a
crashed instance left (pids checked against their command lines, never a name match).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from adapter.errors import ConfigError

log = logging.getLogger("radbridge.supervisor")

PR_SET_PDEATHSIG = 1
PID_FILE = "serve.pid"
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
"""A child that ran this long before it died restarts after the first backoff again."""

_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """This process gets `sig` when its parent dies (Linux; elsewhere nothing happens). If the
    parent (`parent_pid`, read before the fork) is already gone, so that this process was
    re-parented before the call, it gets `sig` now."""
    with contextlib.suppress(AttributeError, OSError):
        _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def _pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """A `preexec_fn` that only calls prctl (the foreign function is bound before the fork)."""
    prctl = _LIBC.prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def command_line(pid: int) -> list[str]:
    """A process's argv from /proc ([] when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def terminate(pid: int, *, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s` (for a process that is not our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Child:
    """One supervised child process: its command, and its restart bookkeeping.

    `signature`: argv words that identify it in /proc (to stop a crashed instance's leftover
    without ever touching an unrelated process that reused the pid)."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    signature: Sequence[str] = ()
    death_signal: int = signal.SIGTERM
    stop_timeout_s: float = 30.0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        """The running process's pid (None when not running)."""
        return self.process.pid if self.process is not None and self.alive() else None

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (it dies with this one)."""
        self.process = subprocess.Popen(
            list(self.argv),
            env=self.env,
            process_group=0,  # a terminal's Ctrl-C reaches serve only; serve stops us in order
            preexec_fn=_pdeathsig_preexec(self.death_signal),  # prctl only, bound before the fork
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s pid=%d", self.name, self.process.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout_s`; waits for the exit."""
        process, self.process = self.process, None
        self.restart_at = None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s pid=%d did not stop in %.0f s: killed", self.name, process.pid,
                        self.stop_timeout_s)  # fmt: skip
            process.kill()
            process.wait()

    def check(self, now: float) -> bool:
        """Notice an exit and schedule the restart with backoff; start it when due. Returns True
        when the child was (re)started by this call."""
        if self.process is None:
            return False
        code = self.process.poll()
        if code is None:
            return False
        if self.restart_at is None:
            lived = now - self.started_at
            if lived >= HEALTHY_AFTER_S:
                self.backoff_s = BACKOFF_FIRST_S
            self.restart_at = now + self.backoff_s
            log.warning(
                "%s pid=%d exited (code %d) after %.1f s: restarting in %.1f s",
                self.name, self.process.pid, code, lived, self.backoff_s,
            )  # fmt: skip
            self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
            return False
        if now < self.restart_at:
            return False
        self.restarts += 1
        self.start()
        return True


class PidFile:
    """`serve.pid` in the data dir, locked while serve runs; it lists serve's children."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE
        self._file: IO[str] | None = None

    def acquire(self, signatures: dict[str, Sequence[str]]) -> None:
        """Lock the file (ConfigError: another serve runs on this data dir) and stop the
        children a crashed instance left (listed in the file, command line still matching)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"another radbridge serve is running on data dir {self.path.parent} "
                    f"({PID_FILE} is locked)"
                ) from None
            raise
        self._file = handle
        handle.seek(0)
        try:
            previous = json.loads(handle.read() or "{}")
        except ValueError:
            previous = {}
        for name, pid in (previous.get("children") or {}).items():
            words = signatures.get(name)
            if not isinstance(pid, int) or not words or not pid_alive(pid):
                continue
            argv = " ".join(command_line(pid))
            if all(word in argv for word in words):
                log.warning("stopping %s pid=%d left by a crashed radbridge serve", name, pid)
                terminate(pid)
        self.write({})

    def write(self, children: dict[str, int | None]) -> None:
        """Record this serve's pid and its children's."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        record = {"serve": os.getpid(), "children": {k: v for k, v in children.items() if v}}
        self._file.write(json.dumps(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def release(self) -> None:
        """Empty and unlock the file."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
