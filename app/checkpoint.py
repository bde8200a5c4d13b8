"""The checkpoint of a resumable `radbridge extract` over CSV/JSONL records.

`.radbridge-checkpoint.jsonl` in the output folder holds two kinds of lines, appended, flushed
and synced:

- an options line, `{"options_id": ..., "options": {...}}`, when a run starts with options the
  last options line does not hold (the first run; a `--retry-rejected` run with other options);
- one line per record done: `id`, `source`, `line`, `bundles`, `rejected`, `row` and the
  `options_id` it ran under. The last line of an id wins (a retried record supersedes itself).

A rerun with the same options skips every id done. A rerun with other options (another
`--template`, `--stage`, model, or a template's version or content) raises `CheckpointMismatch`
naming each difference, unless the resume mode says what to do:

- `restart`: the checkpoint and the Bundles it lists are removed, every record is done again;
- `retry_rejected`: records with a rejection are done again under the new options (their old
  Bundles removed first); accepted records are kept, and their table rows say which stage,
  template version and model produced them.

A checkpoint without an options line (written before options were recorded) takes the options
of the run that finds it (`adopted` says so, for a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from adapter.errors import InputError

CHECKPOINT_FILE = ".radbridge-checkpoint.jsonl"
Options = Mapping[str, Any]
Entry = dict[str, Any]


class CheckpointMismatch(InputError):
    """The output folder's checkpoint was written with other options; `changes` names each."""

    def __init__(self, path: Path, changes: list[str]) -> None:
        self.changes = changes
        super().__init__(
            f"{path} was written with other options ({'; '.join(changes)}): run with the same "
            "options, --retry-rejected (keep the accepted records, redo the rejected ones with "
            "the new options) or --restart (everything again), or use another --out folder"
        )


class Resume(StrEnum):
    """What a rerun does with a checkpoint written with other options."""

    REFUSE = "refuse"
    RESTART = "restart"
    RETRY_REJECTED = "retry_rejected"


def options_id(options: Options) -> str:
    """A short, stable digest of the options (their canonical JSON)."""
    canonical = json.dumps(options, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def describe_changes(old: Options, new: Options) -> list[str]:
    """One phrase per option that differs (`stage: rules -> llm`); for a mapping option, one per
    changed entry and one for the entries added or dropped (`templates dropped: a, b`)."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
            changes.append(f"{key}: {before} -> {after}")
            continue
        for name in sorted(set(before) & set(after)):
            if before[name] != after[name]:
                changes.append(f"{key} {name}: {before[name]} -> {after[name]}")
        if added := sorted(set(after) - set(before)):
            changes.append(f"{key} added: {', '.join(added)}")
        if dropped := sorted(set(before) - set(after)):
            changes.append(f"{key} dropped: {', '.join(dropped)}")
    return changes


def _ends_cut(path: Path) -> bool:
    """Whether the file ends inside a line (a hard kill during a write)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines: list[dict[str, Any]] = []
    for text in path.read_text("utf-8").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line cut by a hard kill: that record is done again
        if isinstance(line, dict):
            lines.append(line)
    return lines


class Checkpoint:
    """The checkpoint of one output folder, opened for a run with `options` (see the module
    docstring); `done` says which records this run skips, `add` records one."""

    def __init__(self, folder: Path, options: Options, resume: Resume = Resume.REFUSE) -> None:
        self.path = folder / CHECKPOINT_FILE
        self.options = dict(options)
        self.options_id = options_id(options)
        self.entries: dict[str, Entry] = {}
        self.adopted = False
        self.retrying: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._cut = _ends_cut(self.path)
        recorded: dict[str, Any] | None = None
        for line in _read_lines(self.path):
            if isinstance(line.get("options"), dict):
                recorded = line["options"]
            elif isinstance(line.get("id"), str):
                self.entries[line["id"]] = line
        changed = recorded is not None and options_id(recorded) != self.options_id
        if changed and resume is Resume.REFUSE:
            assert recorded is not None
            raise CheckpointMismatch(self.path, describe_changes(recorded, self.options))
        if resume is Resume.RESTART:
            self._remove_all(folder)
        self.adopted = recorded is None and bool(self.entries)
        if recorded is None or changed or resume is Resume.RESTART:
            self._append({"options_id": self.options_id, "options": self.options})
        if resume is Resume.RETRY_REJECTED:
            self.retrying = frozenset(
                key for key, entry in self.entries.items() if entry.get("rejected")
            )

    def _remove_all(self, folder: Path) -> None:
        for entry in self.entries.values():
            for name in entry.get("bundles", []):
                (folder / f"{name}.json").unlink(missing_ok=True)
        self.entries = {}
        self.path.unlink(missing_ok=True)
        self._cut = False

    def done(self, report_id: str) -> bool:
        """Whether this run skips the record (done before, and not retried now)."""
        return report_id in self.entries and report_id not in self.retrying

    def previous_bundles(self, report_id: str) -> list[str]:
        """The Bundles an earlier run wrote for a record this run does again."""
        entry = self.entries.get(report_id)
        return list(entry.get("bundles", [])) if entry else []

    def add(self, entry: Entry) -> None:
        """Record one record as done under this run's options (appended, flushed, synced)."""
        line = {**entry, "options_id": self.options_id}
        with self._lock:
            self._append(line)
            self.entries[line["id"]] = line

    def _append(self, line: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            if self._cut:  # a line cut by a hard kill: the next one starts on its own line
                fh.write("\n")
                self._cut = False
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
