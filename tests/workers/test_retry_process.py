"""A retry that waits for its backoff is run again by the workers as the Procfile starts them
(`rq worker-pool` runs RQ's scheduler in its workers, which queues what is due)."""

from __future__ import annotations

from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import get_task, rq_worker, wait_for_status


def test_a_retry_after_its_backoff_runs_on_a_worker_process(
    client: TestClient, settings: Settings, worker_class: str
) -> None:
    body = {"id": "again", "type": "flaky", "payload": {"succeed_on": 2}, "backoff": {"initial_ms": 500}}
    assert client.post("/api/tasks", json=body).status_code == 201
    worker = rq_worker(str(settings.redis_url), "--with-scheduler", worker_class=worker_class)
    try:
        wait_for_status(client, "again", "COMPLETED", timeout=30, interval=0.1)
        task = get_task(client, "again")
        assert (task["attempts"], task["result"]) == (2, 2)
    finally:
        worker.terminate()
        worker.wait(30)
