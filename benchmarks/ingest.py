"""Ingest benchmark: MLLP messages/s and ACK latency with store-then-ACK on SQLite WAL (FULL).

Runs the real listener (`adapter.mllp.MllpServer` + `adapter.ingest.Hl7Ingest` + `adapter.store`)
in its own process, sends N scout messages (MSH-10 made unique per send) over one persistent
connection and over 8 concurrent connections, and prints a table. With `--busy-worker` a real
extraction process (`radbridge extract` with the llama.cpp model) runs at the same time, so the
ACK latency is measured with an extraction backlog.

    .venv/bin/python benchmarks/ingest.py [--messages 3000] [--busy-worker]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCOUT = (
    REPO.parent
    / "shared"
    / "fixtures"
    / "hl7v2"
    / "scout"
    / "tests"
    / "ingest"
    / "staging_test_data"
)
sys.path.insert(0, str(REPO))


def scout_messages() -> list[bytes]:
    """Every ORU in the scout corpus, with `\\r` segment ends."""
    messages = []
    for path in sorted(SCOUT.rglob("*.log")):
        for body in re.findall(rb"<SB>\s*(MSH.*?)<EB>", path.read_bytes(), re.DOTALL):
            messages.append(b"\r".join(s.strip() for s in body.split(b"<R>") if s.strip()))
    return messages


def unique(message: bytes, n: int) -> bytes:
    """The message with MSH-10 suffixed so every send is a new message."""
    fields = message.split(b"\r", 1)[0].split(b"|")
    fields[9] = fields[9] + f".b{n}".encode()
    return b"|".join(fields) + b"\r" + message.split(b"\r", 1)[1]


def serve(data_dir: str, ready: multiprocessing.Queue[int]) -> None:  # type: ignore[type-arg]
    """The listener process."""
    from adapter.ingest import Hl7Ingest
    from adapter.mllp import MllpServer
    from adapter.settings import Settings
    from adapter.store import Store

    async def main() -> None:
        store = Store.open(Settings(data_dir=Path(data_dir)))
        server = MllpServer(Hl7Ingest(store), host="127.0.0.1", port=0, max_connections=64)
        ready.put(await server.start())
        await asyncio.Event().wait()

    asyncio.run(main())


async def run_load(
    port: int, messages: list[bytes], connections: int, offset: int
) -> tuple[float, list[float]]:
    """Send `messages` spread over `connections`; (seconds, per-message ACK latencies in ms)."""
    from adapter.mllp import MllpClient

    latencies: list[float] = []

    async def one(batch: list[bytes]) -> None:
        client = MllpClient("127.0.0.1", port, timeout=30)
        for message in batch:
            started = time.perf_counter()
            ack = await client.send(message)
            latencies.append((time.perf_counter() - started) * 1000)
            if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                raise RuntimeError("a message was not accepted")
        await client.close()

    batches = [
        [unique(m, offset + i) for i, m in enumerate(messages) if i % connections == c]
        for c in range(connections)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(one(batch) for batch in batches))
    return time.perf_counter() - started, latencies


def busy_worker(out: Path) -> subprocess.Popen[bytes]:
    """A real extraction run in the background (the worker side competing for the CPU)."""
    folder = out / "reports"
    folder.mkdir()
    for i, message in enumerate(scout_messages()[:60]):
        (folder / f"{i}.hl7").write_bytes(message)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from app.cli import main; main()",
            "extract",
            str(folder),
            "--out",
            str(out / "x"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--busy-worker", action="store_true")
    args = parser.parse_args()
    corpus = scout_messages()
    messages = [corpus[i % len(corpus)] for i in range(args.messages)]
    with tempfile.TemporaryDirectory() as tmp:
        ready: multiprocessing.Queue[int] = multiprocessing.Queue()  # type: ignore[type-arg]
        server = multiprocessing.Process(target=serve, args=(tmp, ready), daemon=True)
        server.start()
        port = ready.get(timeout=60)
        worker = busy_worker(Path(tmp)) if args.busy_worker else None
        rows = []
        try:
            for label, connections, offset in (("1 connection", 1, 0), ("8 connections", 8, 10**6)):
                seconds, latencies = asyncio.run(run_load(port, messages, connections, offset))
                rows.append(
                    (
                        label,
                        len(latencies),
                        len(latencies) / seconds,
                        statistics.median(latencies),
                        percentile(latencies, 0.99),
                    )
                )
        finally:
            if worker is not None:
                worker.kill()
            server.kill()
    print(
        f"\ningest benchmark: SQLite WAL synchronous=FULL, busy worker: {'yes' if args.busy_worker else 'no'}"
    )
    print(f"{'load':<15} {'messages':>9} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, count, rate, p50, p99 in rows:
        print(f"{label:<15} {count:>9} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
