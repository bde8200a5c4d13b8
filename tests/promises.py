"""Helpers of the reliability promise tests (issue 14): messages, a `radbridge serve` or
`radbridge worker` process that can be killed with SIGKILL and restarted on the same data dir
and ports, an MLLP stream sender that keeps the ACKs it got, and waits on the jobs API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from adapter.mllp import FrameReader, frame
from tests.helpers.waiting import wait_for
from tests.serve_process import free_port

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
CHEST_CT = (Path(__file__).parent / "fixtures" / "hl7v2" / "chest_ct.hl7").read_bytes().strip()
FINDINGS = [
    "FINDINGS:",
    "Small right pleural effusion with adjacent compressive atelectasis.",
    "No pneumothorax. Heart size is normal.",
]


def oru(
    control_id: str,
    *,
    accession: str | None = None,
    mrn: str = "MRN0001",
    name: str = "TESTPATIENT^ALPHA",
    lines: Iterable[str] = FINDINGS,
    status: str = "F",
    observed: str = "20261101084500",
    sender: tuple[str, str] = ("RIS", "RBHOSP"),
    version: str = "2.5.1",
    procedure: str = "24627-2^Chest CT^LN",
) -> bytes:
    """chest_ct.hl7 (a CT chest the rules stage codes) with these header, patient, order and
    report values; segment ends `\\r`."""
    segments = CHEST_CT.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    msh = segments[0].split(b"|")
    msh[2], msh[3], msh[9], msh[11] = (
        sender[0].encode(),
        sender[1].encode(),
        control_id.encode(),
        version.encode(),
    )
    pid = segments[1].split(b"|")
    pid[3], pid[5] = f"{mrn}^^^RBH^MR".encode(), name.encode()
    obr = segments[2].split(b"|")
    obr[3], obr[4] = (accession or f"ACC-{control_id}").encode(), procedure.encode()
    obr[7], obr[25] = observed.encode(), status.encode()
    obx = [
        f"OBX|{i}|ST|59776-5^Findings^LN|1|{text}||||||{status}".encode()
        for i, text in enumerate(lines, 1)
    ]
    return b"\r".join([b"|".join(msh), b"|".join(pid), b"|".join(obr), *obx])


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1 code, MSA-2 control id) of an ACK."""
    segment = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    fields = segment.decode("latin-1").split("|")
    return fields[1], fields[2] if len(fields) > 2 else ""


def send_mllp(
    port: int,
    payloads: Iterable[bytes],
    *,
    timeout: float = 30,
    on_ack: Callable[[int], None] | None = None,
    host: str = "127.0.0.1",
) -> list[bytes]:
    """Send each payload on one connection, waiting for its ACK before the next; returns the
    ACKs received (fewer when the listener went away: the rest were not acknowledged).
    `on_ack(n)` runs after the n-th ACK."""
    acks: list[bytes] = []
    reader = FrameReader(1 << 20)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            for payload in payloads:
                sock.sendall(frame(payload))
                got: list[bytes] = []
                while not got:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return acks
                    got = [e.payload for e in reader.feed(chunk) if e.payload is not None]
                acks += got
                if on_ack is not None:
                    on_ack(len(acks))
    except OSError:
        pass
    return acks


