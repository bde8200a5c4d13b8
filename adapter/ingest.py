"""Store-then-ACK: what the MLLP listener (and HL7v2 over HTTP) do with each frame.

1. Peek MSH (no full parse). Unreadable, not ORU^R01, or oversize -> NAK with ERR; nothing
   stored (nothing was accepted).
2. Commit the raw bytes with the ACK that will be sent, through a group committer: frames
   arriving together from any connection share one transaction (fair across connections, one
   fsync per group, durability unchanged: each ACK is sent only after its commit). The HTTP
   API commits each request on its own (`group_commit=False`): its requests may run on
   different event loops.
3. Answer the ACK; a duplicate resend gets the ACK stored the first time and is not processed
   again. `on_accepted(message_id)` runs for new messages (the queue hook).

Which problems get AE and which AR is set by `nak_codes` (defaults: storage failure -> AE,
the sender may retry; unusable message -> AR).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapter.errors import StoreError
from adapter.mllp import FrameEvent
from adapter.store import Incoming, Store
from mappings.ack import AckError, Outcome, build_ack, needs_commit_ack
from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.hl7v2 import precheck_oru
from mappings.msh import MshPeek, peek_msh

log = logging.getLogger("radbridge.ingest")

ACCEPTED_TYPES = frozenset({"ORU^R01", "ORU"})


@dataclass(frozen=True)
class NakPolicy:
    """Which outcome (AE = error, AR = rejected) each kind of problem gets."""

    unreadable: Outcome = Outcome.REJECTED
    unsupported_type: Outcome = Outcome.REJECTED
    oversize: Outcome = Outcome.REJECTED
    storage_failure: Outcome = Outcome.ERROR
    internal_error: Outcome = Outcome.ERROR


@dataclass
class _Pending:
    item: Incoming
    ack: bytes
    future: asyncio.Future[tuple[int, bool, bytes | None]]


@dataclass
class GroupCommitter:
    """Commits queued messages in groups (one transaction each) on a worker thread."""

    store: Store
    max_group: int = 256
    _queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    groups: int = 0

    def start(self) -> None:
        """Start the commit loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def commit(self, item: Incoming, ack: bytes) -> tuple[int, bool, bytes | None]:
        """(message id, duplicate, stored ACK) once the message is durably committed."""
        self.start()
        future: asyncio.Future[tuple[int, bool, bytes | None]] = (
            asyncio.get_running_loop().create_future()
        )
        await self._queue.put(_Pending(item, ack, future))
        return await future

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                results = await asyncio.to_thread(
                    self.store.accept_many, [p.item for p in group], acks=[p.ack for p in group]
                )
                self.groups += 1
                for pending, result in zip(group, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result((result.message_id, result.duplicate, result.ack))
            except Exception as exc:
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(
                            exc if isinstance(exc, StoreError) else StoreError(type(exc).__name__)
                        )
            finally:
                for _ in group:
                    self._queue.task_done()


class Hl7Ingest:
    """The frame handler: peek, store, ACK."""

    def __init__(
        self,
        store: Store,
        *,
        channel: str = "mllp",
        nak_codes: NakPolicy | None = None,
        on_accepted: Callable[[int], None] | None = None,
        group_commit: bool = True,
    ) -> None:
        self.store = store
        self.group_commit = group_commit
        self.channel = channel
        self.policy = nak_codes or NakPolicy()
        self.on_accepted = on_accepted
        self.committer = GroupCommitter(store)
        self.counters = {"received": 0, "acked": 0, "rejected": 0, "duplicates": 0}
        self._ids = itertools.count(1)
        self._prefix = f"RB{int(time.time())}"

    async def close(self) -> None:
        """Commit what is queued and stop the committer."""
        await self.committer.stop()

    def _control_id(self) -> str:
        return f"{self._prefix}.{next(self._ids)}"

    def _nak(
        self, peek: MshPeek | None, outcome: Outcome, code: HL7ErrorCode, text: str
    ) -> bytes | None:
        self.counters["rejected"] += 1
        if not needs_commit_ack(peek, outcome):
            return None
        return build_ack(peek, outcome, control_id=self._control_id(), error=AckError(code, text))

    async def __call__(self, event: FrameEvent) -> bytes | None:
        """Answer one frame (the MllpServer handler)."""
        try:
            return await self._handle(event)
        except Exception as exc:
            log.error("ingest internal error type=%s", type(exc).__name__)
            return self._nak(
                None,
                self.policy.internal_error,
                HL7ErrorCode.APPLICATION_INTERNAL_ERROR,
                "internal error",
            )

    async def _handle(self, event: FrameEvent) -> bytes | None:
        self.counters["received"] += 1
        if event.payload is None:
            log.warning("ingest oversize frame size=%d", event.size)
            return self._nak(
                None,
                self.policy.oversize,
                HL7ErrorCode.SEGMENT_SEQUENCE_ERROR,
                f"frame of {event.size} bytes exceeds the limit",
            )
        return await self.handle_message(event.payload)

    async def handle_message(self, payload: bytes) -> bytes | None:
        """Peek, store and acknowledge one message (also used by HL7v2 over HTTP)."""
        try:
            peek = peek_msh(payload)
        except MessageRejected as exc:
            log.info("ingest rejected reason=%s size=%d", exc.reason, len(payload))
            return self._nak(None, self.policy.unreadable, exc.code, exc.detail)
        if peek.message_type not in ACCEPTED_TYPES:
            return self._nak(
                peek,
                self.policy.unsupported_type,
                HL7ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                f"message type {peek.message_type} is not accepted (ORU^R01 only)",
            )
        if not peek.control_id:
            return self._nak(
                peek, self.policy.unreadable, HL7ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 is empty"
            )
        problem = precheck_oru(payload, peek)  # version, charset, OBR: AR before storing
        if problem is not None:
            return self._nak(peek, self.policy.unreadable, problem.code, problem.detail)
        ack = build_ack(peek, Outcome.ACCEPTED, control_id=self._control_id())
        item = Incoming(
            raw=payload,
            channel=self.channel,
            sending_application=peek.sending_application,
            sending_facility=peek.sending_facility,
            control_id=peek.control_id,
        )
        try:
            if self.group_commit:
                message_id, duplicate, stored_ack = await self.committer.commit(item, ack)
            else:
                result = await asyncio.to_thread(self.store.accept, item, ack=ack)
                message_id, duplicate, stored_ack = result.message_id, result.duplicate, result.ack
        except StoreError as exc:
            log.error("ingest store failure error=%s", exc)
            return self._nak(
                peek,
                self.policy.storage_failure,
                HL7ErrorCode.APPLICATION_INTERNAL_ERROR,
                "message not stored; please resend",
            )
        self.counters["acked"] += 1
        if duplicate:
            self.counters["duplicates"] += 1
            log.info("ingest duplicate message_id=%d", message_id)
            if not needs_commit_ack(peek, Outcome.ACCEPTED):
                return None
            return stored_ack if stored_ack is not None else ack
        if self.on_accepted is not None:
            self.on_accepted(message_id)
        log.info("ingest accepted message_id=%d size=%d", message_id, len(payload))
        return ack if needs_commit_ack(peek, Outcome.ACCEPTED) else None
