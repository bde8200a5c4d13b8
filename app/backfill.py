"""Research backfill: `radbridge extract` over CSV/JSONL tables of reports, resumable.

Each record (`id`, `text`, optional `language`, `modality`, `date`, `template`) goes through the
one use case (`workers.process`); its Bundles are written to the `--out` folder, then one line
goes to `.radbridge-checkpoint.jsonl` there (flushed and synced): the record's id, where it came
from, the Bundles written, its rejections and its table row. A rerun of the same command skips
every id in the checkpoint, so after Ctrl-C (the records in flight finish and are recorded) the
same command continues where it stopped and no report is done twice. A record whose id was seen
before in the input is rejected (`duplicate_id`).

Concurrency: with RADBRIDGE_ENGINE=openai, RADBRIDGE_LLM_CONCURRENCY records are in flight
(threads: each waits on the model server); in-process (llama.cpp, or the rules stage) one at a
time. The table (`--table out.csv`, or `.parquet` with pyarrow) has one row per report and, per
variable, its value (the status when no value is stated), status, evidence quote and confidence.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from adapter.inputs import Record, Rejection
from adapter.settings import Settings
from mappings.errors import MessageRejected
from mappings.inbound import report_from_record
from mappings.report import FindingStatus
from mappings.template import Template
from workers.process import EngineFactory, Result, process_reports

CHECKPOINT_FILE = ".radbridge-checkpoint.jsonl"
TABLE_SUFFIXES = (".csv", ".parquet")
Row = dict[str, Any]


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", "utf-8")
    tmp.replace(path)


def table_row(report_id: str, results: Sequence[Result]) -> Row:
    """One table row: the report id, its template(s), and per variable its value (the status
    when no value is stated), status, evidence quote, confidence and locations (when stated).
    Column names are the variable ids; `template.variable` when a report has several templates."""
    row: Row = {"id": report_id, "template": ";".join(r.template.id for r in results)}
    for result in results:
        prefix = f"{result.template.id}." if len(results) > 1 else ""
        for value in result.extraction.values:
            name = prefix + value.variable_id
            stated = value.value is not None and value.status is not FindingStatus.NOT_MENTIONED
            row[name] = str(value.value) if stated else value.status.value
            row[f"{name}.status"] = value.status.value
            row[f"{name}.evidence"] = value.evidence.quote if value.evidence else ""
            row[f"{name}.confidence"] = "" if value.confidence is None else value.confidence
            if value.locations:
                row[f"{name}.locations"] = ";".join(value.locations)
    return row


def check_table_path(path: Path) -> str | None:
    """Why `--table` cannot be written (None when it can): an unknown suffix, or `.parquet`
    without pyarrow."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        return f"--table must end in .csv or .parquet (got {path.name!r})"
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        return "--table .parquet needs pyarrow (pip install pyarrow), or write .csv"
    return None


