"""Research backfill: `radbridge extract` over CSV/JSONL tables of reports, resumable.

Each record (`id`, `text`, optional `language`, `modality`, `date`, `template`) goes through the
one use case (`workers.process`); its Bundles are written to the `--out` folder, then one line
goes to the checkpoint there (`app.checkpoint`, flushed and synced): the record's id, where it
came from, the Bundles written, its rejections and its table row. A rerun of the same command
skips every id in the checkpoint, so after Ctrl-C (the records in flight finish and are
recorded) the same command continues where it stopped and no report is done twice. The
checkpoint records the run's options (`backfill_options`: template choice, stage, rules
version, engine and model, each template's version and content): a rerun with other options is
refused unless it says `--restart` or `--retry-rejected`. A record whose id was seen before in
the input is rejected (`duplicate_id`).

Concurrency: the engine registry's (`workers.engine_registry`): with a model stage and
RADBRIDGE_ENGINE=openai, RADBRIDGE_LLM_CONCURRENCY records are in flight (threads: each waits
on the model server); in-process (llama.cpp, or the rules stage) one at a time. The table rows are `app.research_table`'s.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from adapter.inputs import Record, Rejection
from adapter.settings import Settings
from app.checkpoint import Checkpoint, Resume
from app.research_table import table_row
from mappings.errors import MessageRejected
from mappings.inbound import report_from_record
from mappings.report import Report
from mappings.template import Template
from workers.engine_registry import entry_for
from workers.process import EngineFactory, Result, process_reports
from workers.rules_stage import RULES_MODEL


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", "utf-8")
    tmp.replace(path)


@dataclass
class BackfillRun:
    """What a backfill did in this run (the checkpoint holds every run's entries)."""

    skipped: int = 0
    done: int = 0
    retried: int = 0  # of `done`: records an earlier run rejected (`--retry-rejected`)
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


def backfill_options(
    templates: Mapping[str, Template], forced: bool, settings: Settings
) -> dict[str, Any]:
    """What a backfill's output depends on, as the checkpoint records it: the template choice
    (the forced ids, or routing), the stage, the rules' version (rules, hybrid), the engine and
    model and whether the insights ask it (llm, hybrid), and each template's version and a digest of its content (an edit
    without a new version counts too)."""
    options: dict[str, Any] = {
        "template": ";".join(sorted(templates)) if forced else "routed",
        "stage": settings.stage,
        "templates": {
            key: f"{template.version} ({_digest(template)})"
            for key, template in sorted(templates.items())
        },
    }
    if settings.stage != "llm":
        options["rules"] = f"{RULES_MODEL.name} {RULES_MODEL.version}"
    if settings.stage != "rules":
        options["insights_model"] = settings.insights_model
    options.update(entry_for(settings).checkpoint_options(settings))
    return options


def _digest(template: Template) -> str:
    content = template.model_dump_json().encode("utf-8")
    return "sha256:" + hashlib.sha256(content).hexdigest()[:12]


def open_checkpoint(
    out_dir: Path,
    templates: Mapping[str, Template],
    forced: bool,
    settings: Settings,
    resume: Resume = Resume.REFUSE,
) -> Checkpoint:
    """The output folder's checkpoint, opened for a run with these options (CheckpointMismatch
    when it was written with others and `resume` does not say what to do)."""
    return Checkpoint(out_dir, backfill_options(templates, forced, settings), resume)


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
    checkpoint: Checkpoint | None = None,
) -> BackfillRun:
    """Extract every record the checkpoint does not skip (see the module docstring); without
    `checkpoint`, the folder's is opened with these options (refused when they differ)."""
    if checkpoint is None:
        checkpoint = open_checkpoint(out_dir, templates, forced, settings)
    job = _Backfill(templates, forced, settings, engine, out_dir, builtin, on_done, checkpoint)
    seen: set[str] = set()
    workers = entry_for(settings).concurrency(settings)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    in_flight: set[Future[None]] = set()
    with _stop_on_interrupt() as stopping:
        try:
            for record in records:
                if stopping.is_set():
                    job.run.interrupted = True
                    break
                key = _record_key(record, seen)
                if isinstance(key, tuple):
                    job.reject_now(record, *key)
                elif checkpoint.done(key):
                    job.run.skipped += 1
                elif pool is None:
                    job.one(record, key)
                else:
                    in_flight = _submit(pool, in_flight, workers, job.one, record, key)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # the records in flight finish and are recorded
    for future in in_flight:
        future.result()
    job.run.entries = list(checkpoint.entries.values())
    return job.run


