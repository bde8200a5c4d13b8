"""An ORU receiver that is not ours: python-hl7's MLLP server (`hl7.mllp.start_hl7_server`) and
parser (`hl7.parse`, via its stream reader) on a real socket. It records every message it
parsed and answers each with python-hl7's own `create_ack`: AA, or what `answers` scripts next
(`AE`, `AR`, or None for no answer at all: the connection is closed)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import hl7
import hl7.mllp


class OruReceiver:
    """Start with `start()`; `target` is its `mllp://host:port`; `messages` what it parsed."""

    def __init__(self) -> None:
        self.messages: list[Any] = []  # hl7.Message, in arrival order
        self.answers: list[str | None] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None
        self.port = 0

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.messages.append(message)
                code = self.answers.pop(0) if self.answers else "AA"
                if code is None:
                    break
                writer.writemessage(message.create_ack(code, message_id=f"ACK{len(self.messages)}"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, hl7.mllp.InvalidBlockError):
            pass
        finally:
            writer.close()

    def start(self) -> OruReceiver:
        self.thread.start()

        async def serve() -> Any:
            return await hl7.mllp.start_hl7_server(self._client, "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def target(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
