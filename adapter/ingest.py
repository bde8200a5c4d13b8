"""Store-then-ACK: what the MLLP listener (and HL7v2 over HTTP) do with each frame.

1. Peek MSH (no full parse) and run the ORU checks the full parse runs first
   (`mappings.hl7.oru_in.CHECKS`). Unreadable, not ORU^R01, failing a check, or oversize -> NAK
   with ERR; nothing stored (nothing was accepted).
2. Commit the raw bytes with the ACK that will be sent, through a group committer: frames
   arriving together from any connection share one transaction (fair across connections, one
   fsync per group, durability unchanged: each ACK is sent only after its commit). The HTTP
   API commits each request on its own (`group_commit=False`): its requests may run on
   different event loops.
3. Answer the ACK; a duplicate resend gets the ACK stored the first time and is not processed
   again. `on_accepted(message_id)` runs for new messages (the queue hook).

Which problems get AE and which AR is set by `nak_codes` (defaults: storage failure -> AE,
the sender may retry; unusable message -> AR). A key field the store cannot hold (MSH-3/4/10
longer than its column: 0357 code 104; a NUL character: 102) is refused with AR before the
commit; a row the database still refuses fails alone: the group is retried row by row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapter import json_body
from adapter.control_ids import ControlIds
from adapter.errors import StoreError, StoreRefused
from adapter.store import Store
from adapter.store.messages import AcceptResult, Incoming, field_problem
from mappings.errors import HL7ErrorCode, MessageRejected, log_unexpected
from mappings.framing import FrameEvent
from mappings.hl7.ack import AckErrorDetail, Disposition, build_ack, needs_commit_ack
from mappings.hl7.msh import MshPeek, peek_msh
from mappings.hl7.oru_in import precheck_oru

log = logging.getLogger("radbridge.ingest")

_MSH_FIELDS = {"sending_application": "MSH-3", "sending_facility": "MSH-4", "control_id": "MSH-10"}


@dataclass(frozen=True)
class NakPolicy:
    """Which outcome (AE = error, AR = rejected) each kind of problem gets."""

    unreadable: Disposition = Disposition.REJECTED
    unsupported_type: Disposition = Disposition.REJECTED
    oversize: Disposition = Disposition.REJECTED
    storage_failure: Disposition = Disposition.ERROR
    unstorable: Disposition = (
        Disposition.REJECTED
    )  # a value the store cannot hold: resending won't help
    internal_error: Disposition = Disposition.ERROR


@dataclass
class _Pending:
    item: Incoming
    ack: bytes
    future: asyncio.Future[tuple[int, bool, bytes | None]]


class GroupCommitter:
    """Commits queued messages in groups (one transaction each) on its own thread.

    Frames from any connection append to one queue; the commit thread takes everything queued
    (up to `max_group`) as one group, commits it, and settles each sender's future on its event
    loop with one call per group. No executor call and no committer task per group: fewer
    loop/thread hand-offs (py-spy showed them beside `do_commit`; see benchmarks/ingest.py).
    Durability is unchanged: a future is settled only after its group's commit returned."""

    def __init__(self, store: Store, max_group: int = 256) -> None:
        self.store = store
        self.max_group = max_group
        self.groups = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the commit thread (idempotent)."""
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="radbridge-group-commit", daemon=True
                )
                self._thread.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._ready:
            thread, self._stopping = self._thread, True
            self._ready.notify()
        if thread is not None:
            await asyncio.to_thread(thread.join)
        self._thread = None

    async def commit(self, item: Incoming, ack: bytes) -> tuple[int, bool, bytes | None]:
        """(message id, duplicate, stored ACK) once the message is durably committed."""
        self.start()
        future: asyncio.Future[tuple[int, bool, bytes | None]] = (
            asyncio.get_running_loop().create_future()
        )
        with self._ready:
            self._queue.append(_Pending(item, ack, future))
            self._ready.notify()
        return await future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:
                    return
                group = [
                    self._queue.popleft() for _ in range(min(self.max_group, len(self._queue)))
                ]
            try:
                results = commit_isolating(
                    self.store, [p.item for p in group], [p.ack for p in group]
                )
                self.groups += 1
            except Exception as exc:  # commit_isolating returns errors; this is a bug
                results = [_unexpected_store_error("the group commit", exc)] * len(group)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, object]]] = {}
            for pending, result in zip(group, results, strict=True):
                by_loop.setdefault(pending.future.get_loop(), []).append((pending, result))
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[_Pending, object]]) -> None:
    """Resolve each sender's future with its commit result (on the sender's loop)."""
    for pending, result in settled:
        if pending.future.done():  # the sender went away
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        elif isinstance(result, AcceptResult):
            pending.future.set_result((result.message_id, result.duplicate, result.ack))


def _storing(commit: Callable[[], list[AcceptResult]]) -> list[AcceptResult] | StoreError:
    try:
        return commit()
    except StoreError as exc:
        return exc
    except Exception as exc:  # a bug or a driver error outside SQLAlchemy's tree
        return _unexpected_store_error("a commit", exc)


def _unexpected_store_error(where: str, exc: Exception) -> StoreError:
    """An unexpected failure of a commit, logged once with its traceback (no values) and
    answered as a store failure (AE: the sender resends), its correlation id in the text."""
    correlation = log_unexpected(log, f"ingest {where}", exc)
    return StoreError(f"{type(exc).__name__} (correlation id {correlation})")


def commit_isolating(
    store: Store, items: list[Incoming], acks: list[bytes]
) -> list[AcceptResult | StoreError]:
    """One transaction for the group; if it fails, each row on its own, so one bad row (a value
    the database refuses) fails alone and the others are stored. One result per item."""
    group = _storing(lambda: store.accept_many(items, acks=acks))
    if not isinstance(group, StoreError):
        return list(group)
    if len(items) == 1:
        return [group]
    log.warning(
        "ingest group commit failed error=%s; committing its %d rows one by one",
        type(group).__name__,
        len(items),
    )
    results: list[AcceptResult | StoreError] = []
    for item, ack in zip(items, acks, strict=True):
        alone = _storing(functools.partial(store.accept_many, [item], acks=[ack]))
        results.append(alone if isinstance(alone, StoreError) else alone[0])
    return results


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
        control_ids: ControlIds | None = None,
    ) -> None:
        self.store = store
        self.group_commit = group_commit
        self.channel = channel
        self.policy = nak_codes or NakPolicy()
        self.on_accepted = on_accepted
        self.committer = GroupCommitter(store)
        self.counters = {"received": 0, "acked": 0, "rejected": 0, "duplicates": 0}
        # MSH-10 of the ACKs: shared with the other channel of the same serve (one generator)
        self._control_id = control_ids or ControlIds.reserve(store)

    async def close(self) -> None:
        """Commit what is queued and stop the committer."""
        await self.committer.stop()

    def _nak(
        self, peek: MshPeek | None, outcome: Disposition, code: HL7ErrorCode, text: str
    ) -> bytes | None:
        self.counters["rejected"] += 1
        if not needs_commit_ack(peek, outcome):
            return None
        return build_ack(
            peek, outcome, control_id=self._control_id(), error=AckErrorDetail(code, text)
        )

    async def __call__(self, event: FrameEvent) -> bytes | None:
        """Answer one frame (the MllpServer handler)."""
        try:
            return await self._handle(event)
        except Exception as exc:
            log_unexpected(log, "ingest", exc)
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
        problem = precheck_oru(payload, peek)  # type, MSH-10, version, charset, OBR: AR now
        if problem is not None:
            unsupported = problem.code is HL7ErrorCode.UNSUPPORTED_MESSAGE_TYPE
            outcome = self.policy.unsupported_type if unsupported else self.policy.unreadable
            return self._nak(peek, outcome, problem.code, problem.detail)
        ack = build_ack(peek, Disposition.ACCEPTED, control_id=self._control_id())
        item = Incoming(
            raw=payload,
            channel=self.channel,
            sending_application=peek.sending_application,
            sending_facility=peek.sending_facility,
            control_id=peek.control_id,
        )
        unstorable = field_problem(item)
        if unstorable is not None:
            too_long = unstorable.limit is not None
            code = HL7ErrorCode.VALUE_TOO_LONG if too_long else HL7ErrorCode.DATA_TYPE_ERROR
            detail = f"{_MSH_FIELDS[unstorable.field]} {unstorable.problem}"
            return self._nak(peek, self.policy.unstorable, code, detail)
        try:
            if self.group_commit:
                message_id, duplicate, stored_ack = await self.committer.commit(item, ack)
            else:
                result = await asyncio.to_thread(self.store.accept, item, ack=ack)
                message_id, duplicate, stored_ack = result.message_id, result.duplicate, result.ack
        except StoreRefused as exc:
            log.error("ingest store refused the message error=%s", exc)
            return self._nak(
                peek,
                self.policy.unstorable,
                exc.hl7_code,
                "the store refused the message's values; do not resend it unchanged",
            )
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
            if not needs_commit_ack(peek, Disposition.ACCEPTED):
                return None
            return stored_ack if stored_ack is not None else ack
        if self.on_accepted is not None:
            self.on_accepted(message_id)
        log.info("ingest accepted message_id=%d size=%d", message_id, len(payload))
        return ack if needs_commit_ack(peek, Disposition.ACCEPTED) else None


def split_bundle(bundle: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """One self-contained collection Bundle per DiagnosticReport entry of `bundle`, with its
    entry index: the report's entry plus the entries its `subject` and `result` reference (by
    `fullUrl` or `Type/id`), so each report is stored, de-duplicated and processed on its own."""
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    by_ref: dict[str, dict[str, Any]] = {}
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if resource.get("id"):
            by_ref[f"{resource.get('resourceType')}/{resource['id']}"] = entry
        if isinstance(entry.get("fullUrl"), str):
            by_ref[entry["fullUrl"]] = entry
    parts: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "DiagnosticReport":
            continue
        included = [entry]
        references = [resource.get("subject"), *(resource.get("result") or [])]
        for reference in references:
            ref = reference.get("reference") if isinstance(reference, dict) else None
            found = by_ref.get(ref) if isinstance(ref, str) else None
            if found is not None and all(found is not e for e in included):
                included.append(found)
        parts.append((index, {"resourceType": "Bundle", "type": "collection", "entry": included}))
    return parts


INLINE_BODY_BYTES = 256 * 1024
"""HTTP bodies above this size are parsed and validated on a worker thread, off the event loop
the MLLP listener shares (a 9 MB DiagnosticReport takes about a second to read)."""


def fhir_messages(
    body: bytes, resource: dict[str, Any], keys: Sequence[str], content_type: str
) -> list[tuple[int | None, Incoming]]:
    """What to store for one FHIR body whose reports have the store `keys` (in entry order):
    the body itself for one report; for a Bundle of several, one message per DiagnosticReport
    (`split_bundle`), each with its Bundle entry index. `resource` (the parsed body) is used up:
    a split Bundle's large strings are dropped from it once the parts are known (memory)."""
    parts = split_bundle(resource) if len(keys) > 1 else []
    if len(parts) != len(keys):
        parts, raws = [], [body]
        keys = keys[:1]
    else:
        raws = _serialised(body, resource, [part for _, part in parts])
    entries: list[int | None] = [index for index, _ in parts] or [None]
    return [
        (
            entry,
            Incoming(
                raw=raw,
                channel="fhir",
                sending_application="fhir",
                control_id=key,
                content_type=content_type,
            ),
        )
        for entry, raw, key in zip(entries, raws, keys, strict=True)
    ]


def _serialised(body: bytes, bundle: dict[str, Any], parts: list[dict[str, Any]]) -> list[bytes]:
    """Each part of `bundle` (`split_bundle`) as compact JSON bytes. When the body has large
    strings (a report's base64 PDF or text) each part is written from the body's stand-in
    parse (`json_body.stand_ins`, the same entries in the same places) with those strings
    spliced from the body: the same bytes, without a text of the part or a copy of it; the
    large strings of `bundle` are dropped first (the caller's parse, not used after)."""
    found = json_body.stand_ins(body, json_body.scan(body, sys.maxsize).large)
    entries = bundle.get("entry")
    same = found.value.get("entry") if found is not None and isinstance(found.value, dict) else None
    if found is None or not isinstance(same, list) or len(same) != len(entries or []):
        return [json.dumps(part, separators=(",", ":")).encode() for part in parts]
    index = {id(entry): n for n, entry in enumerate(entries or [])}
    placed = [[index[id(entry)] for entry in part["entry"]] for part in parts]
    json_body.drop_large(bundle)  # not needed from here: the parts come from the body
    return [
        json_body.dumps({**part, "entry": [same[n] for n in numbers]}, found)
        for part, numbers in zip(parts, placed, strict=True)
    ]
