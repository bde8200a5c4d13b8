"""The MSH-10 of radbridge's ACKs is unique across channels and restarts (issue 19 item 5).

Before: the MLLP listener and `POST /hl7v2` each had a counter `RB<start second>.<n>`, so the
first ACK over MLLP and the first over HTTP of one serve were both `RB<t>.1` (and a restart
within the same second counted again from 1). Now one generator per serve draws from a
generation the store hands out once per start. Real sockets, a real store, a real serve.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.control_ids import ControlIds
from adapter.settings import Settings
from adapter.store import Store
from tests.serve_process import running_serve
from tests.stores import data_dir
from tests.test_mllp import Listener, send_raw

MSG = b"MSH|^~\\&|RIS|FAC|RB|RBF|20260101||ORU^R01|{id}|P|2.5\rPID|1||M1\rOBR|1||A1\rOBX|1|TX|X||text||||||F"
JUNK = b"this is no HL7 message"


def framed(payload: bytes) -> bytes:
    return b"\x0b" + payload + b"\x1c\x0d"


def control_id(ack: bytes) -> str:
    """MSH-10 of an ACK."""
    return ack.split(b"\r")[0].split(b"|")[9].decode()


def acks_of_one_serve(store: Store, settings: Settings, tag: str) -> list[str]:
    """MSH-10 of the ACKs (AA and AR) of three messages over MLLP and three over HTTP."""
    control_ids = ControlIds.reserve(store)
    listener = Listener(store, control_ids)
    client = TestClient(create_app(settings, store, control_ids=control_ids))
    try:
        found = []
        for n in range(3):
            payload = MSG.replace(b"{id}", f"{tag}M{n}".encode())
            found += [
                control_id(a)
                for a in send_raw(listener.port, framed(payload) + framed(JUNK), expect=2)
            ]
            http = client.post("/hl7v2", content=MSG.replace(b"{id}", f"{tag}H{n}".encode()))
            found.append(control_id(http.content))
            found.append(control_id(client.post("/hl7v2", content=JUNK).content))
        return found
    finally:
        listener.close()


def test_http_and_mllp_acks_of_one_serve_and_of_a_restart_never_share_an_msh10(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(data_dir=data_dir(tmp_path))  # type: ignore[arg-type]
    first = acks_of_one_serve(store, settings, "A")
    restarted = acks_of_one_serve(store, settings, "B")  # the same store, a new start
    every = first + restarted
    assert len(every) == 24 and len(set(every)) == 24
    assert all(len(i) <= 20 for i in every)  # MSH-10 is ST(20) before v2.7


@pytest.mark.integration
def test_radbridge_serve_shares_one_counter_between_mllp_and_http(tmp_path: Path) -> None:
    """The wiring itself: `radbridge serve` (no worker needed) answers the first message on each
    channel with different MSH-10s."""
    settings = {"RADBRIDGE_STAGE": "rules"}
    with running_serve(tmp_path, settings, args=("--no-worker",)) as service:
        over_mllp = send_raw(service.mllp_port, framed(MSG.replace(b"{id}", b"S1")))[0]
        over_http = httpx.post(
            f"{service.http}/hl7v2", content=MSG.replace(b"{id}", b"S2"), timeout=30
        ).content
    assert b"MSA|AA|S1" in over_mllp and b"MSA|AA|S2" in over_http
    assert control_id(over_mllp) != control_id(over_http)
