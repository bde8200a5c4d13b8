"""Limits of the serving process (issue 14 promise 9, issue 15 item 9), proven against a real
process: the HTTP API and the MLLP listener on one event loop, as `radbridge serve` runs them
(`app/serve.py`), over a real SQLite store, without Redis or a worker (not needed here). Memory
is the serving process's own RSS from /proc."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.mllp import MllpClient
from adapter.settings import Settings
from adapter.store import Store
from mappings.framing import FrameReader
from tests.test_mllp import message, msa
from tests.test_mllp_slow import send_one

MB = 1024 * 1024
RSS_BOUND = 20 * MB  # growth of the serving process's peak RSS allowed for a 50 MB input
ACK_BOUND_S = 1.0  # slowest MLLP ACK while three 9 MB FHIR bodies are parsed


def _serve(data_dir: str, ports_file: str) -> None:
    """The serving process: API + MLLP on one loop (settings from RADBRIDGE_* variables)."""
    import socket

    import uvicorn

    from adapter.api import create_app
    from adapter.ingest import Hl7Ingest
    from adapter.mllp import MllpServer
    from adapter.settings import load_settings

    settings = load_settings(data_dir=Path(data_dir))

    async def main() -> None:
        store = Store.open(settings)
        ingest = Hl7Ingest(store)
        api = create_app(settings, store, mllp_counters=ingest.counters)
        mllp = MllpServer.configured(ingest, settings, host="127.0.0.1", port=0)
        mllp_port = await mllp.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
        Path(ports_file).write_text(f"{mllp_port} {http_port}")
        await server.serve(sockets=[sock])

    asyncio.run(main())


class Service:
    """The serving process, its ports and its memory."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        ports = root / "ports"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.test_limits import _serve; _serve({str(root / 'data')!r}, {str(ports)!r})",
            ],
            env={**os.environ, "RADBRIDGE_DATABASE_URL": "", **env},
            cwd=Path(__file__).resolve().parents[1],
        )
        deadline = time.monotonic() + 60
        while not ports.exists() or not ports.read_text():
            assert self.process.poll() is None, "the serving process exited"
            assert time.monotonic() < deadline, "the serving process did not start"
            time.sleep(0.1)
        mllp, http = ports.read_text().split()
        self.mllp_port, self.http = int(mllp), f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.http}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def memory(self, field: str) -> int:
        """VmRSS or VmHWM (peak RSS) of the serving process, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(field)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(
        tmp_path,
        {
            "RADBRIDGE_MLLP_MAX_CONNECTIONS": "64",
            "RADBRIDGE_MLLP_IDLE_TIMEOUT_S": "2",
            "RADBRIDGE_HTTP_MAX_BODY_BYTES": str(10 * MB),
        },
    )
    yield running
    running.close()


def big_report(n: int, megabytes: float) -> bytes:
    """A DiagnosticReport of about `megabytes` MB (base64 text/plain presentedForm)."""
    sentence = "Findings: small left pleural effusion. No pneumothorax. "
    text = (sentence * int(megabytes * MB * 3 / 4 / len(sentence) + 1)).encode()
    return json.dumps(
        {
            "resourceType": "DiagnosticReport",
            "id": f"big{n}",
            "status": "final",
            "code": {"text": "CT chest"},
            "subject": {"identifier": {"value": f"P{n}"}},
            "presentedForm": [
                {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text).decode(),
                }
            ],
        }
    ).encode()


# -- large FHIR bodies must not block MLLP (issue 15 item 9) ----------------------------------


def test_mllp_acks_stay_fast_while_three_9mb_reports_are_parsed(service: Service) -> None:
    bodies = [big_report(n, 9.0) for n in range(3)]
    assert all(9 * MB <= len(b) < 10 * MB for b in bodies)
    statuses: list[int] = []

    def post(body: bytes) -> None:
        response = httpx.post(
            f"{service.http}/fhir/DiagnosticReport",
            content=body,
            headers={"Content-Type": "application/fhir+json"},
            timeout=120,
        )
        statuses.append(response.status_code)

    async def mllp_while(posting: list[threading.Thread]) -> list[float]:
        client = MllpClient("127.0.0.1", service.mllp_port, timeout=30)
        latencies = []
        n = 0
        try:
            while any(t.is_alive() for t in posting) or n < 5:
                started = time.perf_counter()
                ack = await client.send(message(n))
                latencies.append(time.perf_counter() - started)
                assert msa(ack)[1] == "AA"
                n += 1
                await asyncio.sleep(0.05)
        finally:
            await client.close()
        return latencies

    posting = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in posting:
        thread.start()
    latencies = asyncio.run(mllp_while(posting))
    for thread in posting:
        thread.join(120)
    assert statuses == [202, 202, 202]
    print(
        f"MLLP ACKs during three 9 MB POSTs: n={len(latencies)} "
        f"p50={statistics.median(latencies) * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms"
    )
    # before the fix the loop parsed each body itself: ACKs waited ~1 s per body (3+ s)
    assert max(latencies) < ACK_BOUND_S


def test_a_9mb_fhir_body_grows_the_api_process_by_a_small_multiple_of_its_size(
    service: Service,
) -> None:
    """Issue 25 item 4: before, one 9 MB DiagnosticReport grew the process by ~200 MB (21.6x
    its size: the language guess listed every word of the 6.8 MB text, the model decoded the
    base64 whole, the text was built only to be thrown away). Now: the body, one copy of its
    large string, and SQLite's own copies when it stores the body (measured 3.2x)."""
    post = f"{service.http}/fhir/DiagnosticReport"
    headers = {"Content-Type": "application/fhir+json"}
    assert httpx.post(post, content=big_report(90, 0.01), headers=headers).status_code == 202
    body = big_report(91, 9.0)
    before = service.memory("VmRSS")
    assert httpx.post(post, content=body, headers=headers, timeout=120).status_code == 202
    growth = service.memory("VmHWM") - before
    print(f"one 9 MB FHIR body: peak RSS growth {growth / MB:.1f} MB = {growth / len(body):.2f}x")
    assert growth < 4 * len(body)


