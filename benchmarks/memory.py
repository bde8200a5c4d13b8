"""Memory benchmark: how much one large FHIR body grows the API process (issue 25 item 4).

Part 1, the serving process: for each kind of body, a fresh serving process (the HTTP API and
the MLLP listener on one event loop over a SQLite store, as `radbridge serve` runs them:
`tests.test_limits._serve`) takes a small warm-up POST, then the large body; the row is the
growth of its peak RSS (VmHWM after the POST minus VmRSS before it), in MB and as a multiple of
the body's size, the median of --runs processes. --baseline DIR runs the same from another
checkout (e.g. `git worktree add /tmp/memold <commit>`) in the same run, as its own column.
The bodies: a DiagnosticReport whose base64 text/plain presentedForm is most of it; a Bundle
of that report and its Patient (stored as sent); a Bundle of two reports, one of them large,
and their Patient (split: one stored message per report).

Part 2, where the copies are: the same steps in this process, one at a time (the body joined
from its chunks, parsed, checked, made the messages to store, stored), each step's peak RSS
above the RSS before the body existed (Linux: VmHWM reset through /proc/self/clear_refs, freed
memory handed back with malloc_trim between the steps).

Part 3, SQLite's own copies of one blob of that size INSERTed: bound into a column with data
after it (as `messages.raw` was before migration 0010) and as a trailing `zeroblob(n)` filled by
incremental blob I/O (as the store writes it since 0010).

    .venv/bin/python benchmarks/memory.py [--megabytes 9] [--runs 3] [--baseline DIR]
        [--database-url URL]   (the store of both parts; SQLite in a temporary dir by default)
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mappings.media_types import FHIR_JSON  # noqa: E402

MB = 1024 * 1024
SENTENCE = "Findings: small left pleural effusion. No pneumothorax. "


def report(n: int, megabytes: float) -> dict[str, Any]:
    """A DiagnosticReport of about `megabytes` MB (base64 text/plain presentedForm)."""
    text = (SENTENCE * int(megabytes * MB * 3 / 4 / len(SENTENCE) + 1)).encode()
    return {
        "resourceType": "DiagnosticReport",
        "id": f"big{n}",
        "status": "final",
        "code": {"text": "CT chest"},
        "subject": {"reference": f"urn:uuid:00000000-0000-4000-8000-{n:012d}"},
        "presentedForm": [
            {"contentType": "text/plain; charset=utf-8", "data": base64.b64encode(text).decode()}
        ],
    }


def patient(n: int) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
        "resource": {"resourceType": "Patient", "id": f"p{n}"},
    }


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


BODIES: dict[str, tuple[str, Callable[[int, float], dict[str, Any]]]] = {
    "DiagnosticReport": ("/fhir/DiagnosticReport", report),
    "Bundle, one report": ("/fhir", lambda n, mb: bundle({"resource": report(n, mb)}, patient(n))),
    "Bundle, two reports (split)": (
        "/fhir",
        lambda n, mb: bundle(
            {"resource": report(n, mb)}, {"resource": report(n + 1, 0.001)}, patient(n)
        ),
    ),
}


def body_of(kind: str, n: int, megabytes: float) -> bytes:
    return json.dumps(BODIES[kind][1](n, megabytes)).encode()


# -- part 1: a serving process ------------------------------------------------------------------


def memory(pid: int, field: str) -> int:
    """VmRSS or VmHWM of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def serving_growth(code: Path, kind: str, megabytes: float, database_url: str) -> tuple[int, int]:
    """(peak RSS growth, body size) of a fresh serving process running `code` for one body."""
    with tempfile.TemporaryDirectory() as root:
        ports = Path(root) / "ports"
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "RADBRIDGE_DATABASE_URL": database_url,
            "RADBRIDGE_HTTP_MAX_BODY_BYTES": str(int(megabytes * 3 * MB)),
        }
        script = f"from tests.test_limits import _serve; _serve({root + '/data'!r}, {str(ports)!r})"
        process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=code)
        try:
            deadline = time.monotonic() + 120
            while not ports.exists() or not ports.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the serving process did not start")
                time.sleep(0.1)
            http = f"http://127.0.0.1:{ports.read_text().split()[1]}"
            path = BODIES[kind][0]
            headers = {"Content-Type": FHIR_JSON}
            for _attempt in range(300):
                try:
                    warm = httpx.post(http + path, content=body_of(kind, 1, 0.01), headers=headers)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert warm.status_code == 202, warm.text
            body = body_of(kind, random.randrange(10**9), megabytes)  # new, also in PostgreSQL
            before = memory(process.pid, "VmRSS")
            response = httpx.post(http + path, content=body, headers=headers, timeout=300)
            assert response.status_code == 202, response.text
            return memory(process.pid, "VmHWM") - before, len(body)
        finally:
            process.terminate()
            process.wait(30)


# -- part 2: the steps in this process ----------------------------------------------------------


