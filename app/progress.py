"""Progress of a long command (`eval`, `extract`) on stderr: a bar on a terminal, plain lines
elsewhere (a log file, CI, a pipe), nothing when asked to be quiet.

A line is printed when a task starts, at each tenth of it, at least every `interval_s` seconds
while it runs (a model can take minutes per tenth) and when it ends:
`evaluating: 120/1535 (7%), 0:01:02 elapsed, about 0:12:10 left`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[], None]
Start = Callable[[str, int], Advance]
"""Called once per task with its description and number of steps; returns what advances it."""


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


@dataclass
class _Task:
    description: str
    total: int
    began: float
    printed: float
    done: int = 0
    tenth: int = 0


class LineProgress:
    """Progress as plain lines on a stream (see the module docstring)."""

    def __init__(
        self, stream: IO[str], interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()

    def start(self, description: str, total: int) -> Advance:
        """Print the starting line; return what advances the task by one step."""
        now = self.clock()
        task = _Task(description, total, began=now, printed=now)
        self._line(task)

        def advance() -> None:  # from several threads (a backfill against a model server)
            with self._lock:
                task.done += 1
                tenth = task.done * 10 // task.total if task.total else 10
                due = self.clock() - task.printed >= self.interval_s
                if tenth > task.tenth or due or task.done == task.total:
                    task.tenth = tenth
                    self._line(task)

        return advance

    def _line(self, task: _Task) -> None:
        now = self.clock()
        elapsed = now - task.began
        share = f" ({task.done * 100 // task.total}%)" if task.total else ""
        text = f"{task.description}: {task.done}/{task.total}{share}, {_duration(elapsed)} elapsed"
        if 0 < task.done < task.total:
            text += f", about {_duration(elapsed / task.done * (task.total - task.done))} left"
        self.stream.write(text + "\n")
        self.stream.flush()
        task.printed = now


def _quiet(description: str, total: int) -> Advance:
    return lambda: None


@contextmanager
def progress(console: Console, *, quiet: bool = False) -> Iterator[Start]:
    """The progress of a command on `console` (stderr): a rich bar when it is a terminal,
    `LineProgress` lines when it is not, nothing when `quiet`."""
    if quiet:
        yield _quiet
        return
    if not console.is_terminal:
        yield LineProgress(console.file).start
        return
    bars = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with bars:

        def start(description: str, total: int) -> Advance:
            task = bars.add_task(description, total=total)
            return lambda: bars.advance(task)

        yield start
