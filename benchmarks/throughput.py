"""Throughput benchmark: where a report's time goes, from the rules stage to the EHR.

The same N chest X-ray reports (Open-i, `../shared/data/openi/`, each made an HL7v2 ORU^R01 of
a patient of its own with the chest X-ray LOINC code, modality CR; evaluation text, held in
memory and in a temporary folder that is deleted) go, in one run and one process, through:

- (a) the rules stage alone: `workers.process.route` + `workers.stages.run_stage` per report,
  templates only (issue 20's insights step is its own row, (a'));
- (a+a') the rules stage with the insights step of each report, as `process_reports` runs them
  (route, insights, rules): what (b) does before its timeline and Bundles;
- (b) `workers.process.process_reports`: (a+a') plus the timeline and the Bundles (built and
  validated);
- (c) `radbridge extract` over a folder of the N `.hl7` files, in this process (the command's
  whole work: read, parse, route, rules, Bundles, JSON files), run right before (d) and again
  right after it (the row: the mean of both; (d)/(c) is then not what the machine's other jobs
  did between the two measurements); the same command as a subprocess, interpreter start-up
  included, is shown beside it;
- (d) the service: `radbridge serve` (embedded Redis, SQLite, the worker's default pool, stage
  rules) with the project's test EHR (`tests/helpers/fhir_server.py`, its schema check off: the EHR's
  own validation is not radbridge's cost) as RADBRIDGE_FHIR_BASE_URL; the N messages are sent
  over one MLLP connection and the clock stops when every message is `delivered` (read from
  serve's SQLite store, read-only, every 0.02 s: polling /metrics instead cost serve about 9 ms
  of CPU per answer); the CPU it took is shown per report, in all and by process (serve, the
  worker's consumer, its pool, Redis) and that of this process (the test EHR and the sender),
  which shares the machine's cores with it.

It prints reports/s of each and the ratios (b)/(a+a'), (b)/(a), (c)/(a), (d)/(c), then the
per-stage split of the worker's path, each stage timed in a loop of its own over the same
reports: parse, route, rules, insights, build (the timeline and the Bundles), validate (the
Bundle's output check alone), store (the worker's
`workers.tasks.process_message` minus the stages before it: claim, timeline lookup, writes),
deliver (the deliver task, as RADBRIDGE_DELIVER_INLINE=false runs it and as a retry does:
store reads, the HTTP push to the test EHR, store writes), with the
store transactions per message counted by an SQLAlchemy event listener. Last, the timeline:
one patient's M reports (increasing observation times) through `workers.tasks.process_message`
on a SQLite store, the median per-report time of reports 1-100 against the last 100, the two
windows timed in turn (`timeline`: the first 100 in a second, new store) so that the machine's
drift over the run weighs on both alike.

    .venv/bin/python benchmarks/throughput.py [--reports 500] [--timeline-reports 2000]
        [--skip service,timeline] [--dir DIR]

The gate of Bundle building and validation (issue 25: "the rules stage plus Bundle building and
validation >= 0.5x the rules stage alone") is (b)/(a+a'): (b) runs the insights step on every
report, so its rules stage is (a+a'), and the ratio is what the timeline, building and checking
the Bundles cost; (b)/(a) is printed beside it (it also charges (b) with the insights step).

Every row starts with one warm-up (imports, compiled patterns, the output check's validator,
compiled once per process: its time is printed) and without what the caches keyed by a report's
text hold (`TEXT_CACHES`): each row reads the N reports as the service reads a report, once, and
no row finds the units, clauses and ConText triggers of the texts that the row before computed.
The machine's load (`os.getloadavg`) is printed at the start and the end; compare ratios from
one run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OPENI = REPO.parent / "shared" / "data" / "openi"
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from adapter.settings import Settings  # noqa: E402
from adapter.store import Store  # noqa: E402
from adapter.store.messages import Incoming  # noqa: E402
from conformance.openi import load_openi  # noqa: E402
from mappings.ehr import has_content  # noqa: E402
from mappings.inbound import parse_message  # noqa: E402
from mappings.media_types import HL7_ER7  # noqa: E402
from mappings.report import Report  # noqa: E402
from mappings.template import Template, load_builtin_templates  # noqa: E402
from workers.process import process_reports, route  # noqa: E402
from workers.stages import run_stage  # noqa: E402

RADBRIDGE = [sys.executable, "-c", "from app.cli import main; main()"]
TEXT_CACHES = (
    ("mappings.units", "_units"),
    ("workers.lexicon_text", "_clauses"),
    ("workers.context", "_scan"),
    ("workers.context", "_boundaries"),
)
"""The caches keyed by a report's text (or a sentence of it), emptied before each row."""
FIRST_TIME = datetime(2026, 1, 1, 8, 0)
EXTRACT_CPU: list[float] = []  # CPU seconds of (c), this process
DRAIN_TIMEOUT_S = 1800.0
DRAIN_POLL_S = 0.02
"""How often (d) reads the message states: a drain of 500 reports takes 2-3 s here, and a poll
every 0.1 s (as before) added 0.05 s on average to it; one poll costs about 0.16 ms of CPU."""