def steps(megabytes: float, database_url: str) -> list[tuple[str, str, float]]:
    """(body kind, step, peak RSS above the RSS before the body, as a multiple of its size)."""
    from adapter.api.context import parse_json
    from adapter.ingest import fhir_messages
    from adapter.settings import Settings
    from adapter.store import Store
    from mappings.fhir_in import report_keys_from_fhir

    libc = ctypes.CDLL("libc.so.6")

    def reset() -> int:
        gc.collect()
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return memory(os.getpid(), "VmRSS")

    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as root:
        store = Store.open(Settings(data_dir=Path(root)), url=database_url or None)
        for kind in BODIES:
            small = body_of(kind, 1, 0.01)
            resource = parse_json(small)
            keys = report_keys_from_fhir(resource, default_language="en")
            store.accept_many([m for _, m in fhir_messages(small, resource, keys, FHIR_JSON)])
            whole = body_of(kind, random.randrange(10**9), megabytes)
            size = len(whole)
            chunks = [whole[i : i + 65536] for i in range(0, size, 65536)]
            del whole
            base = reset() - size  # as if the chunks had not arrived yet

            def peak(step: str) -> None:
                rows.append((kind, step, (memory(os.getpid(), "VmHWM") - base) / size))  # noqa: B023

            body = b"".join(chunks)
            del chunks
            peak("body joined from its chunks")
            reset()
            resource = parse_json(body)
            peak("parsed (adapter.json_body)")
            reset()
            keys = report_keys_from_fhir(resource, default_language="en")
            peak("checked (report keys)")
            reset()
            messages = fhir_messages(body, resource, keys, FHIR_JSON)
            peak(f"messages to store ({len(messages)})")
            del resource
            reset()
            store.accept_many([m for _, m in messages])
            peak("stored (one transaction)")
            del body, messages
        store.close()
    return rows


def sqlite_insert_copies(megabytes: float) -> list[tuple[str, float]]:
    """SQLite's own copies of one blob INSERTed (this process's peak RSS above the blob's bytes,
    as a multiple of them): bound as `messages.raw` was (a column with data after it), and as
    `zeroblob(n)` filled through incremental blob I/O in a table where it is the last column
    (what the store does since migration 0010; SQLite writes a trailing zeroblob without holding
    it)."""
    import sqlite3

    libc = ctypes.CDLL("libc.so.6")
    blob = os.urandom(int(megabytes * MB))
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as root:
        for name in ("bound, data after it", "zeroblob last, blob I/O"):
            connection = sqlite3.connect(Path(root) / f"{len(rows)}.db", isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            columns = "raw BLOB, state TEXT" if name.startswith("bound") else "state TEXT, raw BLOB"
            connection.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {columns})")
            connection.execute("INSERT INTO t (raw, state) VALUES (x'00', 'warm')")
            gc.collect()
            libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            base = memory(os.getpid(), "VmRSS")
            connection.execute("BEGIN")
            if name.startswith("bound"):
                connection.execute("INSERT INTO t (raw, state) VALUES (?, 'accepted')", (blob,))
            else:
                rowid = connection.execute(
                    "INSERT INTO t (state, raw) VALUES ('accepted', zeroblob(?))", (len(blob),)
                ).lastrowid
                view = memoryview(blob)
                with connection.blobopen("t", "raw", rowid or 0) as target:
                    for start in range(0, len(view), 256 * 1024):
                        target.write(view[start : start + 256 * 1024])
            connection.execute("COMMIT")
            rows.append((name, (memory(os.getpid(), "VmHWM") - base) / len(blob)))
            connection.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=9.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--database-url", default="", help="the store (default: SQLite)")
    args = parser.parse_args()
    codes = [("before", args.baseline)] if args.baseline else []
    codes.append(("this code", REPO))
    store = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite"
    print(
        f"one {args.megabytes:g} MB FHIR body, serving process peak RSS growth "
        f"(median of {args.runs} processes, {store} store, load {os.getloadavg()[0]:.1f})\n"
    )
    print("| body | " + " | ".join(name for name, _ in codes) + " |")
    print("|---|" + "---|" * len(codes))
    for kind in BODIES:
        cells = []
        for _, code in codes:
            measured = [
                serving_growth(code, kind, args.megabytes, args.database_url)
                for _ in range(args.runs)
            ]
            growth = statistics.median(g for g, _ in measured)
            cells.append(f"{growth / MB:.1f} MB ({growth / measured[0][1]:.2f}x)")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"\nwhere the copies are (this code, in this process, {store} store): peak RSS per step")
    print("above the RSS before the body, as a multiple of the body's size\n")
    print("| body | step | peak |")
    print("|---|---|---|")
    for kind, step, multiple in steps(args.megabytes, args.database_url):
        print(f"| {kind} | {step} | {multiple:.2f}x |")
    print(f"\nSQLite's own copies of one {args.megabytes:g} MB blob INSERTed (peak above it)\n")
    print("| insert | peak |")
    print("|---|---|")
    for name, multiple in sqlite_insert_copies(args.megabytes):
        print(f"| {name} | {multiple:.2f}x |")
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
