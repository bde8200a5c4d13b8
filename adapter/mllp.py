"""MLLP over TCP (asyncio): the listener and a client; frames are read by the one deframer,
`mappings.framing.FrameReader` (sans-I/O).

Framing: 0x0B <message> 0x1C 0x0D. The reader copes with frames split into single bytes,
several frames in one read and bytes before a start block (ignored and counted). A frame longer
than `max_frame_bytes` is discarded as it streams (memory stays flat) and reported as oversize
so the listener can NAK it. Every complete frame gets an answer from the handler, in order, on
the connection it came in on; the listener never closes a connection on a complete frame
without answering (a handler that raises gets a generic AE). Logs carry ids, sizes and timings
only.

Slow senders cannot lock others out: a frame must complete within `frame_timeout` seconds of
its start block (a byte now and then does not extend it, unlike the idle timeout), one peer
address holds at most `max_connections_per_peer` connections, the last `reserved_connections`
slots go only to peers holding none, and when every slot is taken a new peer's connection
replaces the connection that has waited longest without completing a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.errors import AdapterError
from adapter.settings import IPNetwork, Settings
from mappings.framing import FrameEvent, FrameReader, frame

log = logging.getLogger("radbridge.mllp")

START_BLOCK = 0x0B
END_BLOCK = b"\x1c\x0d"
READ_CHUNK = 64 * 1024


class MllpError(AdapterError):
    """An MLLP connection failed (client side: no ACK, timeout, refused)."""


_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
     "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD"}
)  # fmt: skip
_NO_CLIENT_CERT = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}
)
_UNTRUSTED = frozenset(
    {"CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE"}
)


def tls_failure(exc: BaseException) -> str:
    """Why a TLS handshake failed, in words for the log (no data of the connection)."""
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        if reason in _NOT_TLS:
            return f"not TLS: plaintext on the TLS port ({reason})"
        if reason in _NO_CLIENT_CERT:
            return f"no client certificate (mutual TLS) ({reason})"
        if reason in _UNTRUSTED:
            return f"client certificate not trusted by RADBRIDGE_MLLP_TLS_CLIENT_CA ({reason})"
        return f"TLS error {reason}"
    if isinstance(exc, ConnectionError):
        return f"connection closed during the handshake ({type(exc).__name__})"
    return type(exc).__name__


FrameHandler = Callable[[FrameEvent], Awaitable[bytes | None]]


@dataclass
class _Connection:
    """One open connection as the listener's admission and eviction see it."""

    host: str
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    waiting_since: float  # connect time or the last answered frame: how long it gave nothing
    answering: bool = False


