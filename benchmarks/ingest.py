"""Ingest benchmark: MLLP messages/s and ACK latency with store-then-ACK on SQLite WAL (FULL).

Runs the real listener (`adapter.mllp.MllpServer` + `adapter.ingest.Hl7Ingest` + `adapter.store`)
in its own process, sends N scout messages (MSH-10 made unique per send) over one persistent
connection and over 8 concurrent connections, and prints a table. Beside it, in the same run and
the same data dir's filesystem, it measures the disk's limit: a bare `sqlite3` loop of one-row
INSERT + COMMIT (WAL, `synchronous=FULL`, a row the size of a median message), before and after
the loads, and prints radbridge's msg/s divided by that commit rate (the targets: >= 0.8 over
one connection, >= 2 over eight, where the group commit shares one fsync among messages). With
`--busy-worker` a real extraction process (`radbridge extract` with the llama.cpp model) runs at
the same time, so the ACK latency is measured with an extraction backlog.

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
    """Send `messages` spread over `connections`; (seconds, per-message ACK latencies in ms).
    The client is a lean one (one read per ACK, no per-read timers) so that the load generator,
    which shares the CPU with the listener, costs as little as it can."""
    latencies: list[float] = []

    async def one(batch: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for message in batch:
            started = time.perf_counter()
            writer.write(b"\x0b" + message + b"\x1c\x0d")
            ack = await reader.readuntil(b"\x1c\x0d")
            latencies.append((time.perf_counter() - started) * 1000)
            if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                raise RuntimeError("a message was not accepted")
        writer.close()
        await writer.wait_closed()

    batches = [
        [unique(m, offset + i) for i, m in enumerate(messages) if i % connections == c]
        for c in range(connections)
    ]
    started = time.perf_counter()
    async with asyncio.timeout(600):
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


def bare_commit_rate(directory: Path, row_bytes: int, seconds: float = 2.0) -> float:
    """Commits per second of a bare sqlite3 loop: one INSERT + COMMIT per row, WAL, FULL."""
    import sqlite3

    path = directory / "bare-commit.db"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, raw BLOB)")
        row = b"x" * row_bytes
        count = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            connection.execute("BEGIN")
            connection.execute("INSERT INTO t (raw) VALUES (?)", (row,))
            connection.execute("COMMIT")
            count += 1
        return count / elapsed
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="each load is run this many times")
    parser.add_argument("--busy-worker", action="store_true")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the data dir goes (default: a temp dir)"
    )
    args = parser.parse_args()
    corpus = scout_messages()
    messages = [corpus[i % len(corpus)] for i in range(args.messages)]
    row_bytes = int(statistics.median(len(m) for m in corpus))
    loads = [("1 connection", 1, 0.8), ("8 connections", 8, 2.0)]
    results: dict[str, list[tuple[float, float, list[float]]]] = {label: [] for label, *_ in loads}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ready: multiprocessing.Queue[int] = multiprocessing.Queue()  # type: ignore[type-arg]
        server = multiprocessing.Process(target=serve, args=(tmp, ready), daemon=True)
        server.start()
        port = ready.get(timeout=60)
        worker = busy_worker(Path(tmp)) if args.busy_worker else None
        try:
            # the disk's commit rate drifts (a shared machine): each load is measured between
            # two bare commit loops and compared with their mean
            bare = bare_commit_rate(Path(tmp), row_bytes)
            offset = 0
            for _ in range(args.rounds):
                for label, connections, _target in loads:
                    seconds, latencies = asyncio.run(run_load(port, messages, connections, offset))
                    offset += 10**6
                    after = bare_commit_rate(Path(tmp), row_bytes)
                    results[label].append((len(latencies) / seconds, (bare + after) / 2, latencies))
                    bare = after
        finally:
            if worker is not None:
                worker.kill()
            server.kill()
            server.join()
    print(
        f"\ningest benchmark: SQLite WAL synchronous=FULL, busy worker: "
        f"{'yes' if args.busy_worker else 'no'}; bare = a sqlite3 loop of one {row_bytes}-byte "
        f"INSERT + COMMIT in the same filesystem, just before and after each load (their mean)"
    )
    print(
        f"{'load':<15} {'messages':>9} {'msg/s':>8} {'bare/s':>8} {'ratio':>6} {'target':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    for label, _connections, target in loads:
        for rate, commit_rate, latencies in results[label]:
            print(
                f"{label:<15} {len(latencies):>9} {rate:>8.0f} {commit_rate:>8.0f} "
                f"{rate / commit_rate:>6.2f} {'>= ' + str(target):>7} "
                f"{statistics.median(latencies):>7.2f} {percentile(latencies, 0.99):>7.2f}"
            )


if __name__ == "__main__":
    main()
