"""MLLP over TLS says why a connection failed (issue 23 item 2): a plaintext sender on the TLS
port, a sender without a client certificate or with one from another authority each give one
warning with the peer and the reason, never a byte of the message; a good sender gets its ACK.
Real listeners, real sockets, certificates made with openssl (tests/pki.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from adapter.mllp import MllpClient, MllpError, MllpServer
from adapter.settings import Settings
from mappings.framing import FrameEvent, frame
from tests.pki import make_pki

PAYLOAD = b"MSH|^~\\&|RIS|FAC|RB|RBF|20260101||ORU^R01|C1|P|2.5\rPID|1||CANARY-MRN-31\r"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path)


async def _listener(settings: Settings) -> MllpServer:
    async def handler(event: FrameEvent) -> bytes:
        return b"ACK"

    server = MllpServer(handler, host="127.0.0.1", port=0, ssl_context=settings.mllp_ssl_context())
    await server.start()
    return server


async def _plaintext(settings: Settings) -> tuple[bytes, MllpServer]:
    server = await _listener(settings)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame(PAYLOAD))
        await writer.drain()
        try:
            reply = await asyncio.wait_for(reader.read(), 10)
        except ConnectionError:
            reply = b""
        writer.close()
        for _ in range(100):  # the listener logs when its side of the handshake gives up
            if server.tls_failures:
                break
            await asyncio.sleep(0.05)
    finally:
        await server.stop()
    return reply, server


async def _tls(settings: Settings, pki: dict[str, Path], cert: str | None) -> tuple[bytes, int]:
    server = await _listener(settings)
    context = ssl.create_default_context(cafile=str(pki["server"]))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(pki[cert], pki[f"{cert}_key"])
    client = MllpClient("127.0.0.1", server.port, timeout=10, ssl_context=context)
    try:
        reply = await client.send(PAYLOAD)
    except (MllpError, ssl.SSLError, ConnectionError):
        reply = b""
    finally:
        await client.close()
        for _ in range(100):
            if server.tls_failures or reply:
                break
            await asyncio.sleep(0.05)
        await server.stop()
    return reply, server.tls_failures


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_plaintext_on_the_tls_port_is_logged_with_peer_and_reason(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge.mllp")
    settings = Settings(mllp_tls_cert=pki["server"], mllp_tls_key=pki["server_key"])
    reply, server = asyncio.run(_plaintext(settings))
    assert reply == b"" and server.tls_failures == 1 and server.frames_answered == 0
    (line,) = [w for w in _warnings(caplog) if "tls handshake failed" in w]
    assert "127.0.0.1" in line and "plaintext on the TLS port" in line
    assert "CANARY" not in caplog.text and "MSH" not in caplog.text


def test_mutual_tls_failures_are_logged_and_a_good_client_is_served(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge.mllp")
    settings = Settings(
        mllp_tls_cert=pki["server"], mllp_tls_key=pki["server_key"], mllp_tls_client_ca=pki["ca"]
    )
    assert asyncio.run(_tls(settings, pki, "client")) == (b"ACK", 0)
    assert not [w for w in _warnings(caplog) if "tls handshake failed" in w]
    assert asyncio.run(_tls(settings, pki, None)) == (b"", 1)
    assert asyncio.run(_tls(settings, pki, "rogue")) == (b"", 1)
    lines = [w for w in _warnings(caplog) if "tls handshake failed" in w]
    assert len(lines) == 2 and all("peer=('127.0.0.1'" in line for line in lines)
    assert "no client certificate" in lines[0]
    assert "not trusted" in lines[1]
    assert "CANARY" not in caplog.text
