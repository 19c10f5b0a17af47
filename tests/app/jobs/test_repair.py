"""The reconciler repairs what a crash can leave inconsistent, and counts it."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app import keys
from app.jobs import repair
from app.jobs.tasks import TaskService
from tests.support import wait_until


def test_a_queued_task_found_in_no_queue_is_queued_again(
    client: TestClient, redis: Redis, service: TaskService
) -> None:
    client.post("/api/tasks", json={"id": "lost", "type": "echo"})
    # As if a worker had popped it and died before starting it, a minute ago.
    redis.lrem("rq:queue:default", 0, "lost")
    redis.hset("rq:job:lost", "enqueued_at", "2001-01-01T00:00:00.000000Z")
    counts = repair.repair(service, ["high", "default", "low"])
    assert counts["queued_requeued"] == 1
    assert redis.lrange("rq:queue:default", 0, -1) == [b"lost"]
    assert client.get("/api/stats").json()["repairs"]["queued_requeued"] == 1
    assert "queued again" in client.get("/api/tasks/lost/history").json()[-1]["detail"]
    assert repair.repair(service, ["high", "default", "low"])["queued_requeued"] == 0  # once only


def test_a_task_waiting_in_a_long_queue_is_left_alone(client: TestClient, redis: Redis, service: TaskService) -> None:
    client.post("/api/tasks", json={"id": "patient", "type": "echo"})
    redis.hset("rq:job:patient", "enqueued_at", "2001-01-01T00:00:00.000000Z")
    assert repair.repair(service, ["default"])["queued_requeued"] == 0
    assert redis.llen("rq:queue:default") == 1


def test_a_held_task_whose_timer_was_lost_is_released(
    client: TestClient, redis: Redis, service: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/api/tasks", json={"id": "held", "type": "echo", "delay_ms": 100})
    redis.delete("rq:scheduler:scheduled_jobs")  # the timer is gone
    due_ms = redis.zscore(keys.HELD, "held")
    assert due_ms is not None
    wait_until(lambda: time.time() * 1000 > due_ms, timeout=5)
    monkeypatch.setattr(repair, "LOST_AFTER_S", 0)
    assert repair.repair(service, ["default"])["held_released"] == 1
    assert client.get("/api/tasks/held").json()["status"] == "QUEUED"