def write_table(path: Path, rows: Sequence[Row]) -> None:
    """The rows as CSV or Parquet; columns: id, template, then the variables in first-seen order."""
    columns: dict[str, None] = {"id": None, "template": None}
    for row in rows:
        columns.update(dict.fromkeys(row))
    names = list(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        arrow: Any = importlib.import_module("pyarrow")
        parquet: Any = importlib.import_module("pyarrow.parquet")
        data = {name: [_cell(row.get(name)) for row in rows] for name in names}
        parquet.write_table(arrow.table(data), path)
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _cell(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class Checkpoint:
    """The `.radbridge-checkpoint.jsonl` of an output folder: one line per record done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text("utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut by a hard kill: that record is done again
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    self.entries.setdefault(entry["id"], entry)
        self._lock = threading.Lock()

    def done(self, report_id: str) -> bool:
        """Whether the record was done by this or an earlier run."""
        return report_id in self.entries

    def add(self, entry: dict[str, Any]) -> None:
        """Record one record as done (appended, flushed and synced)."""
        with self._lock:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.entries[entry["id"]] = entry


@dataclass
class BackfillRun:
    """What a backfill did in this run (the checkpoint holds every run's entries)."""

    skipped: int = 0
    done: int = 0
    interrupted: bool = False
    results: list[Result] = field(default_factory=list)
    unkeyed: list[dict[str, Any]] = field(default_factory=list)  # rows without a usable id
    entries: list[dict[str, Any]] = field(default_factory=list)  # the checkpoint, every run


def _rejection(record: Record, reason: str, detail: str, code: str | None = None) -> dict[str, Any]:
    control_id = str(record.data.get("id") or "") or None
    return asdict(Rejection(record.source, record.line, control_id, reason, detail, code))


def _templates_for(
    record: Record,
    templates: Mapping[str, Template],
    forced: bool,
    builtin: Callable[[], Mapping[str, Template]],
) -> tuple[list[Template], bool] | str:
    """The templates a record runs against and whether they are explicit, or why none."""
    if forced:
        return list(templates.values()), True
    named = str(record.data.get("template") or "").strip()
    if not named:
        return list(templates.values()), False
    known = builtin()
    if named not in known:
        return f"unknown template {named!r}"
    return [known[named]], True


def run_backfill(
    records: Iterable[Record],
    templates: Mapping[str, Template],
    forced: bool,
    settings: Settings,
    engine: EngineFactory,
    out_dir: Path,
    *,
    builtin: Callable[[], Mapping[str, Template]],
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> BackfillRun:
    """Extract every record not yet in the checkpoint (see the module docstring)."""
    checkpoint = Checkpoint(out_dir / CHECKPOINT_FILE)
    run = BackfillRun()
    lock = threading.Lock()

    def one(record: Record, report_id: str) -> None:
        entry: dict[str, Any] = {
            "id": report_id, "source": record.source, "line": record.line,
            "bundles": [], "rejected": [], "row": None,
        }  # fmt: skip
        chosen = _templates_for(record, templates, forced, builtin)
        if isinstance(chosen, str):
            entry["rejected"].append(_rejection(record, "unknown_template", chosen))
        else:
            try:
                report = report_from_record(record.data, default_language=settings.default_language)
            except MessageRejected as exc:
                entry["rejected"].append(_rejection(record, exc.reason, exc.detail, exc.code.value))
            else:
                outcome = process_reports(
                    [report], chosen[0], settings, engine, explicit=chosen[1], reject_failed=True
                )
                for result in outcome.results:
                    assert result.bundle is not None
                    write_json(out_dir / f"{result.name}.json", result.bundle)
                    entry["bundles"].append(result.name)
                for rejected in outcome.rejected:
                    code = rejected.hl7_code.value if rejected.hl7_code else None
                    entry["rejected"].append(
                        _rejection(record, rejected.reason, rejected.detail, code)
                    )
                if outcome.results:
                    entry["row"] = table_row(report_id, outcome.results)
                with lock:
                    run.results.extend(outcome.results)
        checkpoint.add(entry)
        with lock:
            run.done += 1
        if on_done is not None:
            on_done(entry)

    def reject_now(record: Record, reason: str, detail: str) -> None:
        # a row without a usable id is rejected on every run (there is nothing to resume by)
        entry = {"rejected": [_rejection(record, reason, detail)]}
        run.unkeyed.append(entry)
        if on_done is not None:
            on_done(entry)

    seen: set[str] = set()
    workers = settings.llm_concurrency if settings.engine == "openai" else 1
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    in_flight: set[Future[None]] = set()
    with _stop_on_interrupt() as stopping:
        try:
            for record in records:
                if stopping.is_set():
                    run.interrupted = True
                    break
                if record.problem is not None:
                    reject_now(record, "not_a_record", record.problem)
                    continue
                report_id = str(record.data.get("id") or "").strip()
                if not report_id:
                    reject_now(record, "no_id", "the record has no id")
                    continue
                if report_id in seen:
                    reject_now(record, "duplicate_id", "an earlier record has the same id")
                    continue
                seen.add(report_id)
                if checkpoint.done(report_id):
                    run.skipped += 1
                    continue
                if pool is None:
                    one(record, report_id)
                    continue
                if len(in_flight) >= workers:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                in_flight.add(pool.submit(one, record, report_id))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # the records in flight finish and are recorded
    for future in in_flight:
        future.result()
    run.entries = list(checkpoint.entries.values())
    return run


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """While extracting: the first Ctrl-C (SIGINT) asks to stop after the records in flight;
    a second one interrupts at once. Outside the main thread nothing is installed."""
    stopping = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stopping
    finally:
        signal.signal(signal.SIGINT, previous)
