"""Per-type concurrency limits hold across worker processes; other types keep flowing; slots never leak."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings, TypeLimits
from tests.support import rq_worker, wait_until
from workers.worker import TaskSimpleWorker

LIMITS = {"mark": {"concurrency": 2}}


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(update={"type_limits": {k: TypeLimits(**v) for k, v in LIMITS.items()}})


@pytest.fixture
def limited_client(limited: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(limited)) as client:
        yield client


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("released_by", ["submission", "a parent's end"])
def test_a_limit_of_two_with_three_workers_runs_two_at_once_never_three(
    limited_client: TestClient, limited: Settings, tmp_path: Path, released_by: str, worker_class: str
) -> None:
    log = tmp_path / "runs.log"
    # Dependents released together by their parent's end go through the same limit.
    gate = {"dependencies": ["gate"]} if released_by == "a parent's end" else {}
    if gate:
        limited_client.post("/api/tasks", json={"id": "gate", "type": "echo"})
    for n in range(8):
        body = {"id": f"m{n}", "type": "mark", "payload": {"path": str(log), "seconds": 0.3}, **gate}
        limited_client.post("/api/tasks", json=body)
    for n in range(4):
        limited_client.post("/api/tasks", json={"id": f"e{n}", "type": "echo"})
    workers = [
        rq_worker(str(limited.redis_url), env={"RQFLOW_TYPE_LIMITS": json.dumps(LIMITS)}, worker_class=worker_class)
        for _ in range(3)
    ]
    try:

        def all_done() -> bool:
            tasks = limited_client.get("/api/tasks").json()
            return len(tasks) == 12 + len(gate) and all(t["status"] == "COMPLETED" for t in tasks)

        wait_until(all_done, timeout=60, interval=0.1, what="all tasks to complete")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    runs = [(float(line.split()[1]), float(line.split()[2])) for line in log.read_text().splitlines()]
    assert len(runs) == 8
    assert max_overlap(runs) == 2
    if gate:
        gate_end = limited_client.get("/api/tasks/gate").json()["finished_at"]
        assert all(limited_client.get(f"/api/tasks/m{n}").json()["started_at"] >= gate_end for n in range(8))
    # The echo tasks did not wait behind the saturated type.
    last_mark = max(limited_client.get(f"/api/tasks/m{n}").json()["finished_at"] for n in range(8))
    assert all(limited_client.get(f"/api/tasks/e{n}").json()["finished_at"] < last_mark for n in range(4))


def test_a_task_over_the_limit_says_it_waits_for_the_limit(limited_client: TestClient) -> None:
    for n in range(3):
        limited_client.post("/api/tasks", json={"id": f"m{n}", "type": "mark", "payload": {"path": "/dev/null"}})
    third = limited_client.get("/api/tasks/m2").json()
    assert third["status"] == "QUEUED"
    assert third["waiting_for"] == {"limit": {"key": "type:mark", "concurrency": 2, "holding_slots": 2, "waiting": 1}}
    assert limited_client.get("/api/tasks/m0").json()["waiting_for"] == {"worker": {"queue": "default", "queued": 2}}


def test_a_dead_worker_does_not_leak_its_slot(
    limited_client: TestClient, redis: Redis, limited: Settings, tmp_path: Path
) -> None:
    for n in range(3):
        limited_client.post(
            "/api/tasks", json={"id": f"m{n}", "type": "mark", "payload": {"path": str(tmp_path / "l")}}
        )
    # A worker took m0 and died: STARTED, holding its slot, its execution long expired.
    redis.lrem("rq:queue:default", 0, "m0")
    redis.hset("rq:job:m0", "status", "started")
    redis.zadd("rq:wip:default", {"m0:dead-execution": 1})
    assert limited_client.get("/api/tasks/m2").json()["waiting_for"]["limit"]["waiting"] == 1
    worker = TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=limited)
    worker.clean_registries()
    assert limited_client.get("/api/tasks/m0").json()["status"] == "FAILED"
    assert limited_client.get("/api/tasks/m2").json()["waiting_for"] == {"worker": {"queue": "default", "queued": 2}}
    worker.work(burst=True)
    statuses: dict[str, Any] = {t["id"]: t["status"] for t in limited_client.get("/api/tasks").json()}
    assert statuses == {"m0": "FAILED", "m1": "COMPLETED", "m2": "COMPLETED"}