class MllpServer:
    """The MLLP listener: one task per connection, frames answered in order."""

    def __init__(
        self,
        handler: FrameHandler,
        *,
        host: str,
        port: int,
        max_frame_bytes: int = 10 * 1024 * 1024,
        idle_timeout: float = 300.0,
        max_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        frame_timeout: float = 30.0,
        max_connections_per_peer: int = 8,
        reserved_connections: int = 8,
        allow: Sequence[IPNetwork] | None = None,
    ) -> None:
        self.handler = handler
        self.allow = tuple(allow) if allow is not None else None
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.frame_timeout = frame_timeout
        self.max_connections_per_peer = max_connections_per_peer
        self.reserved_connections = min(reserved_connections, max_connections - 1)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self.frames_answered = 0
        self.refused = 0
        self.evicted = 0
        self.frame_timeouts = 0
        self.tls_failures = 0

    @classmethod
    def configured(
        cls,
        handler: FrameHandler,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> MllpServer:
        """The listener as the RADBRIDGE_MLLP_* settings describe it (limits, TLS, allow-list);
        `host`/`port` override RADBRIDGE_HOST / RADBRIDGE_MLLP_PORT (tests bind port 0)."""
        return cls(
            handler,
            host=settings.host if host is None else host,
            port=settings.mllp_port if port is None else port,
            max_frame_bytes=settings.mllp_max_frame_bytes,
            idle_timeout=settings.mllp_idle_timeout_s,
            max_connections=settings.mllp_max_connections,
            frame_timeout=settings.mllp_frame_timeout_s,
            max_connections_per_peer=settings.mllp_max_connections_per_peer,
            reserved_connections=settings.mllp_reserved_connections,
            ssl_context=settings.mllp_ssl_context(),
            allow=settings.mllp_allow_networks(),
        )

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        # TLS is started per connection (`_handshake`), so a failed handshake is logged with
        # its peer and reason instead of vanishing inside asyncio
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets: list[Any] = list(self._server.sockets or [])
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        log.info(
            "mllp listening host=%s port=%d tls=%s",
            self.host,
            self.port,
            self.ssl_context is not None,
        )
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let connections finish the frame in hand, then close them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=grace)
            for task in pending:
                task.cancel()

    def _allowed(self, host: str) -> bool:
        """Whether the allow-list (if any) lets `host` connect (IPv4-mapped IPv6 as IPv4)."""
        if self.allow is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def _admit(self, host: str) -> str | None:
        """Why a new connection from `host` is refused (None: admitted, evicting if needed)."""
        held = sum(1 for c in self._connections.values() if c.host == host)
        if held >= self.max_connections_per_peer:
            return f"per-peer limit {self.max_connections_per_peer} reached"
        total = len(self._connections)
        if held and total >= self.max_connections - self.reserved_connections:
            return "only reserved slots left (kept for peers without a connection)"
        if total >= self.max_connections:
            now = time.monotonic()
            idle = [c for c in self._connections.values() if not c.answering]
            if not idle:
                return f"limit {self.max_connections} reached"
            victim = min(idle, key=lambda c: c.waiting_since)
            log.warning(
                "mllp connection evicted: limit %d reached, it gave no frame for %.1f s",
                self.max_connections,
                now - victim.waiting_since,
            )
            self.evicted += 1
            del self._connections[victim.task]
            victim.task.cancel()
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if self.ssl_context is not None and isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()  # before anything is read: the handshake needs it all
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        refusal = (
            self._admit(host) if self._allowed(host) else "address not in RADBRIDGE_MLLP_ALLOW"
        )
        if refusal is not None:
            self.refused += 1
            log.warning("mllp connection refused: %s", refusal)
            writer.close()
            return
        if self.ssl_context is not None and not await self._handshake(writer, peer):
            writer.close()
            return
        connection = _Connection(host, task, writer, time.monotonic())
        self._connections[task] = connection
        frames = FrameReader(self.max_frame_bytes)
        started = frames.frames_started
        frame_deadline: float | None = None
        try:
            while True:
                now = time.monotonic()
                timeout = self.idle_timeout
                if frame_deadline is not None:
                    timeout = min(timeout, frame_deadline - now)
                try:
                    if timeout <= 0:
                        raise TimeoutError
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    if frame_deadline is not None and time.monotonic() >= frame_deadline:
                        self.frame_timeouts += 1
                        log.info(
                            "mllp frame not complete within %.1f s of its start block peer=%s",
                            self.frame_timeout,
                            peer,
                        )
                    else:
                        log.info("mllp idle timeout peer=%s", peer)
                    break
                if not data:
                    break
                for event in frames.feed(data):
                    connection.answering = True
                    try:
                        await self._answer(event, writer)
                    finally:
                        connection.answering = False
                    connection.waiting_since = time.monotonic()
                if not frames.in_frame:
                    frame_deadline = None
                elif frames.frames_started != started or frame_deadline is None:
                    frame_deadline = time.monotonic() + self.frame_timeout
                started = frames.frames_started
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("mllp connection lost peer=%s error=%s", peer, type(exc).__name__)
        finally:
            if self._connections.get(task) is connection:
                del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _handshake(self, writer: asyncio.StreamWriter, peer: object) -> bool:
        """The TLS handshake of one connection; a failure is logged (peer address and why,
        never data) and counted in `tls_failures`."""
        assert self.ssl_context is not None
        try:
            await writer.start_tls(self.ssl_context, ssl_handshake_timeout=self.frame_timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.tls_failures += 1
            log.warning("mllp tls handshake failed peer=%s reason=%s", peer, tls_failure(exc))
            return False
        return True

    async def _answer(self, event: FrameEvent, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        ack = await self.handler(event)
        if ack is not None:
            writer.write(frame(ack))
            await writer.drain()
        self.frames_answered += 1
        log.debug(
            "mllp frame size=%d answered=%s ms=%.2f",
            event.size,
            ack is not None,
            (time.perf_counter() - started) * 1000,
        )


class MllpClient:
    """An MLLP client: send a message, wait for its ACK (reconnects when the peer closed)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = FrameReader(64 * 1024 * 1024)
        self._pending: list[bytes] = []

    async def connect(self) -> None:
        """Open the connection."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl_context), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise MllpError(
                f"cannot connect to {self.host}:{self.port} ({type(exc).__name__})"
            ) from None

    async def send(self, message: bytes) -> bytes:
        """Send one message and return the ACK payload."""
        if self._writer is None or self._writer.is_closing():
            await self.connect()
        assert self._writer is not None and self._reader is not None
        self._writer.write(frame(message))
        await self._writer.drain()
        deadline = time.monotonic() + self.timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MllpError("no ACK within the timeout")
            try:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), remaining)
            except TimeoutError:
                raise MllpError("no ACK within the timeout") from None
            if not data:
                await self.close()
                raise MllpError("the peer closed the connection without an ACK")
            self._pending.extend(
                e.payload for e in self._frames.feed(data) if e.payload is not None
            )
        return self._pending.pop(0)

    async def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
