"""Retention: at most KEEP_FINISHED ended tasks of each status, oldest first, with everything of
them; list indexes rid of tasks that expired on their own; FAILED kept longer than COMPLETED."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from redis import Redis
from rq.utils import utcformat
from starlette.testclient import TestClient

from app import keys
from app.jobs import store
from app.jobs.retention import _REMOVE, Retention
from app.settings import Settings
from workers.engine import EngineWorker


def run_all(redis: Redis, settings: Settings) -> None:
    EngineWorker(["high", "default", "low"], connection=redis, settings=settings).work(burst=True)


def listed(client: TestClient, **params: str) -> list[str]:
    return [t["id"] for t in client.get("/api/tasks", params={"limit": "100", **params}).json()]


def test_the_script_names_index_entries_as_the_submission_does(redis: Redis) -> None:
    rng = random.Random(5)
    start = datetime(1999, 12, 31, tzinfo=timezone.utc)
    for _ in range(300):
        at = start + timedelta(microseconds=rng.randrange(0, 80 * 365 * 86400 * 10**6))
        ours = redis.eval(_REMOVE + "return member(ARGV[7], 'x')", 0, *[""] * 6, utcformat(at))
        assert ours.decode() == store.index_member(at, "x"), at


def test_only_the_newest_ended_tasks_of_each_status_are_kept_with_everything_of_them(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    # Ended in this order (a high-priority task first), each in a queue of its own priority.
    for n in range(6):
        client.post("/api/tasks", json={"id": f"done-{n}", "type": "echo", "priority": ["high", "low"][n % 2]})
        run_all(redis, settings)
    client.post("/api/tasks", json={"id": "child", "type": "echo", "dependencies": ["done-5"]})
    for n in range(2):
        bad = {"id": f"bad-{n}", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1}
        client.post("/api/tasks", json=bad)
    client.post("/api/tasks", json={"id": "waiting", "type": "echo", "delay_ms": 600_000})
    run_all(redis, settings)
    assert client.get("/api/tasks/bad-1").json()["status"] == "FAILED"

    retention = Retention(redis, keys.QUEUES, ["echo", "data_processing"], keep_finished=3)
    # In steps: a budget of 2 removes two at a time.
    assert retention.trim("COMPLETED", budget=2) == 2
    assert retention.run(budget_s=5).trimmed == 2  # the other two of the 7 completed

    kept = {"done-4", "done-5", "child"}  # the newest three, across queues
    assert set(listed(client, status="COMPLETED")) == kept
    assert set(listed(client, type="echo")) == kept | {"waiting"}  # a task not ended is untouched
    assert set(listed(client, status="FAILED")) == {"bad-0", "bad-1"}  # under the cap
    for gone in ("done-0", "done-1", "done-2", "done-3"):
        assert client.get(f"/api/tasks/{gone}").status_code == 404
        assert list(redis.scan_iter(match=f"*{gone}*")) == []
    # Nothing of them is left in any index either: the next page ends where the tasks do.
    assert redis.zcard(keys.TASK_INDEX) == len(kept) + 3
    assert redis.zcard("rq:finished:high") + redis.zcard("rq:finished:low") + redis.zcard("rq:finished:default") == 3


def test_a_registry_entry_of_a_task_that_moved_on_goes_and_the_task_stays(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    client.post("/api/tasks", json={"id": "again", "type": "echo"})
    run_all(redis, settings)
    redis.hset("rq:job:again", "status", "queued")  # brought back meanwhile, its entry not yet gone
    client.post("/api/tasks", json={"id": "newer", "type": "echo"})
    run_all(redis, settings)
    assert Retention(redis, keys.QUEUES, ["echo"], keep_finished=1).trim("COMPLETED") == 1
    assert redis.zrange("rq:finished:default", 0, -1) == [b"newer"]
    assert client.get("/api/tasks/again").json()["status"] == "QUEUED"
    assert client.get("/api/tasks/newer").json()["status"] == "COMPLETED"


def test_index_entries_of_tasks_that_expired_are_dropped_a_step_at_a_time(client: TestClient, redis: Redis) -> None:
    batch = [{"id": f"e{n:03d}", "type": "echo", "delay_ms": 600_000} for n in range(25)]
    client.post("/api/tasks/batch", json={"tasks": batch})
    for n in range(0, 25, 2):
        redis.delete(f"rq:job:e{n:03d}")  # expired (RQ's TTL), index entries left behind
    retention = Retention(redis, keys.QUEUES, ["echo"], keep_finished=10)
    steps = []
    while True:
        dropped, done = retention.prune(keys.TASK_INDEX, count=10)
        steps.append(dropped)
        if done:
            break
    assert len(steps) == 3 and sum(steps) == 13
    assert redis.zcard(keys.TASK_INDEX) == 12
    assert retention.run(budget_s=5).pruned == 13  # the type's index, in the same pass
    assert redis.zcard(keys.type_index("echo")) == 12


def test_failed_tasks_are_kept_longer_than_completed_ones(client: TestClient, redis: Redis, settings: Settings) -> None:
    assert settings.failed_ttl_s > settings.result_ttl_s
    client.post("/api/tasks", json={"id": "ok", "type": "echo"})
    client.post(
        "/api/tasks", json={"id": "bad", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1}
    )
    run_all(redis, settings)
    assert settings.result_ttl_s - 60 < redis.ttl("rq:job:ok") <= settings.result_ttl_s
    assert settings.failed_ttl_s - 60 < redis.ttl("rq:job:bad") <= settings.failed_ttl_s
