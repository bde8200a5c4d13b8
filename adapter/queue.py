"""The Celery app and enqueueing extraction (tasks are sent by name: adapter never imports workers;
deliveries are queued through the table of destinations, `adapter.destinations`).

Redis is dispatch, not storage: the store is the truth and `reconcile` re-enqueues anything it
says is not done. Reliability settings: late acks, reject on worker loss, prefetch 1, a
visibility timeout above the longest task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from adapter.settings import Settings

EXTRACT_TASK = "radbridge.extract_report"
EXTRACT_BATCH_TASK = "radbridge.extract_batch"
DELIVER_TASK = "radbridge.deliver"
RECONCILE_TASK = "radbridge.reconcile"
DELIVER_ORU_TASK = "radbridge.deliver_oru"
WORKER_HEARTBEAT_KEY = "radbridge:worker-heartbeat:{pid}"
"""Set by each worker process (its pid) with a TTL, refreshed while it runs (serve's /readyz)."""
WORKER_HEARTBEAT_TTL_S = 10
RECONCILE_DONE_KEY = "radbridge:reconcile-done"
"""The Unix time the last reconcile finished (set by the task; serve's /readyz reads its age)."""
RECONCILE_STALE_INTERVALS = 3
"""/readyz is not ready when no reconcile finished for this many intervals (and 30 s more)."""


def redis_url(settings: Settings) -> str:
    """The broker URL: RADBRIDGE_REDIS_URL, else the embedded redis socket in the data dir."""
    if settings.redis_url:
        return settings.redis_url
    return f"redis+socket://{(settings.data_dir / 'redis.sock').resolve()}"


def redis_client(url: str) -> Any:
    """A redis-py client for a broker URL (`redis://`, `rediss://` or `redis+socket://`)."""
    import redis

    if url.startswith("redis+socket://"):
        return redis.Redis(
            unix_socket_path=url.removeprefix("redis+socket://").split("?")[0],
            socket_timeout=1,
            socket_connect_timeout=1,
        )
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for radbridge (build it in the composition root, not at import)."""
    app = Celery("radbridge", broker=redis_url(settings))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.reconcile_interval_s},
        },
    )
    app.conf.radbridge_settings = settings
    return app


INGEST_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5}
"""The ingest path's enqueue: one reconnect and retry (a Redis that restarted), then give up
(the message is stored; reconcile queues it)."""


def enqueue_extract(
    app: Celery, message_id: int, *, retry_policy: dict[str, float] | None = None
) -> Any:
    """Queue the extraction of a stored message (`retry_policy`: kombu's publish retries)."""
    if retry_policy is None:
        return app.send_task(EXTRACT_TASK, args=[message_id])
    return app.send_task(EXTRACT_TASK, args=[message_id], retry=True, retry_policy=retry_policy)


def enqueue_extract_batch(
    app: Celery, message_ids: Sequence[int], *, retry_policy: dict[str, float] | None = None
) -> Any:
    """Queue the extraction of stored messages as one task (`extract_batch`; one message: the
    `extract_report` task)."""
    if len(message_ids) == 1:
        return enqueue_extract(app, message_ids[0], retry_policy=retry_policy)
    options: dict[str, Any] = {"args": [list(message_ids)]}
    if retry_policy is not None:
        options.update(retry=True, retry_policy=retry_policy)
    return app.send_task(EXTRACT_BATCH_TASK, **options)


QUEUE = "celery"
"""The Redis list of the default queue (kombu adds one per priority step: `QUEUE\\x06\\x16N`)."""


def task_message_ids(payload: Any) -> list[int]:
    """The message ids of a task message as the broker holds it (kombu's JSON envelope: an
    `extract_report` task names one, an `extract_batch` task several; any other task, or
    what cannot be read, none)."""
    import base64
    import json

    try:
        if isinstance(payload, (bytes, str)):
            payload = json.loads(payload)
        task = payload["headers"]["task"]
        if task not in (EXTRACT_TASK, EXTRACT_BATCH_TASK):
            return []
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        first = json.loads(body)[0][0]
        return [int(m) for m in first] if task == EXTRACT_BATCH_TASK else [int(first)]
    except (ValueError, KeyError, IndexError, TypeError):
        return []


def queued_extractions(url: str) -> set[int] | None:
    """The message ids whose extraction task waits in the broker's queue now (reconcile does
    not queue those again: a backlog would be queued once more each interval). Tasks a worker
    has reserved (kombu's `unacked` hash) do not count: their worker may be dead, and Redis
    would give them back only after the visibility timeout. None when the broker cannot be
    read (reconcile then queues all)."""
    import redis

    client = redis_client(url)
    try:
        queues = [QUEUE, *(f"{QUEUE}\x06\x16{step}" for step in (1, 2, 3, 4, 5, 6, 7, 8, 9))]
        waiting = [item for name in queues for item in client.lrange(name, 0, -1)]
    except redis.RedisError:
        return None
    return {m for item in waiting for m in task_message_ids(item)}
