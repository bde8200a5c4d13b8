"""/readyz reflects the age of the last reconcile (issue 24 item 2): a beat that died leaves
reconcile undone and readiness says so. Against a real Redis (RADBRIDGE_TEST_REDIS_URL or an
embedded one) and a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.queue import RECONCILE_DONE_KEY, redis_client
from adapter.settings import Settings
from adapter.store import Store
from app.serve import reconcile_probe


def test_readyz_is_not_ready_when_reconcile_is_overdue(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, reconcile_interval_s=1)  # type: ignore[call-arg]
    client = redis_client(redis_url)
    fresh = reconcile_probe(settings, redis_url)
    store = Store.open(settings)
    try:
        api = TestClient(create_app(settings, store, reconcile_ready=fresh))
        assert fresh()  # no record yet (a fresh or flushed Redis): the age counts from now
        client.set(RECONCILE_DONE_KEY, f"{time.time() - 10:.3f}")
        assert fresh()  # 10 s old, limit 3 intervals + 30 s
        client.set(RECONCILE_DONE_KEY, f"{time.time() - 40:.3f}")
        answer = api.get("/readyz")
        assert answer.status_code == 503 and answer.json()["reconcile"] is False
        client.set(RECONCILE_DONE_KEY, f"{time.time():.3f}")
        answer = api.get("/readyz")
        assert answer.status_code == 200 and answer.json()["reconcile"] is True
    finally:
        store.close()


def test_reconcile_records_when_it_finished(tmp_path: Path, redis_url: str) -> None:
    from workers.tasks import make_worker_app

    settings = Settings(data_dir=tmp_path, redis_url=redis_url)  # type: ignore[call-arg]
    redis_client(redis_url).delete(RECONCILE_DONE_KEY)
    app = make_worker_app(settings)
    before = time.time()
    app.tasks["radbridge.reconcile"].apply().get()
    stamp = redis_client(redis_url).get(RECONCILE_DONE_KEY)
    assert stamp is not None and float(stamp) >= before - 1
