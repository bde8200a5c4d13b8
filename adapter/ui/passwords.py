"""Password checks for the sign-in form (issue 24): argon2 off the event loop, the same work for
every name.

argon2 takes a few hundred milliseconds of CPU by design. On the event loop the MLLP listener
shares, a sign-in flood stalled ACKs for seconds; here every check runs in a small bounded pool
(`HASH_WORKERS` threads; argon2-cffi releases the GIL while it hashes) at the lowest CPU
priority (Linux: nice 19 for the pool's threads, which argon2's own lane threads inherit), so
the listener's thread is served first when both want the CPU, and at most
`HASH_MAX_WAITING` more checks may wait for it: beyond that `PasswordsBusy` (the form answers
429 with Retry-After) instead of an ever longer queue. An unknown, disabled or malformed account
is checked against a dummy hash made with the same parameters (made once, in the pool, when the
checker starts), so every sign-in costs one argon2 verification: the time does not tell whether a
name exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from adapter.errors import UiRefused

HASH_WORKERS = 1  # argon2 threads: the rest of the machine keeps answering MLLP and HTTP
HASH_MAX_WAITING = 8  # sign-ins queued for a hash thread before the form answers 429
HASH_NICE = 19  # the hash threads' CPU priority (lowest): ACKs and pages go first


def _lowest_priority() -> None:
    """Run this thread (and the threads it starts) at nice HASH_NICE (Linux: per thread)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


class PasswordsBusy(UiRefused):
    """Every hash thread is busy and the queue is full (429; the form says to retry)."""

    http_status = 429
    issue_code = "throttled"

    def __init__(self) -> None:
        super().__init__(
            429,
            "Too many sign-ins are being checked right now. Nobody was signed in: try again in a "
            "few seconds.",
        )


class PasswordChecker:
    """argon2 verification in a bounded thread pool, one verification per sign-in."""

    def __init__(self, workers: int = HASH_WORKERS, max_waiting: int = HASH_MAX_WAITING) -> None:
        self.hasher = PasswordHasher()
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="radbridge-argon2", initializer=_lowest_priority
        )
        self._slots = threading.BoundedSemaphore(workers + max_waiting)
        # the stand-in for accounts that cannot sign in: a hash of a random password, made
        # with the parameters `radbridge users add` uses (same cost to verify)
        self._dummy: Future[str] = self._pool.submit(self.hasher.hash, secrets.token_hex(16))

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Blocking: whether `password` matches `password_hash`; None (no usable account) is
        checked against the dummy hash and is always False. One argon2 verification either way."""
        target = password_hash if password_hash is not None else self._dummy.result()
        try:
            matched = self.hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and password_hash is not None

    async def check(self, password_hash: str | None, password: str) -> bool:
        """`verify` in the pool (the event loop keeps running); PasswordsBusy when full."""
        if not self._slots.acquire(blocking=False):
            raise PasswordsBusy()
        future = self._pool.submit(self.verify, password_hash, password)
        future.add_done_callback(lambda _: self._slots.release())  # even if the client left
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the pool (checks already queued finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
