"""Queueing the extraction of accepted messages, several per task, off the ingest path.

serve stores a message, ACKs it, then hands its id here (`BatchEnqueuer.submit`, never
blocking). One thread sends the tasks: it holds an id for up to RADBRIDGE_EXTRACT_BATCH_WAIT_MS
for others to join it and sends up to RADBRIDGE_EXTRACT_BATCH ids as one task
(`adapter.queue.enqueue_extract_batch`): the worker then claims and stores them with
the store round trips and the Celery overhead of one message. The store stays the truth: an id
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
    `wait_s` after the first id for more (`close` sends what is left, then stops)."""

    def __init__(self, send: Callable[[Sequence[int]], None], *, batch: int, wait_s: float) -> None:
        self._send = send
        self.batch = max(1, batch)
        self.wait_s = max(0.0, wait_s)
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

    def _next(self) -> list[int] | None:
        """The next task's ids (None: closed and nothing left)."""
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
            count = min(self.batch, len(self._waiting))
            return [self._waiting.popleft() for _ in range(count)]

    def _run(self) -> None:
        while (ids := self._next()) is not None:
            self.tasks += 1
            try:
                self._send(ids)
            except Exception as exc:  # any broker failure: the messages are stored, reconcile
                log.warning(
                    "enqueue of %d message(s) failed (%s): reconcile will queue them",
                    len(ids),
                    type(exc).__name__,
                )
