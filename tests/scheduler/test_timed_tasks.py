"""One-off times (run_at, delay_ms) and changing a task that has not started (PUT /api/tasks/{id})."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from redis import Redis
from starlette.testclient import TestClient

from app.settings import Settings
from tests.app.api.test_tasks import assert_problem
from tests.support import api_time, wait_until
from tests.support import get_task as get
from tests.support import post_task as post
from workers.worker import TaskSimpleWorker


def at(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def epoch(stamp: str) -> float:
    return api_time(stamp).timestamp()


def test_run_at_holds_the_task_until_its_time(client: TestClient, fire_timers: Any, work: Any) -> None:
    task = post(client, {"id": "t", "type": "echo", "run_at": at(1.2)})
    assert task["status"] == "SCHEDULED"
    fire_timers()
    work()
    assert get(client, "t")["status"] == "SCHEDULED"  # not yet
    wait_until(lambda: fire_timers() or get(client, "t")["status"] == "QUEUED", timeout=10, interval=0.02)
    work()
    done = get(client, "t")
    assert done["status"] == "COMPLETED"
    assert epoch(done["queued_at"]) >= epoch(task["run_at"])


def test_a_time_in_the_past_means_now(client: TestClient) -> None:
    assert post(client, {"id": "past", "type": "echo", "run_at": "2001-01-01T00:00:00Z"})["status"] == "QUEUED"


def test_a_timed_task_still_waits_for_its_dependencies(
    client: TestClient, fire_timers: Any, redis: Redis, settings: Settings
) -> None:
    post(client, {"id": "parent", "type": "echo", "priority": "low"})
    post(client, {"id": "child", "type": "echo", "delay_ms": 300, "dependencies": ["parent"]})
    assert get(client, "child")["status"] == "SCHEDULED"
    wait_until(lambda: fire_timers() or get(client, "child")["status"] == "PENDING", timeout=10, interval=0.02)
    assert get(client, "child")["waiting_for"] == {"dependencies": ["parent"]}
    TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings).work(burst=True)
    assert get(client, "child")["status"] == "COMPLETED"


def test_a_timed_task_waits_for_its_time_even_when_its_parents_are_done(
    client: TestClient, fire_timers: Any, work: Any
) -> None:
    post(client, {"id": "parent", "type": "echo"})
    post(client, {"id": "child", "type": "echo", "delay_ms": 1500, "dependencies": ["parent"]})
    work()
    assert get(client, "parent")["status"] == "COMPLETED"
    assert get(client, "child")["status"] == "SCHEDULED"
    wait_until(lambda: fire_timers() or get(client, "child")["status"] == "QUEUED", timeout=10, interval=0.02)
    work()
    assert get(client, "child")["status"] == "COMPLETED"


def test_a_failed_parent_cancels_a_timed_child_at_once(client: TestClient, work: Any) -> None:
    post(client, {"id": "bad", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1})
    post(client, {"id": "later", "type": "echo", "delay_ms": 600_000, "dependencies": ["bad"]})
    work()
    later = get(client, "later")
    assert later["status"] == "CANCELED"
    assert later["error"]["type"] == "dependency_failed"


def test_put_moves_a_scheduled_task_and_the_new_time_takes_effect(client: TestClient, fire_timers: Any) -> None:
    old_time = post(client, {"id": "move", "type": "echo", "run_at": at(0.3)})["run_at"]
    moved = client.put("/api/tasks/move", json={"run_at": at(2.5)})
    assert moved.status_code == 200
    new_time = moved.json()["run_at"]
    wait_until(lambda: time.time() > epoch(old_time) + 0.05, timeout=5)  # rq-scheduler's clock is the wall's
    fire_timers()  # the old timer fires into nothing
    assert get(client, "move")["status"] == "SCHEDULED"
    wait_until(lambda: fire_timers() or get(client, "move")["status"] == "QUEUED", timeout=10, interval=0.02)
    assert epoch(get(client, "move")["queued_at"]) >= epoch(new_time)


def test_put_with_a_past_time_releases_at_once(client: TestClient) -> None:
    post(client, {"id": "soon", "type": "echo", "run_at": at(600)})
    assert client.put("/api/tasks/soon", json={"run_at": "2001-01-01T00:00:00Z"}).json()["status"] == "QUEUED"


def test_put_delays_a_queued_task(client: TestClient, redis: Redis) -> None:
    post(client, {"id": "q", "type": "echo"})
    changed = client.put("/api/tasks/q", json={"delay_ms": 600_000}).json()
    assert changed["status"] == "SCHEDULED"
    assert redis.llen("rq:queue:default") == 0


def test_put_changes_payload_priority_and_limits(client: TestClient, redis: Redis, work: Any) -> None:
    post(client, {"id": "c", "type": "echo", "payload": {"v": 1}})
    body = {"payload": {"v": 2}, "priority": "high", "max_attempts": 7, "timeout_ms": 9000, "name": "renamed"}
    changed = client.put("/api/tasks/c", json=body).json()
    assert (changed["payload"], changed["priority"], changed["max_attempts"]) == ({"v": 2}, "high", 7)
    assert (changed["timeout_ms"], changed["name"], changed["status"]) == (9000, "renamed", "QUEUED")
    assert redis.lrange("rq:queue:high", 0, -1) == [b"c"] and redis.llen("rq:queue:default") == 0
    work()
    assert get(client, "c")["result"]["payload"] == {"v": 2}


def test_put_changes_a_pending_task(client: TestClient, work: Any) -> None:
    post(client, {"id": "p", "type": "echo", "priority": "low"})
    post(client, {"id": "k", "type": "echo", "dependencies": ["p"], "payload": {"v": 1}})
    assert client.put("/api/tasks/k", json={"payload": {"v": 9}, "priority": "high"}).status_code == 200
    work()
    assert get(client, "k")["result"]["payload"] == {"v": 9}


def test_put_on_a_started_or_finished_task_is_409(client: TestClient, work: Any) -> None:
    post(client, {"id": "f", "type": "echo"})
    work()
    assert_problem(client.put("/api/tasks/f", json={"payload": {}}), 409)
    assert get(client, "f")["payload"] == {}


def test_put_bad_input(client: TestClient) -> None:
    post(client, {"id": "b", "type": "echo"})
    assert_problem(client.put("/api/tasks/ghost", json={"payload": {}}), 404)
    assert_problem(client.put("/api/tasks/b", json={"type": "data_processing"}), 422, "type")
    assert_problem(client.put("/api/tasks/b", json={"dependencies": []}), 422, "dependencies")
    assert_problem(client.put("/api/tasks/b", json={"run_at": "2030-01-01T00:00:00"}), 422, "run_at")
    assert_problem(client.put("/api/tasks/b", json={"run_at": at(5), "delay_ms": 5}), 422, "delay_ms")
    assert_problem(client.put("/api/tasks/b", json={"priority": "urgent"}), 422, "priority")
    assert_problem(client.put("/api/tasks/b", content=b"{"), 400)
    assert get(client, "b")["status"] == "QUEUED"
