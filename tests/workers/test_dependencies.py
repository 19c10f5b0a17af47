"""Dependencies that never hang: per-edge failure rules, cascades down the graph, the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import api_time, rq_worker, wait_until
from tests.support import get_task as get
from tests.support import post_task as post
from workers.worker import TaskSimpleWorker


def failing(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1, **extra}


def test_a_failed_parent_cancels_the_whole_chain_below_it(client: TestClient, work: Any) -> None:
    post(client, failing("A"))
    post(client, {"id": "B", "type": "echo", "dependencies": ["A"]})
    post(client, {"id": "C", "type": "echo", "dependencies": ["B"]})
    work()
    a, b, c = get(client, "A"), get(client, "B"), get(client, "C")
    assert a["status"] == "FAILED"
    assert (b["status"], c["status"]) == ("CANCELED", "CANCELED")
    assert b["error"] == {"type": "dependency_failed", "message": "dependency 'A' ended FAILED"}
    assert c["error"] == {"type": "dependency_failed", "message": "dependency 'B' ended CANCELED"}
    assert b["attempts"] == c["attempts"] == 0
    assert client.get("/api/tasks?status=PENDING").json() == []


def test_a_diamond_join_starts_only_after_both_branches(client: TestClient, work: Any, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    mark = {"type": "mark", "payload": {"path": str(log), "seconds": 0.05}}
    post(client, {"id": "top", **mark})
    post(client, {"id": "left", **mark, "dependencies": ["top"]})
    post(client, {"id": "right", **mark, "dependencies": ["top"], "priority": "low"})
    post(client, {"id": "join", **mark, "dependencies": ["left", "right"]})
    work()
    runs = {line.split()[0]: (float(line.split()[1]), float(line.split()[2])) for line in log.read_text().splitlines()}
    assert runs["join"][0] >= max(runs["left"][1], runs["right"][1])
    assert runs["left"][0] >= runs["top"][1] and runs["right"][0] >= runs["top"][1]
    assert get(client, "join")["status"] == "COMPLETED"


def test_a_failed_branch_cancels_the_join_but_not_the_other_branch(client: TestClient, work: Any) -> None:
    post(client, {"id": "top", "type": "echo"})
    post(client, failing("left", dependencies=["top"]))
    post(client, {"id": "right", "type": "echo", "dependencies": ["top"]})
    post(client, {"id": "join", "type": "echo", "dependencies": ["left", "right"]})
    work()
    statuses = {t: get(client, t)["status"] for t in ("top", "left", "right", "join")}
    assert statuses == {"top": "COMPLETED", "left": "FAILED", "right": "COMPLETED", "join": "CANCELED"}


def test_allow_failure_runs_the_child_whether_the_parent_completes_or_fails(client: TestClient, work: Any) -> None:
    post(client, failing("bad"))
    post(client, {"id": "good", "type": "echo"})
    post(
        client,
        {
            "id": "cleanup",
            "type": "echo",
            "dependencies": [{"id": "bad", "allow_failure": True}, {"id": "good", "allow_failure": True}],
        },
    )
    work()
    assert get(client, "cleanup")["status"] == "COMPLETED"
    assert get(client, "cleanup")["dependencies"] == [
        {"id": "bad", "allow_failure": True},
        {"id": "good", "allow_failure": True},
    ]


def test_allow_failure_is_per_edge(client: TestClient, work: Any) -> None:
    post(client, failing("tolerated"))
    post(client, {"id": "needed", "type": "echo"})
    post(
        client, {"id": "child", "type": "echo", "dependencies": [{"id": "tolerated", "allow_failure": True}, "needed"]}
    )
    post(client, {"id": "needed2", "type": "echo", "dependencies": ["tolerated"]})  # fails with its parent...
    post(
        client,
        {"id": "child2", "type": "echo", "dependencies": [{"id": "tolerated", "allow_failure": True}, "needed2"]},
    )  # ...and so does this
    work()
    assert get(client, "child")["status"] == "COMPLETED"
    assert get(client, "needed2")["status"] == "CANCELED"
    assert get(client, "child2")["status"] == "CANCELED"


def test_a_task_whose_dependency_already_failed_is_canceled_at_once(client: TestClient, work: Any) -> None:
    post(client, failing("gone"))
    work()
    late = post(client, {"id": "late", "type": "echo", "dependencies": ["gone"]})
    assert late["status"] == "CANCELED"
    assert late["error"] == {"type": "dependency_failed", "message": "dependency 'gone' ended FAILED"}
    tolerant = post(client, {"id": "tolerant", "type": "echo", "dependencies": [{"id": "gone", "allow_failure": True}]})
    assert tolerant["status"] == "QUEUED"
    post(client, {"id": "later", "type": "echo", "dependencies": ["late"]})
    assert get(client, "later")["status"] == "CANCELED"


def test_waiting_for_names_the_unfinished_dependencies(
    client: TestClient, redis: Redis, settings: Settings, worker_type: Any
) -> None:
    post(client, {"id": "p1", "type": "echo"})
    post(client, {"id": "p2", "type": "echo", "priority": "low"})
    post(client, {"id": "kid", "type": "echo", "dependencies": ["p1", "p2"]})
    assert get(client, "kid")["waiting_for"] == {"dependencies": ["p1", "p2"]}
    assert get(client, "p2")["waiting_for"] == {"worker": {"queue": "low", "queued": 1}}
    worker_type(["default"], connection=redis, settings=settings).work(burst=True)
    assert get(client, "kid")["waiting_for"] == {"dependencies": ["p2"]}
    post(client, {"id": "t", "type": "echo", "run_at": "2999-01-01T00:00:00Z"})
    assert get(client, "t")["waiting_for"] == {"time": "2999-01-01T00:00:00.000Z"}


def test_the_sweep_settles_what_a_crash_left_pending(
    client: TestClient, redis: Redis, settings: Settings, work: Any, caplog: pytest.LogCaptureFixture
) -> None:
    post(client, {"id": "parent", "type": "echo"})
    post(client, {"id": "child", "type": "echo", "dependencies": ["parent"]})
    post(client, {"id": "other", "type": "echo"})
    post(client, {"id": "orphan", "type": "echo", "dependencies": ["other"]})
    # As if the workers had died right after committing each parent's outcome.
    redis.hset("rq:job:parent", "status", "failed")
    redis.hset("rq:job:other", "status", "finished")
    redis.lrem("rq:queue:default", 0, "parent")
    redis.lrem("rq:queue:default", 0, "other")
    assert get(client, "child")["status"] == get(client, "orphan")["status"] == "PENDING"
    TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings).clean_registries()
    assert get(client, "child")["status"] == "CANCELED"
    assert get(client, "orphan")["status"] == "QUEUED"
    assert client.get("/api/stats").json()["repairs"] == {"pending_canceled": 1, "pending_enqueued": 1}
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("repairs: {'pending_canceled': 1, 'pending_enqueued': 1" in m for m in logged), logged
    work()
    assert get(client, "orphan")["status"] == "COMPLETED"


def test_a_parent_failed_by_the_cleanup_of_a_dead_worker_cancels_its_children(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    post(client, {"id": "lost", "type": "echo"})
    post(client, {"id": "waiting", "type": "echo", "dependencies": ["lost"]})
    # A worker took "lost" and died: it is STARTED, its execution expired long ago, no worker runs it.
    redis.lrem("rq:queue:default", 0, "lost")
    redis.hset("rq:job:lost", "status", "started")
    redis.zadd("rq:wip:default", {"lost:dead-execution": 1})
    TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings).clean_registries()
    assert get(client, "lost")["status"] == "FAILED"
    waiting = get(client, "waiting")
    assert waiting["status"] == "CANCELED"
    assert waiting["error"]["type"] == "dependency_failed"


def test_with_many_workers_no_child_waits_for_a_maintenance_pass(
    client: TestClient, redis: Redis, settings: Settings, worker_class: str
) -> None:
    """Wide layers of short tasks on eight forking workers: parents end together all the time.
    Each child must be queued the moment its last parent ends (its own timestamps say when); one
    that waited for a maintenance pass (every 30 s here) would show a gap of seconds."""
    env = {"RQFLOW_MAINTENANCE_S": "30"}
    workers = [rq_worker(str(settings.redis_url), env=env, worker_class=worker_class) for _ in range(8)]
    try:
        wait_until(lambda: redis.scard("rq:workers") == 8, timeout=30, what="eight workers")
        width, layers = 16, 4
        parents = {
            f"L{n}-{i}": [f"L{n - 1}-{i}", f"L{n - 1}-{(i + 1) % width}"] if n else []
            for n in range(layers)
            for i in range(width)
        }
        batch = [
            {"id": task_id, "type": "data_processing", "duration_ms": 10, "dependencies": ups}
            for task_id, ups in parents.items()
        ]
        assert client.post("/api/tasks/batch", json={"tasks": batch}).status_code == 201
        wait_until(
            lambda: client.get("/api/stats").json()["tasks"]["COMPLETED"] == len(batch),
            timeout=90,
            interval=0.1,
            what="the whole DAG",
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    tasks = {t["id"]: t for t in client.get("/api/tasks", params={"limit": 1000}).json()}
    release_gaps, start_gaps = [], []
    for task_id, ups in parents.items():
        if ups:
            last_end = max(api_time(tasks[p]["finished_at"]) for p in ups)
            release_gaps.append((api_time(tasks[task_id]["queued_at"]) - last_end).total_seconds())
            start_gaps.append((api_time(tasks[task_id]["started_at"]) - last_end).total_seconds())
    assert max(release_gaps) < 1, sorted(release_gaps)[-5:]
    assert max(start_gaps) < 5, sorted(start_gaps)[-5:]
    assert client.get("/api/stats").json()["repairs"] == {}


def test_a_parent_failed_by_the_cleanup_of_a_dead_worker_releases_allowed_children_once_and_on_time(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    post(client, {"id": "lost", "type": "echo"})
    post(client, {"id": "tolerant", "type": "echo", "dependencies": [{"id": "lost", "allow_failure": True}]})
    post(
        client,
        {"id": "later", "type": "echo", "dependencies": [{"id": "lost", "allow_failure": True}], "delay_ms": 600_000},
    )
    redis.lrem("rq:queue:default", 0, "lost")
    redis.hset("rq:job:lost", "status", "started")
    redis.zadd("rq:wip:default", {"lost:dead-execution": 1})
    TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings).clean_registries()
    assert get(client, "lost")["status"] == "FAILED"
    assert get(client, "tolerant")["status"] == "QUEUED"
    assert redis.lrange("rq:queue:default", 0, -1).count(b"tolerant") == 1
    assert get(client, "later")["status"] == "SCHEDULED"  # its time has not come


def test_a_parent_that_retries_has_not_ended(client: TestClient, work: Any) -> None:
    post(client, {"id": "A", "type": "flaky", "payload": {"succeed_on": 2}})
    post(client, {"id": "C", "type": "echo", "dependencies": ["A"]})
    work()
    a, c = client.get("/api/tasks/A").json(), client.get("/api/tasks/C").json()
    assert (a["status"], a["attempts"], c["status"]) == ("COMPLETED", 2, "COMPLETED")
    assert c["queued_at"] >= a["finished_at"]


def test_every_key_of_a_finished_chain_expires(client: TestClient, redis: Redis, work: Any) -> None:
    """Nothing of a finished task stays forever: its job (with its history), results and dependency
    keys all expire with it (a key left without a TTL would grow Redis without bound)."""
    post(client, {"id": "ttl-parent", "type": "echo"})
    post(client, {"id": "ttl-child", "type": "echo", "dependencies": ["ttl-parent"]})
    post(client, {"id": "ttl-alone", "type": "echo"})
    work()
    for task_id in ("ttl-parent", "ttl-child", "ttl-alone"):
        assert get(client, task_id)["status"] == "COMPLETED"
        names = [name.decode() for name in redis.scan_iter(match=f"*{task_id}*")]
        assert f"rq:job:{task_id}" in names, names  # which holds its history (and the engine's result)
        assert [e["event"] for e in client.get(f"/api/tasks/{task_id}/history").json()][-2:] == ["started", "completed"]
        assert {name: redis.ttl(name) > 0 for name in names} == dict.fromkeys(names, True)
    assert any(name.endswith(":dependencies") for name in map(bytes.decode, redis.scan_iter(match="*ttl-child*")))
    assert any(name.endswith(":dependents") for name in map(bytes.decode, redis.scan_iter(match="*ttl-parent*")))
