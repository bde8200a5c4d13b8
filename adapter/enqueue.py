"""Queueing the extraction of accepted messages, several per task, off the ingest path.

serve stores a message, ACKs it, then hands its id here (`BatchEnqueuer.submit`, never
blocking). One thread sends the tasks: it holds an id for up to RADBRIDGE_EXTRACT_BATCH_WAIT_MS
for others to join it and sends up to RADBRIDGE_EXTRACT_BATCH ids as one task
(`adapter.queue.enqueue_extract_batch`): the worker then claims and stores them with
the store round trips and the Celery overhead of one message. When the wait ends with fewer
ids than a batch (the flow paused: the end of a burst), they are spread over `spread` tasks
sent at once, one per worker process, so that no process waits while another works through
the burst's last batch alone. The store stays the truth: an id
whose task was never sent (Redis away, serve stopped first) is an accepted message, and
reconcile queues it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("radbridge.enqueue")


class BatchEnqueuer:
    """Sends `send(ids)` from its own thread, with up to `batch` ids each, waiting up to
    `wait_s` after the first id for more; a partial batch goes as up to `spread` tasks
    (`close` sends what is left, then stops)."""

    def __init__(
        self,
        send: Callable[[Sequence[int]], None],
        *,
        batch: int,
        wait_s: float,
        spread: int = 1,
    ) -> None:
        self._send = send
        self.batch = max(1, batch)
        self.wait_s = max(0.0, wait_s)
        self.spread = max(1, spread)
        self._waiting: deque[int] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="radbridge-enqueue", daemon=True)
        self.tasks = 0  # tasks sent (or tried)

    def start(self) -> BatchEnqueuer:
        self._thread.start()
        return self

    def submit(self, message_id: int) -> None:
        """Queue one accepted message's extraction (never blocks on the broker)."""
        with self._ready:
            self._waiting.append(message_id)
            self._ready.notify()

    def close(self) -> None:
        """Send what is waiting, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _next(self) -> list[list[int]] | None:
        """The next tasks' ids (None: closed and nothing left): a full batch, or what the wait
        gathered spread over up to `spread` tasks."""
        with self._ready:
            while not self._waiting and not self._closing:
                self._ready.wait()
            if not self._waiting:
                return None
            until = time.monotonic() + self.wait_s
            while len(self._waiting) < self.batch and not self._closing:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            if len(self._waiting) >= self.batch:
                return [[self._waiting.popleft() for _ in range(self.batch)]]
            ids = list(self._waiting)
            self._waiting.clear()
            size = -(-len(ids) // self.spread)  # ceil: `spread` tasks at most
            return [ids[start : start + size] for start in range(0, len(ids), size)]

    def _run(self) -> None:
        while (tasks := self._next()) is not None:
            for ids in tasks:
                self.tasks += 1
                try:
                    self._send(ids)
                except Exception as exc:  # a broker failure: the messages are stored, reconcile
                    log.warning(
                        "enqueue of %d message(s) failed (%s): reconcile will queue them",
                        len(ids),
                        type(exc).__name__,
                    )