def _record_key(record: Record, seen: set[str]) -> str | tuple[str, str]:
    """A record's id (added to `seen`), or why it is rejected without one: a row without a
    usable id is rejected on every run (there is nothing to resume by)."""
    if record.problem is not None:
        return "not_a_record", record.problem
    report_id = str(record.data.get("id") or "").strip()
    if not report_id:
        return "no_id", "the record has no id"
    if report_id in seen:
        return "duplicate_id", "an earlier record has the same id"
    seen.add(report_id)
    return report_id


def _submit(
    pool: ThreadPoolExecutor,
    in_flight: set[Future[None]],
    limit: int,
    work: Callable[[Record, str], None],
    record: Record,
    report_id: str,
) -> set[Future[None]]:
    """Submit one record, first waiting while `limit` are in flight; returns those in flight."""
    if len(in_flight) >= limit:
        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            future.result()
    in_flight.add(pool.submit(work, record, report_id))
    return in_flight


@dataclass
class _Backfill:
    """One run's work on a record (thread-safe: the pool's threads share it)."""

    templates: Mapping[str, Template]
    forced: bool
    settings: Settings
    engine: EngineFactory
    out_dir: Path
    builtin: Callable[[], Mapping[str, Template]]
    on_done: Callable[[dict[str, Any]], None] | None
    checkpoint: Checkpoint
    run: BackfillRun = field(default_factory=BackfillRun)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, record: Record, report_id: str) -> None:
        """Extract one record, write its Bundles, then record it in the checkpoint."""
        entry: dict[str, Any] = {
            "id": report_id, "source": record.source, "line": record.line,
            "bundles": [], "rejected": [], "row": None,
        }  # fmt: skip
        for name in self.checkpoint.previous_bundles(report_id):  # a record done again
            (self.out_dir / f"{name}.json").unlink(missing_ok=True)
        chosen = _templates_for(record, self.templates, self.forced, self.builtin)
        if isinstance(chosen, str):
            entry["rejected"].append(_rejection(record, "unknown_template", chosen))
        else:
            try:
                report = report_from_record(
                    record.data, default_language=self.settings.default_language
                )
            except MessageRejected as exc:
                entry["rejected"].append(_rejection(record, exc.reason, exc.detail, exc.code.value))
            else:
                self._extract(record, report, chosen, entry)
        self.checkpoint.add(entry)
        with self.lock:
            self.run.done += 1
            self.run.retried += report_id in self.checkpoint.retrying
        if self.on_done is not None:
            self.on_done(entry)

    def _extract(
        self,
        record: Record,
        report: Report,
        chosen: tuple[list[Template], bool],
        entry: dict[str, Any],
    ) -> None:
        outcome = process_reports(
            [report], chosen[0], self.settings, self.engine, explicit=chosen[1], reject_failed=True
        )
        for result in outcome.results:
            assert result.bundle is not None
            write_json(self.out_dir / f"{result.name}.json", result.bundle)
            entry["bundles"].append(result.name)
        for rejected in outcome.rejected:
            code = rejected.hl7_code.value if rejected.hl7_code else None
            entry["rejected"].append(_rejection(record, rejected.reason, rejected.detail, code))
        if outcome.results:
            entry["row"] = table_row(entry["id"], outcome.results)
        with self.lock:
            self.run.results.extend(outcome.results)

    def reject_now(self, record: Record, reason: str, detail: str) -> None:
        """A row without a usable id: a rejection line, never in the checkpoint."""
        entry = {"rejected": [_rejection(record, reason, detail)]}
        self.run.unkeyed.append(entry)
        if self.on_done is not None:
            self.on_done(entry)


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