def test_a_bundle_of_5000_reports_is_5000_jobs(tmp_path: Path) -> None:
    store = Store.open(Settings(data_dir=tmp_path / "data"))
    accepted: list[int] = []
    from adapter.api import create_app

    client = TestClient(create_app(Settings(), store, on_accepted=accepted.append))
    entries = []
    for n in range(5000):
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
                "resource": {"resourceType": "Patient", "id": f"p{n}"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "id": f"dr{n}",
                    "status": "final",
                    "code": {"text": "Chest X-ray"},
                    "subject": {"reference": f"urn:uuid:00000000-0000-4000-8000-{n:012d}"},
                    "conclusion": f"No pleural effusion ({n}).",
                }
            }
        )
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 202, response.text[:500]
    issues = response.json()["issue"]
    assert issues[0]["diagnostics"].startswith("accepted as 5000 jobs")
    jobs = [int(i["diagnostics"].split()[1]) for i in issues[1:]]
    assert len(set(jobs)) == 5000 and sorted(accepted) == sorted(jobs)
    assert issues[1]["expression"] == ["Bundle.entry[1].resource"]
    assert store.counts_by_state()["accepted"] == 5000
    # each job holds its own report and the Patient it references, nothing else
    from mappings.fhir_in import reports_from_fhir

    stored = json.loads(store.raw(jobs[4321]))
    assert [e["resource"]["id"] for e in stored["entry"]] == ["dr4321", "p4321"]
    (report,) = reports_from_fhir(stored)
    assert report.fhir_resource_id == "dr4321"
    # a resend is 5000 duplicates, no new rows
    again = client.post("/fhir", json=bundle).json()["issue"]
    assert all(i["diagnostics"].endswith("(duplicate)") for i in again[1:])
    assert store.counts_by_state()["accepted"] == 5000
    store.close()


# -- limits (issue 14 promise 9) --------------------------------------------------------------


def test_200_idle_connections_do_not_block_a_real_sender(service: Service) -> None:
    async def flood() -> tuple[bytes, float, int]:
        opened = []
        for i in range(200):  # 200 peers, one idle connection each (the cap is 64)
            with contextlib.suppress(OSError):
                opened.append(
                    await asyncio.open_connection(
                        "127.0.0.1",
                        service.mllp_port,
                        local_addr=(f"127.0.{1 + i // 100}.{1 + i % 100}", 0),
                    )
                )
        await asyncio.sleep(0.5)
        ack, seconds = await send_one(service.mllp_port, "127.0.9.9", 1)
        await asyncio.sleep(2.5)  # past the 2 s idle timeout: every idle connection is closed
        still_open = 0
        for reader, writer in opened:
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) != b"":
                    still_open += 1
            except TimeoutError:
                still_open += 1
            except ConnectionError:
                pass
            writer.close()
        return ack, seconds, still_open

    ack, seconds, still_open = asyncio.run(flood())
    assert msa(ack)[1] == "AA" and seconds < 1.0
    assert still_open == 0


def _send_50mb_frame(port: int) -> bytes:
    import socket

    chunk = b"OBX|1|TX|X||" + b"y" * (MB - 12)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"\x0b" + message(1) + b"\r")
        for _ in range(50):
            sock.sendall(chunk)
        sock.sendall(b"\x1c\x0d")
        frames = FrameReader(MB)
        while True:
            data = sock.recv(65536)
            assert data, "closed without an answer"
            for event in frames.feed(data):
                assert event.payload is not None
                return event.payload


def test_a_50mb_mllp_frame_gets_a_nak_with_flat_memory(service: Service) -> None:
    before = service.memory("VmRSS")
    ack = _send_50mb_frame(service.mllp_port)
    growth = service.memory("VmHWM") - before
    print(f"50 MB MLLP frame: peak RSS growth {growth / MB:.1f} MB")
    assert msa(ack)[1] == "AR" and b"exceeds the limit" in ack
    assert growth < RSS_BOUND
    # the connection and the listener go on
    assert msa(asyncio.run(send_one(service.mllp_port, "127.0.0.1", 2))[0])[1] == "AA"


def test_an_http_body_over_the_limit_is_413_with_flat_memory(service: Service) -> None:
    declared = httpx.post(
        f"{service.http}/hl7v2", content=b"x" * (10 * MB + 1), timeout=60
    )  # Content-Length over the limit
    assert declared.status_code == 413
    assert declared.json()["resourceType"] == "OperationOutcome"
    assert declared.json()["issue"][0]["code"] == "too-costly"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, 50 MB
        for _ in range(50):
            yield b"{" + b" " * (MB - 1)

    before = service.memory("VmRSS")
    chunked = httpx.post(f"{service.http}/fhir", content=chunks(), timeout=120)
    growth = service.memory("VmHWM") - before
    print(f"50 MB chunked HTTP body: peak RSS growth {growth / MB:.1f} MB")
    assert chunked.status_code == 413
    assert chunked.json()["issue"][0]["code"] == "too-costly"
    assert growth < RSS_BOUND
