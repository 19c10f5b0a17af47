"""Canceling a running task stops it on its (forking) worker within a second or two, and cascades."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import wait_for_status, worker_process


@contextmanager
def long_task_running(client: TestClient, settings: Settings, worker_class: str) -> Iterator[None]:
    """`long` (20 s) running on a worker of `worker_class`, and `after` waiting on it."""
    client.post("/api/tasks", json={"id": "long", "type": "data_processing", "duration_ms": 20_000})
    client.post("/api/tasks", json={"id": "after", "type": "echo", "dependencies": ["long"]})
    with worker_process(str(settings.redis_url), worker_class=worker_class):
        wait_for_status(client, "long", "RUNNING", timeout=20, what="start")
        yield


def test_cancel_stops_a_running_20s_task_in_under_2s_and_cascades(
    client: TestClient, settings: Settings, worker_class: str
) -> None:
    with long_task_running(client, settings, worker_class):
        asked = time.monotonic()
        response = client.post("/api/tasks/long/cancel")
        assert response.status_code == 202
        wait_for_status(
            client,
            "long",
            "CANCELED",
            timeout=2,
            interval=0.02,
            what="the running task to be canceled",
        )
        took = time.monotonic() - asked
        long = client.get("/api/tasks/long").json()
        assert long["error"] == {"type": "canceled", "message": "canceled on request while running"}
        after = client.get("/api/tasks/after").json()
        assert after["status"] == "CANCELED" and after["error"]["type"] == "dependency_failed"
        events = [e["event"] for e in client.get("/api/tasks/long/history").json()]
        assert events[-3:] == ["cancel_requested", "stopped", "canceled"]
        assert took < 2
        # The worker is free again: it runs the next task.
        client.post("/api/tasks", json={"id": "next", "type": "echo"})
        wait_for_status(client, "next", "COMPLETED", timeout=20)


def test_deleting_a_running_task_from_the_console_stops_it_first(
    client: TestClient, settings: Settings, worker_class: str
) -> None:
    with long_task_running(client, settings, worker_class):
        answer = client.post("/console/tasks/long/delete", follow_redirects=False)
        assert answer.status_code == 303
        # As the API's DELETE: the record went only once the task had stopped, and the stop
        # reached its dependent; then the worker is free for the next task.
        assert client.get("/api/tasks/long").status_code == 404
        wait_for_status(client, "after", "CANCELED", timeout=5, what="the dependent to be canceled")
        client.post("/api/tasks", json={"id": "next", "type": "echo"})
        wait_for_status(client, "next", "COMPLETED", timeout=20)