# --------------------------------------------------------------------------- the reports


def _escape(text: str) -> str:
    """HL7v2 escapes for text in a field (the default delimiters)."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


def oru(n: int, text: str, *, mrn: str, observed: datetime) -> bytes:
    """One ORU^R01 of a chest X-ray report: one OBX per line of `text`, segment ends `\\r`."""
    stamp = observed.strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|RIS|RBHOSP|RADBRIDGE|RBHOSP|{stamp}||ORU^R01|BENCH{n:07d}|P|2.5.1",
        f"PID|1||{mrn}^^^RBH^MR||BENCHPATIENT^{n}||19600101|U",
        f"OBR|1|PL{n}|ACC{n:07d}|36643-5^Chest X-ray 2 views^LN|||{stamp}"
        + "|" * 18
        + f"{stamp}||CR|F",
        *(
            f"OBX|{i}|TX|59776-5^Findings^LN|1|{_escape(line)}||||||F"
            for i, line in enumerate(text.splitlines(), 1)
        ),
    ]
    return "\r".join(segments).encode("utf-8")


def openi_texts(count: int) -> list[str]:
    """`count` Open-i report texts (both dev files, repeated when `count` is larger)."""
    files = sorted(OPENI.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"the Open-i reports are not at {OPENI} (../shared beside the checkout)")
    texts = [report.text for path in files for report in load_openi(path)]
    return [texts[i % len(texts)] for i in range(count)]


def messages_of(texts: Sequence[str], *, one_patient: bool = False) -> list[bytes]:
    """An ORU per text; each of its own patient, or all of one patient a day apart."""
    return [
        oru(
            n,
            text,
            mrn="MRN-TIMELINE" if one_patient else f"MRN{n:07d}",
            observed=FIRST_TIME + timedelta(days=n) if one_patient else FIRST_TIME,
        )
        for n, text in enumerate(texts)
    ]


def parse_all(messages: Sequence[bytes], settings: Settings) -> list[Report]:
    """The one report of each message (the worker's parser)."""
    return [
        report
        for raw in messages
        for report in parse_message(
            raw,
            HL7_ER7,
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
    ]


# --------------------------------------------------------------------------- measuring


def timed(work: Callable[[], object], cpu: dict[str, float] | None = None, key: str = "") -> float:
    """Seconds `work()` took; its CPU seconds (this process) go to `cpu[key]` when given: on a
    machine shared with other jobs a row's rate follows the share of a core it got, its CPU time
    much less."""
    started, used = time.perf_counter(), time.process_time()
    work()
    if cpu is not None:
        cpu[key] = time.process_time() - used
    return time.perf_counter() - started


class Transactions:
    """Counts the transactions (BEGIN) a store's engine runs."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        sa.event.listen(store.engine, "begin", self._begin)

    def _begin(self, _connection: Any) -> None:
        self.count += 1


@contextlib.contextmanager
def without_output_check() -> Iterator[None]:
    """Bundles built without their output check (to time building and checking apart)."""
    import mappings.fhir_out as fhir_out
    import mappings.insights.fhir as insights_fhir
    import workers.process as process

    modules = (fhir_out, insights_fhir, process)  # each calls the check
    originals = [module.check_bundle for module in modules]
    for module in modules:
        module.check_bundle = lambda bundle: None
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.check_bundle = original


def check_alone(bundles: Sequence[dict[str, Any]]) -> float:
    """Seconds the output check of the Bundles takes, alone."""
    from mappings.output_check import check_bundle

    return timed(lambda: [check_bundle(bundle) for bundle in bundles])


@dataclass
class Split:
    """Seconds per stage over the N reports, and store transactions per message."""

    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def cold_texts() -> None:
    """Empty the caches keyed by report text (`TEXT_CACHES`): the next row reads each text as
    for the first time (a renamed cache fails here, to be named again)."""
    for module, name in TEXT_CACHES:
        getattr(importlib.import_module(module), name).cache_clear()


def rules_only(reports: Sequence[Report], templates: list[Template], settings: Settings) -> int:
    """(a): route and run the rules stage; returns the number of extractions."""
    done = 0
    for report in reports:
        for template in route(report, templates).chosen:
            run_stage(report, template, settings, _no_engine)
            done += 1
    return done


def rules_with_insights(
    reports: Sequence[Report], templates: list[Template], settings: Settings
) -> int:
    """(a+a'): route, the insights step and the rules stage per report, in `process_reports`'
    order; returns the number of extractions."""
    from workers.insights.extract import insights_of

    done = 0
    for report in reports:
        routing = route(report, templates)
        insights_of(report, settings)
        for template in routing.chosen:
            run_stage(report, template, settings, _no_engine)
            done += 1
    return done


def _no_engine() -> Any:
    raise AssertionError("the rules stage asked for a model")


def stage_split(
    messages: Sequence[bytes],
    reports: Sequence[Report],
    templates: list[Template],
    settings: Settings,
    work: Path,
) -> Split:
    """The per-stage split of the worker's path, each stage in a loop of its own."""
    from tests.helpers.fhir_server import EHR_IDENTITY, FhirServer
    from workers.tasks import make_worker_app, store_for
    from workers.tasks import process_message as worker_message

    split = Split()
    split.seconds["parse"] = timed(lambda: parse_all(messages, settings))
    routings = []
    split.seconds["route"] = timed(lambda: routings.extend(route(r, templates) for r in reports))
    pairs = [(r, t) for r, routing in zip(reports, routings, strict=True) for t in routing.chosen]
    split.seconds["rules"] = timed(
        lambda: [run_stage(r, t, settings, _no_engine) for r, t in pairs]
    )
    from workers.insights.extract import insights_of

    split.seconds["insights"] = timed(lambda: [insights_of(r, settings) for r in reports])
    with without_output_check():
        built = process_reports(reports, templates, settings, _no_engine).results
        split.seconds["build"] = timed(
            lambda: process_reports(reports, templates, settings, _no_engine)
        )
    split.seconds["build"] -= sum(split.seconds[s] for s in ("route", "rules", "insights"))
    split.seconds["validate"] = check_alone([r.bundle for r in built if r.bundle is not None])

    ehr = FhirServer(validate=False).start()
    try:
        data = work / "split-data"
        serving = settings.model_copy(
            update={"data_dir": data, "fhir_base_url": ehr.base_url, **EHR_IDENTITY}
        )
        store = store_for(serving)  # the store the worker's tasks use
        ids = [
            store.accept(Incoming(raw=raw, channel="mllp", control_id=f"S{n}")).message_id
            for n, raw in enumerate(messages)
        ]
        count = Transactions(store)
        bundle_ids: list[str] = []
        worker_seconds = timed(
            lambda: [
                bundle_ids.extend(worker_message(store, serving, message_id) or [])
                for message_id in ids
            ]
        )
        split.seconds["store"] = worker_seconds - sum(
            split.seconds[s] for s in ("parse", "route", "rules", "insights", "build", "validate")
        )
        split.notes["store"] = f"{count.count / len(ids):.1f} transactions/message"
        app = make_worker_app(serving.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
        deliver = app.tasks["radbridge.deliver"]
        before = count.count
        split.seconds["deliver"] = timed(lambda: [deliver(b) for b in bundle_ids])
        split.notes["deliver"] = (
            f"{(count.count - before) / len(bundle_ids):.1f} transactions/Bundle"
        )
        # a Bundle with no value and no insight (the report alone) is not written back
        with_content = sum(1 for b in bundle_ids if has_content(store.get_bundle(b) or {}))
        if ehr.transactions != with_content:
            raise SystemExit(
                f"the test EHR got {ehr.transactions} of {with_content} Bundles with content"
            )
        store.close()
    finally:
        ehr.stop()
    return split


def extract_in_process(folder: Path, out: Path) -> float:
    """(c): `radbridge extract FOLDER --out OUT --stage rules` in this process; seconds."""
    import typer

    from app.cli import app

    command = typer.main.get_command(app)
    started, cpu = time.perf_counter(), time.process_time()
    with Path(os.devnull).open("w") as quiet, contextlib.redirect_stdout(quiet):
        try:
            command.main(
                ["extract", str(folder), "--out", str(out), "--stage", "rules"],
                standalone_mode=False,
            )
        finally:
            elapsed = time.perf_counter() - started
            EXTRACT_CPU.append(time.process_time() - cpu)
    return elapsed


def extract_subprocess(folder: Path, out: Path) -> float:
    """`radbridge extract` as its own process, start-up included; seconds."""
    started = time.perf_counter()
    subprocess.run(
        [*RADBRIDGE, "extract", str(folder), "--out", str(out), "--stage", "rules"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the service


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _states(database: Path) -> dict[str, int]:
    """The message counts by state, read from serve's SQLite store (read-only): what /metrics
    says in `radbridge_messages`, without its other queries (each /metrics answer cost serve
    about 9 ms of CPU, polled ten times a second a tenth of a core taken from what it
    measures)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())


async def _send_all(port: int, messages: Sequence[bytes]) -> None:
    from adapter.mllp import MllpClient

    client = MllpClient("127.0.0.1", port, timeout=60)
    try:
        for message in messages:
            ack = await client.send(message)
            if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                raise SystemExit("a message was not accepted")
    finally:
        await client.close()


def _tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process and its living descendants (Linux /proc), by
    role: `serve` (MLLP, API, group commit), `worker` (Celery's consumer: the broker, the pool's
    feed), `pool` (its children: the tasks), `redis`."""
    stats: dict[int, tuple[int, float, bool]] = {}  # pid -> (parent, CPU seconds, redis?)
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            redis = b"redis-server" in (entry / "cmdline").read_bytes()
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            stats[int(entry.name)] = (int(fields[1]), cpu, redis)
    roles: dict[str, float] = {"serve": 0.0, "worker": 0.0, "pool": 0.0, "redis": 0.0}
    frontier = [(pid, 0)]
    seen = {pid}
    while frontier:
        parent, depth = frontier.pop()
        _, cpu, redis = stats.get(parent, (0, 0.0, False))
        role = "redis" if redis else ("serve", "worker", "pool")[min(depth, 2)]
        roles[role] += cpu
        for child, (ppid, _, _) in stats.items():
            if ppid == parent and child not in seen:
                seen.add(child)
                frontier.append((child, depth + 1))
    return roles


@dataclass
class ServiceRun:
    """(d): seconds from the first send until every message was delivered, and the detail."""

    seconds: float
    sent_seconds: float
    delivered_when_sent: int  # delivered by the time the last ACK came
    pool: str
    delivered: int
    cpu: dict[str, float]  # CPU seconds of serve and its children by role (`_tree_cpu`)
    own: float  # CPU seconds of this process meanwhile (the test EHR, the sender, the poll)


def service(messages: Sequence[bytes], work: Path) -> ServiceRun:
    """(d): `radbridge serve` with the test EHR, the N messages over MLLP, until drained."""
    import httpx

    from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer

    ehr = FhirServer(validate=False).start()
    mllp, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "RADBRIDGE_DATA_DIR": str(work / "serve-data"),
        "RADBRIDGE_MLLP_PORT": str(mllp),
        "RADBRIDGE_HTTP_PORT": str(http_port),
        "RADBRIDGE_FHIR_BASE_URL": ehr.base_url,
        "RADBRIDGE_STAGE": "rules",
        **EHR_IDENTITY_ENV,
    }
    for name in ("RADBRIDGE_REDIS_URL", "RADBRIDGE_DATABASE_URL"):
        env.pop(name, None)
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(
        [*RADBRIDGE, "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    http = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{http}/readyz", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"radbridge serve did not get ready (log: {work / 'serve.log'})")
            time.sleep(0.2)
        cpu_before, own_before = _tree_cpu(process.pid), time.process_time()
        started = time.perf_counter()
        asyncio.run(_send_all(mllp, messages))
        sent = time.perf_counter() - started
        database = work / "serve-data" / "radbridge.db"
        delivered_when_sent = _states(database).get("delivered", 0)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            states = _states(database)
            if states.get("delivered", 0) + states.get("dead", 0) >= len(messages):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not drained after {DRAIN_TIMEOUT_S:.0f} s: {states}")
            time.sleep(DRAIN_POLL_S)
        seconds = time.perf_counter() - started
        cpu_after, own = _tree_cpu(process.pid), time.process_time() - own_before
        cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
        pool = next(
            (
                line.split("concurrency:", 1)[1].strip()
                for line in (work / "serve.log").read_text(errors="replace").splitlines()
                if "concurrency:" in line
            ),
            "?",
        )
        return ServiceRun(
            seconds, sent, delivered_when_sent, pool, states.get("delivered", 0), cpu, own
        )
    finally:
        process.send_signal(2)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        ehr.stop()


# --------------------------------------------------------------------------- the timeline


TIMELINE_WINDOW = 100
"""The reports timed at each end of a patient's timeline (its first and its last)."""


def timeline(
    texts: Sequence[str], settings: Settings, work: Path
) -> tuple[list[float], list[float]]:
    """Seconds per report of one patient's first and last `TIMELINE_WINDOW` reports through the
    worker. The history (every report but the last window) goes into one store untimed; then
    each of the last window's reports in that store is timed in turn with the same patient's
    report of the first window in a second, new store (the same messages its history began
    with), alternating which goes first. Both windows run in the same seconds, so a machine
    that slows down or speeds up meanwhile (other jobs on it) weighs on both alike: timed one
    after the other, minutes apart, the ratio moved by up to 0.4 between runs of the same code
    on this 2-core machine, more than what the history changes."""
    from workers.tasks import process_message as worker_message

    def open_with(name: str, raws: Sequence[bytes]) -> tuple[Store, list[int]]:
        store = Store.open(settings.model_copy(update={"data_dir": work / name}))
        ids = [
            store.accept(Incoming(raw=raw, channel="mllp", control_id=f"T{n}")).message_id
            for n, raw in enumerate(raws)
        ]
        return store, ids

    def timed_one(store: Store, message_id: int) -> float:
        return timed(lambda: worker_message(store, settings, message_id))

    raws = messages_of(texts, one_patient=True)
    window = min(TIMELINE_WINDOW, len(raws) // 2)
    history, history_ids = open_with("timeline-data", raws)
    fresh, fresh_ids = open_with("timeline-first", raws[:window])
    try:
        for message_id in history_ids[:-window]:
            worker_message(history, settings, message_id)
        first: list[float] = []
        last: list[float] = []
        for n, (early, late) in enumerate(zip(fresh_ids, history_ids[-window:], strict=True)):
            if n % 2:
                last.append(timed_one(history, late))
                first.append(timed_one(fresh, early))
            else:
                first.append(timed_one(fresh, early))
                last.append(timed_one(history, late))
    finally:
        history.close()
        fresh.close()
    return first, last


# --------------------------------------------------------------------------- the table


def load() -> str:
    """The load averages (1, 5, 15 min)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """The CPU and core count."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def output_check() -> str:
    """Which output check the Bundles get: the installed R4 JSON schema; else, for this
    benchmark only, the official copy in ../shared (RADBRIDGE_FHIR_SCHEMA, inherited by serve);
    else the R4B models."""
    from mappings.output_check import SCHEMA_ENV, schema_path

    shared = REPO.parent / "shared" / "fixtures" / "fhir-r4" / "fhir.schema.json"
    if schema_path() is None and shared.is_file():
        os.environ[SCHEMA_ENV] = str(shared)
    found = schema_path()
    return f"R4 JSON schema ({found})" if found else "R4B models (no R4 JSON schema installed)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=500)
    parser.add_argument("--timeline-reports", type=int, default=2000)
    parser.add_argument(
        "--skip", default="", help="comma-separated: subprocess, service, split, timeline"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"machine: {machine()}; load at start: {load()}", flush=True)
    print(f"output check: {output_check()}", flush=True)
    settings = Settings(stage="rules")
    templates = list(load_builtin_templates().values())
    texts = openi_texts(args.reports)
    messages = messages_of(texts)
    reports = parse_all(messages, settings)
    rows: list[tuple[str, float | None, str]] = []
    work = Path(tempfile.mkdtemp(prefix="radbridge-throughput-", dir=args.dir))
    try:
        # warm-up (imports, compiled patterns), the output check's validator timed apart
        with without_output_check():
            warm = process_reports(reports[:20], templates, settings, _no_engine).results
        from mappings.output_check import check_bundle

        compiled = timed(lambda: [check_bundle(r.bundle) for r in warm if r.bundle is not None])
        print(f"output check's validator compiled in {compiled:.2f} s (once per process)")
        extractions = 0

        def rules() -> None:
            nonlocal extractions
            extractions = rules_only(reports, templates, settings)

        cpu: dict[str, float] = {}
        cold_texts()
        a = len(reports) / timed(rules, cpu, "a")
        rows.append(("(a) rules stage alone", a, f"{extractions} extractions"))
        from workers.insights.extract import insights_of

        cold_texts()
        aprime = len(reports) / timed(
            lambda: [insights_of(r, settings) for r in reports], cpu, "a'"
        )
        rows.append(("(a') insights step alone", aprime, "issue 20: on every report"))
        cold_texts()
        a_with = len(reports) / timed(
            lambda: rules_with_insights(reports, templates, settings), cpu, "a+a'"
        )
        rows.append(("(a+a') rules stage with insights", a_with, "the rules stage (b) runs"))
        results: list[Any] = []
        cold_texts()
        b = len(reports) / timed(
            lambda: results.extend(
                process_reports(reports, templates, settings, _no_engine).results
            ),
            cpu,
            "b",
        )
        rows.append(("(b) process_reports + Bundles", b, f"{len(results)} Bundles"))
        folder = work / "reports"
        folder.mkdir()
        for n, raw in enumerate(messages):
            (folder / f"{n:07d}.hl7").write_bytes(raw)
        c2 = None if "subprocess" in skip else extract_subprocess(folder, work / "out-c2")
        cold_texts()
        c_seconds = [extract_in_process(folder, work / "out-c")]
        c = len(reports) / c_seconds[0]
        c_row = len(rows)
        rows.append(("(c) radbridge extract", c, "in this process"))
        if c2 is not None:
            rows.append(
                (
                    "(c') radbridge extract",
                    len(reports) / c2,
                    "a process of its own, start-up included",
                )
            )
        d = None
        run = None
        if "service" not in skip:
            run = service(messages, work)
            d = len(messages) / run.seconds
            rows.append(
                (
                    "(d) service, until drained",
                    d,
                    f"pool {run.pool}; all ACKed after {run.sent_seconds:.1f} s "
                    f"({run.delivered_when_sent} delivered by then); "
                    f"{run.delivered} delivered",
                )
            )
            # (c) again right after (d): (d)/(c) against the mean of both, so a machine that
            # slows down or speeds up over the run (other jobs) weighs on both sides alike
            cold_texts()
            c_seconds.append(extract_in_process(folder, work / "out-c3"))
            c = len(reports) / statistics.mean(c_seconds)
            before, after = (len(reports) / seconds for seconds in c_seconds)
            rows[c_row] = (
                "(c) radbridge extract",
                c,
                f"in this process; {before:.1f} before (d), {after:.1f} after: their mean",
            )
        split = (
            None if "split" in skip else stage_split(messages, reports, templates, settings, work)
        )
        ends = (
            None
            if "timeline" in skip
            else timeline(openi_texts(args.timeline_reports), settings, work)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nthroughput: {len(reports)} Open-i chest X-ray reports (HL7v2 ORU^R01, one patient "
        f"each), stage rules; load at end: {load()}"
    )
    print(f"{'row':<34} {'reports/s':>10}  detail")
    for label, rate, detail in rows:
        shown = f"{rate:>10.1f}" if rate is not None else f"{'-':>10}"
        print(f"{label:<34} {shown}  {detail}")
    print(
        f"\n(b)/(a+a') = {b / a_with:.2f} (gate >= 0.5: (b) runs the insights step too, so its"
        f" rules stage is (a+a'))   (b)/(a) = {b / a:.2f} (insights charged to (b))"
    )
    per = {key: seconds * 1000 / len(reports) for key, seconds in cpu.items()}
    with_insights = per["a+a'"]
    print(
        "CPU ms per report (this process): "
        + ", ".join(f"({key}) {ms:.2f}" for key, ms in per.items())
        + f"; by CPU time (b)/(a+a') = {with_insights / per['b']:.2f}, "
        f"(b)/(a) = {per['a'] / per['b']:.2f}"
    )
    print(f"(c)/(a) = {c / a:.2f}", end="")
    print(f"   (d)/(c) = {d / c:.2f} (gate >= 0.7)" if d is not None else "")
    if run is not None and EXTRACT_CPU:
        # on a machine shared with other jobs the rates follow the CPU share each got; CPU time
        # per report does not: (d) can use every core, (c) one
        c_cpu = statistics.mean(EXTRACT_CPU) / len(reports)
        d_cpu = sum(run.cpu.values()) / len(messages)
        cores = os.cpu_count() or 1
        print(
            f"CPU per report: (c) {c_cpu * 1000:.1f} ms (one process), (d) {d_cpu * 1000:.1f} ms "
            f"(serve, worker pool, Redis); on {cores} idle cores (d) could drain at "
            f"{cores / d_cpu:.0f} reports/s, (c) run at {1 / c_cpu:.0f}: "
            f"{cores * c_cpu / d_cpu:.2f}x"
        )
        print(
            "(d) CPU per report by process: "
            + ", ".join(
                f"{role} {seconds * 1000 / len(messages):.1f} ms"
                for role, seconds in run.cpu.items()
            )
            + f"; this process (the test EHR, the sender) {run.own * 1000 / len(messages):.1f} ms"
        )
    if split is not None:
        total = sum(split.seconds.values())
        print(f"\nper-stage split (worker's path, {len(reports)} reports, each stage on its own)")
        print(f"{'stage':<10} {'ms/report':>10} {'share':>7}  detail")
        for stage, seconds in split.seconds.items():
            print(
                f"{stage:<10} {seconds * 1000 / len(reports):>10.2f} {seconds / total:>7.1%}  "
                f"{split.notes.get(stage, '')}"
            )
    if ends is not None and ends[0]:
        first, last = (statistics.median(times) for times in ends)
        m, w = args.timeline_reports, len(ends[0])
        print(
            f"\ntimeline: one patient's {m} reports through the worker (SQLite): median "
            f"{first * 1000:.1f} ms for reports 1-{w}, {last * 1000:.1f} ms for {m - w + 1}-{m} "
            f"(timed in turn): {last / first:.2f}x (gate <= 1.2)"
        )
    print(f"load at end: {load()}")


if __name__ == "__main__":
    main()
