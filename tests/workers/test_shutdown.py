"""SIGTERM to a worker: no new task; the running one gets the grace period; cut off, it is requeued."""

from __future__ import annotations

import signal

from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import get_task, rq_worker, wait_until


def test_sigterm_lets_the_running_task_finish_and_takes_no_new_one(
    client: TestClient, settings: Settings, worker_class: str
) -> None:
    client.post("/api/tasks", json={"id": "running", "type": "data_processing", "duration_ms": 2000})
    worker = rq_worker(
        str(settings.redis_url),
        # One child: "waiting" can only start after "running" ends, which is after the SIGTERM.
        env={"RQFLOW_SHUTDOWN_GRACE_S": "20", "RQFLOW_HEARTBEAT_S": "1", "RQFLOW_CONCURRENCY": "1"},
        worker_class=worker_class,
    )
    try:
        wait_until(lambda: get_task(client, "running")["status"] == "RUNNING", timeout=30)
        client.post("/api/tasks", json={"id": "waiting", "type": "echo"})
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert get_task(client, "running")["status"] == "COMPLETED"
        assert get_task(client, "waiting")["status"] == "QUEUED"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_task_cut_off_at_the_end_of_the_grace_period_is_requeued(
    client: TestClient, settings: Settings, worker_class: str
) -> None:
    client.post("/api/tasks", json={"id": "long", "type": "data_processing", "duration_ms": 30_000})
    worker = rq_worker(
        str(settings.redis_url),
        env={"RQFLOW_SHUTDOWN_GRACE_S": "2", "RQFLOW_HEARTBEAT_S": "1"},
        worker_class=worker_class,
    )
    try:
        wait_until(lambda: get_task(client, "long")["status"] == "RUNNING", timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        task = get_task(client, "long")
        assert task["status"] == "QUEUED"
        assert task["attempts"] == 1 and task["error"] is None
        events = [e["event"] for e in client.get("/api/tasks/long/history").json()]
        assert events[-2:] == ["requeued", "queued"]
        assert client.get("/api/stats").json()["queues"]["default"] == 1
    finally:
        if worker.poll() is None:
            worker.kill()
