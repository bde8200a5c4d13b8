"""`radbridge serve` supervises its children (issue 15 items 2, 6, 8, 13; issue 14 promises 3
and 10): real `serve` processes with embedded Redis and SQLite, kill -9 of the worker, of the
embedded redis-server and of serve itself, a flushed Redis, a port already taken. Each test
prints the figure it measured (restart and recovery seconds)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from adapter.settings import Settings
from adapter.store import Store
from adapter.store.messages import Incoming
from tests.helpers.waiting import wait_for
from tests.serve_process import RADBRIDGE, Service, running_serve, serve_env
from tests.stores import PG_URL, pg_schema_url

HL7_DIR = Path(__file__).parent / "fixtures" / "hl7v2"
CHEST_XRAY = (HL7_DIR / "chest_xray.hl7").read_bytes().strip()
pytestmark = pytest.mark.integration
RULES = {"RADBRIDGE_STAGE": "rules", "RADBRIDGE_RECONCILE_INTERVAL_S": "5"}


def message(control_id: str) -> bytes:
    """The chest X-ray fixture under another MSH-10 (a new message to the store)."""
    return CHEST_XRAY.replace(b"XR0002", control_id.encode())


def send(service: Service, payload: bytes) -> bytes:
    """One MLLP message to the service; its ACK."""
    from hl7.client import MLLPClient

    with MLLPClient("127.0.0.1", service.mllp_port) as client:
        return bytes(client.send_message(payload.decode()))


def children(data_dir: Path) -> dict[str, int]:
    """serve's children as its pid file lists them."""
    try:
        return dict(json.loads((data_dir / "serve.pid").read_text() or "{}").get("children", {}))
    except (OSError, ValueError):
        return {}


def worker_of(service: Service) -> int:
    """The pid of serve's worker child (found by command line: older serves kept no pid file)."""
    for child in psutil.Process(service.pid).children():
        if "worker" in child.cmdline():
            return int(child.pid)
    pytest.fail("serve runs no worker")


def job_state(service: Service, job_id: int) -> str | None:
    response = httpx.get(f"{service.http}/jobs/{job_id}", timeout=5)
    return str(response.json()["state"]) if response.status_code == 200 else None


def ready(service: Service) -> bool:
    try:
        return httpx.get(f"{service.http}/readyz", timeout=3).status_code == 200
    except httpx.TransportError:
        return False