SERVE_DOWN: tuple[type[BaseException], ...] = (httpx.TransportError, OSError)
"""What a poll of a starting or restarting `radbridge serve` raises: counts as not yet."""


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`."""
    result: list[int] = []
    queue = [pid]
    while queue:
        kids = children(queue.pop())
        result += kids
        queue += kids
    return result


def command_line(pid: int) -> str:
    """The process's argv joined by spaces ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill9(pids: Iterable[int]) -> None:
    """SIGKILL each pid that still exists."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


DEBUG_LOGGING = """
import logging
import sys

logging.basicConfig(
    level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)
try:
    from celery import signals

    @signals.setup_logging.connect
    def _keep_debug_logging(**_: object) -> None:  # Celery keeps the root logger at DEBUG
        pass
except ImportError:
    pass
"""

# A report holding POISON-KILL kills the process parsing it (as a native crash would); one
# holding POISON-RAISE makes the parser raise an exception no table lists (a parser bug).
POISON = """
import os
import signal

import mappings.hl7.oru_in as _oru_in

_parse = _oru_in._parse_oru


def _poisoned(payload, *args, **kwargs):
    if b"POISON-KILL" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    if b"POISON-RAISE" in payload:
        raise ZeroDivisionError("a parser bug")
    return _parse(payload, *args, **kwargs)


_oru_in._parse_oru = _poisoned
"""


# A report holding SLOW-EXTRACT is parsed slowly (3 s), after the parsing process wrote its pid
# to the file TEST_SLOW_MARKER names: a test knows when an extraction is in hand.
SLOW_EXTRACT = """
import os
import time
from pathlib import Path

import mappings.hl7.oru_in as _oru_in

_parse_slowly = _oru_in._parse_oru


def _slow(payload, *args, **kwargs):
    if b"SLOW-EXTRACT" in payload:
        Path(os.environ["TEST_SLOW_MARKER"]).write_text(str(os.getpid()))
        time.sleep(3)
    return _parse_slowly(payload, *args, **kwargs)


_oru_in._parse_oru = _slow
"""


def sitecustomize_env(folder: Path, *parts: str) -> dict[str, str]:
    """Environment whose Python processes (serve, the worker and its pool alike) run `parts`
    at start-up: a sitecustomize on PYTHONPATH, the test harness's way into a real process."""
    folder.mkdir(parents=True, exist_ok=True)
    header = '"""Test harness code run at start-up by every process of one test."""\n'
    (folder / "sitecustomize.py").write_text(header + "\n".join(parts))
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(Path(__file__).parents[1])])}


def debug_logging_env(folder: Path) -> dict[str, str]:
    """Environment that makes every radbridge process started with it log at DEBUG."""
    return sitecustomize_env(folder, DEBUG_LOGGING)


@dataclass
class Proc:
    """A radbridge command as a subprocess of the test, restartable with the same env."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    def start(self) -> Proc:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*RADBRIDGE, *self.argv],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every child
        )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 60) -> None:
        """SIGINT, then SIGKILL of the group after `timeout`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Serve(Proc):
    """`radbridge serve` with fixed ports (kept across restarts)."""

    mllp_port: int = 0
    http: str = ""

    def ready(self, timeout: float = 90) -> Serve:
        assert self.process is not None

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"radbridge serve exited ({self.process.returncode}): {self.log()}")
            return httpx.get(f"{self.http}/readyz", timeout=2).status_code == 200

        wait_for(up, timeout, "radbridge serve to be ready", interval=0.5, tolerate=SERVE_DOWN)
        return self

    def job(self, job_id: int) -> dict[str, Any]:
        response = httpx.get(f"{self.http}/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def states(self) -> dict[str, int]:
        """Messages by state, from /metrics (states with none left out)."""
        text = httpx.get(f"{self.http}/metrics", timeout=10).text
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith('radbridge_messages{state="'):
                state = line.split('"')[1]
                counts[state] = int(float(line.rsplit(" ", 1)[1]))
        return {state: count for state, count in counts.items() if count}


def serve_env(root: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a radbridge process: this process's, minus radbridge settings that
    would leak in, plus the data dir and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env.update({"RADBRIDGE_DATA_DIR": str(root / "data"), "RADBRIDGE_STAGE": "rules"})
    env.update(settings)
    return env


def make_serve(root: Path, settings: dict[str, str], *, worker: bool = True) -> Serve:
    """A `radbridge serve` (not started) with free ports and its log in `root/serve.log`."""
    mllp_port, http_port = free_port(), free_port()
    env = serve_env(
        root,
        {
            "RADBRIDGE_MLLP_PORT": str(mllp_port),
            "RADBRIDGE_HTTP_PORT": str(http_port),
            **settings,
        },
    )
    return Serve(
        argv=["serve"] if worker else ["serve", "--no-worker"],
        env=env,
        log_path=root / "serve.log",
        mllp_port=mllp_port,
        http=f"http://127.0.0.1:{http_port}",
    )


@contextmanager
def stopped_at_exit(*procs: Proc) -> Iterator[None]:
    """Stop every process on exit, whatever happened."""
    try:
        yield
    finally:
        for proc in procs:
            with suppress(Exception):
                proc.stop(timeout=30)


@contextmanager
def database(kind: str, root: Path) -> Iterator[dict[str, str]]:
    """RADBRIDGE_* settings for a store of `kind`: SQLite in the data dir, or a PostgreSQL
    schema of the test's own (dropped on exit; skips without RADBRIDGE_TEST_DATABASE_URL)."""
    if kind == "sqlite":
        yield {}
        return
    from tests.stores import PG_URL, pg_schema_url

    if not PG_URL:
        pytest.skip("PostgreSQL tests need RADBRIDGE_TEST_DATABASE_URL (CI sets it)")
    with pg_schema_url() as url:
        yield {"RADBRIDGE_DATABASE_URL": url}


@dataclass(frozen=True)
class StoreFacts:
    """What the store holds, read directly after the service stopped."""

    messages: int
    distinct_keys: int
    states: dict[str, int]
    extractions_per_message: dict[int, int]
    bundles: int


def store_facts(root: Path, settings: dict[str, str]) -> StoreFacts:
    """Open the service's store (its data dir, or RADBRIDGE_DATABASE_URL) and count."""
    import sqlalchemy as sa

    from adapter.settings import Settings
    from adapter.store import Store
    from adapter.tables import bundles, extractions, messages

    store = Store.open(Settings(data_dir=root / "data"), url=settings.get("RADBRIDGE_DATABASE_URL"))
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    messages.c.id,
                    messages.c.state,
                    messages.c.sending_application,
                    messages.c.sending_facility,
                    messages.c.control_id,
                )
            ).all()
            per_message = dict(
                connection.execute(
                    sa.select(extractions.c.message_id, sa.func.count()).group_by(
                        extractions.c.message_id
                    )
                ).all()
            )
            bundle_count = connection.execute(sa.select(sa.func.count()).select_from(bundles))
            states: dict[str, int] = {}
            for row in rows:
                states[row.state] = states.get(row.state, 0) + 1
            return StoreFacts(
                messages=len(rows),
                distinct_keys=len({(r[2], r[3], r[4]) for r in rows}),
                states=states,
                extractions_per_message={int(k): int(v) for k, v in per_message.items()},
                bundles=int(bundle_count.scalar_one()),
            )
    finally:
        store.close()
