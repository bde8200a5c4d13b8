"""A sign-in flood must not stall MLLP ACKs (issue 24 item 1): a real `radbridge serve` (no
worker) with a users file; a sender sends a message every 100 ms over one MLLP connection and
times each ACK, first alone (the baseline), then while 6 threads post sign-ins with random names
for 20 s, each thread from a new source address every 15 attempts (so neither throttle stops
them: every attempt reaches argon2, or the full pool's 429). Before the fix argon2 ran on the event loop
the listener shares (ACK p50 3.3 s, one ACK 16 s, in the probe).

The issue's bar is an ACK p99 below 100 ms under the flood; on a loaded shared machine (load
average 9 on 2 cores while this was written) the ACKs alone already reach a p99 of 30-120 ms, so
the test allows the baseline's own p99 plus 100 ms, or 3 times it, where that is more, and prints
both figures. Before the fix the flood's ACK p99 was seconds (each sign-in held the loop for one
or two argon2 runs of 0.6-1.5 s here)."""

from __future__ import annotations

import secrets
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from adapter.ui.auth import add_user
from mappings.framing import FrameReader, frame
from tests.serve_process import Service, running_serve

pytestmark = pytest.mark.integration

FLOOD_THREADS = 6
FLOOD_S = 20.0
BASELINE_S = 5.0
SEND_EVERY_S = 0.1
ATTEMPTS_PER_ADDRESS = 15  # below RADBRIDGE_UI_LOGIN_MAX_FAILURES_PER_ADDRESS (20)
CHEST_XRAY = (Path(__file__).parent / "fixtures" / "hl7v2" / "chest_xray.hl7").read_bytes().strip()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def ack_times(port: int, seconds: float, prefix: str) -> list[float]:
    """One MLLP connection, a new message every SEND_EVERY_S for `seconds`: each ACK's time."""
    times: list[float] = []
    reader = FrameReader(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            payload = CHEST_XRAY.replace(b"XR0002", f"{prefix}{n:05d}".encode())
            started = time.monotonic()
            connection.sendall(frame(payload))
            ack = None
            while ack is None:
                data = connection.recv(65536)
                assert data, "the listener closed the connection"
                for event in reader.feed(data):
                    ack = event.payload
            took = time.monotonic() - started
            assert ack is not None and b"MSA|AA|" in ack, ack
            times.append(took)
            time.sleep(max(0.0, SEND_EVERY_S - took))
    return times


def flood(base: str, thread: int, stop: threading.Event, answers: Counter[int]) -> None:
    """Sign-ins with random names until `stop`, from a new source address every
    ATTEMPTS_PER_ADDRESS attempts (127.0.<thread+10>.<n>)."""
    n = 0
    while not stop.is_set():
        n += 1
        address = f"127.0.{thread + 10}.{1 + n % 250}"
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(base_url=base, transport=transport, timeout=60) as client:
            form = client.get("/ui/login")
            token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            for _ in range(ATTEMPTS_PER_ADDRESS):
                if stop.is_set():
                    return
                answer = client.post(
                    "/ui/login",
                    data={
                        "username": f"user{secrets.token_hex(4)}",
                        "password": secrets.token_hex(8),
                        "csrf": token,
                        "next": "/ui",
                    },
                )
                answers[answer.status_code] += 1


def test_acks_keep_flowing_under_a_sign_in_flood(tmp_path: Path) -> None:
    users = tmp_path / "users"
    add_user(users, "rita", "reviewer", "reviewer-password")
    settings = {
        "RADBRIDGE_STAGE": "rules",
        "RADBRIDGE_UI_USERS_FILE": str(users),
        "RADBRIDGE_UI_SESSION_SECRET": secrets.token_hex(32),
    }
    with running_serve(tmp_path, settings, args=("--no-worker",)) as service:
        run(service)


def run(service: Service) -> None:
    ack_times(service.mllp_port, 1.0, "WARM")  # connections, store, first ACK
    baseline = ack_times(service.mllp_port, BASELINE_S, "BASE")
    stop = threading.Event()
    answers: Counter[int] = Counter()
    flooders = [
        threading.Thread(target=flood, args=(service.http, t, stop, answers), daemon=True)
        for t in range(FLOOD_THREADS)
    ]
    for flooder in flooders:
        flooder.start()
    try:
        time.sleep(1.0)  # the flood is on before the first timed message
        flooded = ack_times(service.mllp_port, FLOOD_S - 1.0, "FLOOD")
    finally:
        stop.set()
        for flooder in flooders:
            flooder.join(timeout=120)
    base_p99, flood_p99 = p99(baseline), p99(flooded)
    print(
        f"\nMLLP ACK alone: p50 {statistics.median(baseline) * 1000:.1f} ms, p99 "
        f"{base_p99 * 1000:.1f} ms ({len(baseline)} ACKs); under a {FLOOD_THREADS}-thread "
        f"sign-in flood: p50 {statistics.median(flooded) * 1000:.1f} ms, p99 "
        f"{flood_p99 * 1000:.1f} ms, max {max(flooded) * 1000:.1f} ms ({len(flooded)} ACKs); "
        f"sign-in answers {dict(answers)}"
    )
    assert answers[401] >= 10, answers  # argon2 really ran during the flood
    assert not [status for status in answers if status >= 500], answers
    assert flood_p99 < max(0.100, base_p99 + 0.100, 3 * base_p99), (flood_p99, base_p99)
