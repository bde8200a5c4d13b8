"""Who may send over MLLP (issue 15 item 13): RADBRIDGE_MLLP_ALLOW (a peer outside the
allow-list gets its connection closed at once, no frame read, no ACK, one log line without PHI)
and mutual TLS (RADBRIDGE_MLLP_TLS_CLIENT_CA). Real listeners on real sockets, real
certificates made with openssl."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from pathlib import Path

import pytest

from adapter.errors import ConfigError
from adapter.mllp import MllpClient, MllpError, MllpServer
from adapter.settings import Settings
from mappings.framing import FrameEvent, frame
from tests.pki import make_pki

PAYLOAD = b"MSH|^~\\&|RIS|FAC|RB|RBF|20260101||ORU^R01|C1|P|2.5\rPID|1||CANARY-MRN-77\r"


async def exchange(allow: list[str] | None) -> tuple[bytes, list[bytes], MllpServer]:
    """Start a listener with `allow`, send one frame from 127.0.0.1; (reply, frames handled)."""
    handled: list[bytes] = []

    async def handler(event: FrameEvent) -> bytes:
        handled.append(event.payload or b"")
        return b"ACK"

    networks = [ipaddress.ip_network(n) for n in allow] if allow is not None else None
    server = MllpServer(handler, host="127.0.0.1", port=0, allow=networks)
    port = await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(frame(PAYLOAD))
            await writer.drain()
            writer.write_eof()  # the listener answers, then sees the end and closes
        except ConnectionError:
            pass
        try:
            reply = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # closed with our frame unread
            reply = b""
        writer.close()
    finally:
        await server.stop()
    return reply, handled, server


def test_peer_outside_the_allow_list_is_closed_without_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge.mllp")
    reply, handled, server = asyncio.run(exchange(["10.0.0.0/8", "192.168.1.5/32"]))
    assert reply == b"" and handled == [] and server.refused == 1
    assert any("RADBRIDGE_MLLP_ALLOW" in r.getMessage() for r in caplog.records)
    assert not any("CANARY" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("allow", [None, ["127.0.0.0/8"], ["10.0.0.0/8", "127.0.0.1/32"]])
def test_allowed_peer_is_served(allow: list[str] | None) -> None:
    reply, handled, server = asyncio.run(exchange(allow))
    assert reply == frame(b"ACK") and handled == [PAYLOAD] and server.refused == 0


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate and a client certificate signed by the CA, and a client
    certificate from another (self-signed) authority (tests/pki.py)."""
    return make_pki(tmp_path)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: dict[str, Path]) -> None:
    """RADBRIDGE_MLLP_TLS_CLIENT_CA: a sender with a certificate signed by that CA gets its
    ACK; one without a certificate, or with one from another authority, gets nothing."""
    settings = Settings(
        mllp_tls_cert=pki["server"], mllp_tls_key=pki["server_key"], mllp_tls_client_ca=pki["ca"]
    )
    server_context = settings.mllp_ssl_context()

    async def send(cert: str | None) -> bytes:
        async def handler(event: FrameEvent) -> bytes:
            return b"ACK"

        server = MllpServer(handler, host="127.0.0.1", port=0, ssl_context=server_context)
        port = await server.start()
        client_context = ssl.create_default_context(cafile=str(pki["server"]))
        client_context.check_hostname = False
        if cert is not None:
            client_context.load_cert_chain(pki[cert], pki[f"{cert}_key"])
        client = MllpClient("127.0.0.1", port, timeout=5, ssl_context=client_context)
        try:
            return await client.send(PAYLOAD)
        except (MllpError, ssl.SSLError, ConnectionError):
            return b""
        finally:
            await client.close()
            await server.stop()

    assert asyncio.run(send("client")) == b"ACK"
    assert asyncio.run(send(None)) == b""
    assert asyncio.run(send("rogue")) == b""
    with pytest.raises(ConfigError, match="RADBRIDGE_MLLP_TLS_CLIENT_CA"):
        Settings(mllp_tls_client_ca=pki["ca"]).mllp_ssl_context()