def on_socket(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line names the data dir's Redis socket (redis-server shows it)."""
    path = str((data_dir / "redis.sock").resolve())
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(path in part for part in process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_serve(tmp_path, RULES) as running:
        yield running


def test_killed_worker_is_restarted_and_its_message_reclaimed(service: Service) -> None:
    """kill -9 of the worker: /readyz says not ready, the worker comes back with a new pid, its
    beat and pool die with it, the message it held `processing` is reclaimed at once (not after
    the 3,600 s visibility timeout) and a message sent after the kill is processed."""
    worker = worker_of(service)
    wait_for(lambda: bool(psutil.Process(worker).children()), 60, "beat, a worker's child")
    descendants = [p.pid for p in psutil.Process(worker).children(recursive=True)]
    store = Store.open(Settings(data_dir=service.data_dir))
    try:
        held = store.accept(Incoming(raw=message("HELD0001"), channel="mllp")).message_id
        assert store.claim(held, token="the-killed-worker")  # in flight in the worker we kill
    finally:
        store.close()
    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not ready(service), 5, "/readyz reports the dead worker")
    wait_for(lambda: not any(alive(pid) for pid in descendants), 10, "beat dies with its worker")
    ack = send(service, message("AFTER0001"))
    assert b"MSA|AA|AFTER0001" in ack
    wait_for(
        lambda: ready(service) and worker_of(service) != worker,
        90,
        "a new worker",
    )
    restart_s = time.monotonic() - killed
    wait_for(lambda: job_state(service, held) == "extracted", 60, "the held message reclaimed")
    reclaim_s = time.monotonic() - killed
    wait_for(lambda: job_state(service, held + 1) == "extracted", 60, "the later message")
    print(f"\nworker restarted and ready {restart_s:.1f} s after kill -9; held message "
          f"extracted after {reclaim_s:.1f} s")  # fmt: skip
    assert "exited (code -9)" in service.log.read_text()


def test_killed_beat_is_restarted_and_readyz_says_not_ready_meanwhile(service: Service) -> None:
    """Issue 24 item 2: kill -9 of the worker's embedded beat. The worker stops (no zombie is
    left), /readyz says not ready, serve restarts the worker within its backoff with a new beat,
    and that beat's reconcile queues a message Redis never saw."""
    beat_file = service.data_dir / "beat.pid"
    wait_for(beat_file.exists, 60, "beat.pid, the worker's embedded beat")
    beat = int(beat_file.read_text())
    worker = worker_of(service)
    assert beat in [p.pid for p in psutil.Process(worker).children()]
    killed = time.monotonic()
    os.kill(beat, signal.SIGKILL)
    wait_for(lambda: not ready(service), 15, "/readyz reports the dead beat")
    not_ready_s = time.monotonic() - killed
    wait_for(lambda: not alive(beat), 15, "the dead beat reaped, not a zombie")
    wait_for(
        lambda: ready(service) and beat_file.exists() and int(beat_file.read_text()) != beat,
        90,
        "a new worker with a new beat",
    )
    restart_s = time.monotonic() - killed
    assert worker_of(service) != worker
    store = Store.open(Settings(data_dir=service.data_dir))
    try:  # stored behind Redis's back: only a reconcile (every 5 s) queues it
        unseen = store.accept(Incoming(raw=message("NOBEAT01"), channel="mllp")).message_id
    finally:
        store.close()
    wait_for(lambda: job_state(service, unseen) == "extracted", 60, "reconcile by the new beat")
    print(f"\n/readyz not ready {not_ready_s:.1f} s after kill -9 of beat; worker and beat back "
          f"and ready after {restart_s:.1f} s")  # fmt: skip
    assert "embedded beat pid=" in service.log.read_text()


def test_killed_redis_is_restarted_and_ingest_keeps_acking(service: Service) -> None:
    """kill -9 of the embedded redis-server: a message sent at once is ACKed AA (stored: the
    store is the truth), Redis comes back on the same socket and the message is processed."""
    redis_pids = [process.pid for process in on_socket(service.data_dir)]
    assert len(redis_pids) == 1, "one redis-server, on the socket in the data dir"
    redis_pid = redis_pids[0]
    killed = time.monotonic()
    os.kill(redis_pid, signal.SIGKILL)
    wait_for(lambda: not alive(redis_pid), 5, "redis-server gone")
    ack = send(service, message("NOREDIS01"))
    assert b"MSA|AA|NOREDIS01" in ack, ack
    wait_for(lambda: job_state(service, 1) == "extracted", 90, "the message processed")
    print(f"\nmessage sent while Redis was dead extracted {time.monotonic() - killed:.1f} s "
          "after kill -9 of redis-server")  # fmt: skip
    assert children(service.data_dir)["redis-server"] not in (None, redis_pid)
    assert [process.pid for process in on_socket(service.data_dir)] != [redis_pid]
    assert (service.data_dir / "redis.sock").exists() and (service.data_dir / "redis.aof").exists()


def test_flushed_redis_is_recovered_by_reconcile(service: Service) -> None:
    """Issue 14 promise 3: Redis flushed while messages are queued (worker and beat stopped so
    they stay queued): reconcile queues every one again and all are extracted."""
    import redis

    from adapter.queue import task_message_ids

    worker = worker_of(service)
    family = [psutil.Process(worker), *psutil.Process(worker).children(recursive=True)]
    for process in family:
        process.suspend()
    try:
        count = 20
        for n in range(count):
            assert b"MSA|AA|" in send(service, message(f"FLUSH{n:04d}"))
        client = redis.Redis(unix_socket_path=str(service.data_dir / "redis.sock"))

        def in_broker() -> set[int]:
            """The messages whose task is queued or reserved (serve queues several per task);
            the task a suspended consumer's pending BRPOP took is in neither."""
            reserved = [json.loads(v)[0] for v in client.hvals("unacked")]
            held = [*client.lrange("celery", 0, -1), *reserved]
            return {m for task in held for m in task_message_ids(task)}

        # the last message's task is in the broker: serve queues them in order, after the ACK
        wait_for(lambda: count in in_broker(), 10, "the messages queued")
        client.flushdb()
        flushed = time.monotonic()
    finally:
        for process in family:
            process.resume()
    wait_for(
        lambda: all(job_state(service, n) == "extracted" for n in range(1, count + 1)),
        120,
        "every flushed message extracted",
    )
    print(f"\n{count} messages flushed from Redis all extracted "
          f"{time.monotonic() - flushed:.1f} s after FLUSHDB (reconcile every 5 s)")  # fmt: skip


def start_serve(root: Path, settings: dict[str, str]) -> tuple[subprocess.Popen[bytes], Service]:
    """`radbridge serve` started (not waited for), its output in root/serve.log."""
    env = serve_env(root, {**RULES, **settings})
    log_path = root / "serve.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*RADBRIDGE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    service = Service(
        int(env["RADBRIDGE_MLLP_PORT"]),
        f"http://127.0.0.1:{env['RADBRIDGE_HTTP_PORT']}",
        log_path,
        process.pid,
        Path(env["RADBRIDGE_DATA_DIR"]),
    )
    return process, service


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_killed_serve_leaves_nothing_running(tmp_path: Path) -> None:
    """kill -9 of serve: worker, beat and redis-server die with it (issue 14 promise 10); a
    second serve on the same data dir is refused while the first runs."""
    process, service = start_serve(tmp_path, {})
    try:
        wait_for(lambda: ready(service), 90, "serve ready")
        listed = children(service.data_dir)
        assert set(listed) == {"worker", "redis-server"}
        family = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        assert on_socket(service.data_dir), "the embedded Redis socket is in the data dir"
        second = subprocess.run(
            [*RADBRIDGE, "serve"],
            env=serve_env(tmp_path, RULES),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2 and b"another radbridge serve" in second.stderr
        assert b"Traceback" not in second.stderr + second.stdout
        killed = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        gone_s = wait_for(
            lambda: not any(alive(pid) for pid in family) and not on_socket(service.data_dir),
            30,
            "serve's children gone",
        )
        print(f"\nall {len(family)} descendants of serve gone {gone_s:.1f} s after kill -9 "
              f"(measured {time.monotonic() - killed:.1f} s)")  # fmt: skip
    finally:
        stop(process)


def test_restarted_serve_stops_what_a_crashed_one_left(tmp_path: Path) -> None:
    """A leftover of a crashed serve (its parent-death signal never came: here a stand-in with
    a worker's command line, listed in serve.pid) is stopped by the next serve; an unrelated
    process in the pid file (command line not matching) is left alone."""
    data = tmp_path / "data"
    data.mkdir()
    sleeper = "import time; time.sleep(600)"
    leftover = subprocess.Popen([*RADBRIDGE[:1], "-c", sleeper, "worker", "--supervised"])
    unrelated = subprocess.Popen([*RADBRIDGE[:1], "-c", sleeper])
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = {
        "serve": dead.pid,
        "children": {"worker": leftover.pid, "redis-server": unrelated.pid},
    }
    (data / "serve.pid").write_text(json.dumps(record))
    process, service = start_serve(tmp_path, {})
    try:
        wait_for(lambda: ready(service), 90, "serve ready")
        assert leftover.poll() is not None, "the crashed instance's worker was stopped"
        assert unrelated.poll() is None, "a process that merely reused a pid is not touched"
        assert children(service.data_dir)["worker"] != leftover.pid
    finally:
        stop(process)
        unrelated.kill()
        leftover.kill()
        unrelated.wait()
        leftover.wait()


@pytest.mark.parametrize("taken", ["RADBRIDGE_HTTP_PORT", "RADBRIDGE_MLLP_PORT"])
def test_serve_that_cannot_bind_exits_cleanly(tmp_path: Path, taken: str) -> None:
    """A port already taken: exit 2 with a message naming the setting, no traceback, and no
    child left (no worker, no redis-server on the data dir socket)."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = serve_env(tmp_path, {**RULES, taken: str(port)})
        process = subprocess.Popen(
            [*RADBRIDGE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            output, _ = process.communicate(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
    text = output.decode()
    assert process.returncode == 2, text
    assert "cannot listen" in text and taken in text and "Traceback" not in text
    data = Path(env["RADBRIDGE_DATA_DIR"])
    assert not on_socket(data) and children(data) == {}


def test_worker_stops_the_embedded_redis_it_started(tmp_path: Path) -> None:
    """`radbridge worker` without RADBRIDGE_REDIS_URL starts Redis on the data dir socket and
    stops it when it exits (SIGTERM), and a kill -9 of the worker does not leak it either."""
    env = serve_env(tmp_path, RULES)
    data = Path(env["RADBRIDGE_DATA_DIR"])
    for how in (signal.SIGTERM, signal.SIGKILL):
        worker = subprocess.Popen(
            [*RADBRIDGE, "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: bool(on_socket(data)), 60, "the worker's redis-server")
            worker.send_signal(how)
            worker.wait(60)
            gone_s = wait_for(lambda: not on_socket(data), 30, "redis-server stopped")
            print(f"\nworker {how.name}: its redis-server gone after {gone_s:.1f} s")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@pytest.mark.skipif(not PG_URL, reason="needs RADBRIDGE_TEST_DATABASE_URL (CI sets it)")
def test_beat_starts_with_postgresql_external_redis_and_no_data_dir(
    tmp_path: Path, redis_url: str
) -> None:
    """Issue 15 item 6: PostgreSQL, external Redis and a data dir that does not exist yet: beat
    starts (the schedule's directory is created) and reconcile queues a stored message nobody
    enqueued."""
    data = tmp_path / "not" / "yet" / "data"
    with pg_schema_url() as url:
        settings = Settings(data_dir=data, database_url=url)
        store = Store.open(settings)
        try:
            stored = store.accept(Incoming(raw=message("BEAT0001"), channel="mllp")).message_id
            env = serve_env(tmp_path, RULES)
            env.update(
                RADBRIDGE_DATA_DIR=str(data),
                RADBRIDGE_DATABASE_URL=url,
                RADBRIDGE_REDIS_URL=redis_url,
                RADBRIDGE_RECONCILE_INTERVAL_S="1",
            )
            log_path = tmp_path / "worker.log"
            with log_path.open("wb") as log:
                worker = subprocess.Popen(
                    [*RADBRIDGE, "worker", "--beat"], env=env, stdout=log, stderr=log
                )
            try:

                def extracted() -> bool:
                    row = store.get_message(stored)
                    return row is not None and row.state == "extracted"

                took = wait_for(extracted, 90, "reconcile from beat: " + log_path.read_text())
                print(f"\nstored message extracted by beat's reconcile after {took:.1f} s")
                assert (data / "celerybeat-schedule.dat").exists() or any(data.glob("celerybeat*"))
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(60)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
        finally:
            store.close()


def test_serve_takes_over_when_the_redis_it_shared_goes(tmp_path: Path) -> None:
    """serve on a data dir where `radbridge worker` already runs the embedded Redis uses that
    one (never two servers on one socket); when the worker exits and stops it, serve starts a
    redis-server of its own on the same socket and ingest keeps working."""
    env = serve_env(tmp_path, RULES)
    data = Path(env["RADBRIDGE_DATA_DIR"])
    worker = subprocess.Popen(
        [*RADBRIDGE, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(on_socket(data)) == 1, 60, "the worker's redis-server")
        shared = on_socket(data)[0].pid
        with running_serve(tmp_path, RULES, args=("--no-worker",)) as service:
            assert [p.pid for p in on_socket(data)] == [shared]
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            took = wait_for(
                lambda: [p.pid for p in on_socket(data)] not in ([], [shared]) and ready(service),
                30,
                "serve's own redis-server",
            )
            print(f"\nserve started its own redis-server {took:.1f} s after the shared one went")
            assert b"MSA|AA|TAKEOVER1" in send(service, message("TAKEOVER1"))
            wait_for(lambda: job_state(service, 1) == "accepted", 10, "stored")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_restart_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() -> None:
    """A child that keeps dying is restarted after 1, 2, 4 … s, at most 30 s apart; one that
    ran a minute before it died starts again after 1 s. A real child process (`true`), the
    clock passed in."""
    from app.supervisor import BACKOFF_MAX_S, HEALTHY_AFTER_S, Child

    child = Child("true", ["true"])
    child.start()
    delays = []
    for _ in range(7):
        assert child.process is not None
        child.process.wait()
        now = child.started_at + 0.1
        assert not child.check(now)  # the exit noticed: restart scheduled, not yet due
        assert child.restart_at is not None
        delays.append(child.restart_at - now)
        assert not child.check(child.restart_at - 0.01)
        assert child.check(child.restart_at)  # due: started again
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX_S, BACKOFF_MAX_S]
    assert child.restarts == 7
    assert child.process is not None
    child.process.wait()
    child.check(child.started_at + HEALTHY_AFTER_S)
    assert child.restart_at == child.started_at + HEALTHY_AFTER_S + 1.0
    child.stop()
