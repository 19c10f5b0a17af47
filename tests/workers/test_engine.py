"""What only the engine worker has: several tasks at once on one worker, shown as such."""

from __future__ import annotations

import subprocess

from redis import Redis
from rq.registry import StartedJobRegistry
from starlette.testclient import TestClient

from app.jobs.engine import Engine
from app.settings import Settings
from tests.support import BIN, engine_worker, wait_for_status, wait_until
from workers.engine import EngineWorker

RQ = str(BIN / "rq")


def test_every_task_an_engine_worker_runs_is_shown_on_it_until_it_ends(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    ids = ["slow-1", "slow-2", "slow-3"]
    for task_id in ids:
        client.post("/api/tasks", json={"id": task_id, "type": "data_processing", "duration_ms": 2500})
    with engine_worker(
        str(settings.redis_url), "--name", "many", env={"RQFLOW_CONCURRENCY": "3", "RQFLOW_HEARTBEAT_S": "1"}
    ):

        def shown() -> list[str]:
            listed = [w for w in client.get("/api/workers").json() if w["name"] == "many"]
            return listed[0]["current_tasks"] if listed else []

        wait_until(lambda: shown() == ids, timeout=30, interval=0.1, what="all three tasks on the worker")
        listed = next(w for w in client.get("/api/workers").json() if w["name"] == "many")
        assert listed["state"] == "busy" and listed["current_task"] == "slow-1"
        # What rq-dashboard and `rq info` read: RQ's started registry, and RQ's worker record.
        assert sorted(StartedJobRegistry("default", connection=redis).get_job_ids(cleanup=False)) == ids
        info = subprocess.run(
            [RQ, "info", "--url", str(settings.redis_url), "--only-workers"], capture_output=True, text=True, timeout=30
        ).stdout
        assert "many" in info and "busy" in info
        for task_id in ids:
            wait_for_status(client, task_id, "COMPLETED", timeout=30)
        # Ended in the same step that removed them from the worker: never shown as running after.
        assert shown() == []


def test_an_engine_worker_counts_what_it_ran_as_rq_does(client: TestClient, redis: Redis, settings: Settings) -> None:
    for n in range(5):
        client.post("/api/tasks", json={"id": f"counted-{n}", "type": "echo"})
    worker = EngineWorker(["default"], connection=redis, settings=settings.model_copy(update={"concurrency": 2}))
    assert worker.work(burst=True)
    counts = redis.hmget(worker.key, "successful_job_count", "total_working_time")
    assert int(counts[0]) == 5 and float(counts[1]) > 0


def test_a_worker_that_dies_while_waiting_for_work_takes_no_task_with_it(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    """An idle engine worker waits on the queues' doorbell, not on the queues: woken and killed
    before it claims, it leaves the task where it was, for the next worker to start at once
    (waiting with BLPOP took the task out of Redis first, and it sat lost for 30 s and more)."""
    doomed = Engine(redis, ["high", "default", "low"], "doomed", lease_s=7, result_ttl_s=60)
    client.post("/api/tasks", json={"id": "survivor", "type": "echo"})
    assert doomed.wait(timeout_s=1.0)  # woken by the submission ... and never heard from again
    assert client.get("/api/tasks/survivor").json()["status"] == "QUEUED"
    with engine_worker(str(settings.redis_url)):
        wait_for_status(client, "survivor", "COMPLETED", timeout=20)
    assert client.get("/api/tasks/survivor").json()["attempts"] == 1


def test_a_retry_is_moved_even_with_no_rq_scheduler_running(client: TestClient, settings: Settings) -> None:
    """RQ's scheduler (which moves a retry whose backoff ended) runs in one worker at a time; one
    killed while holding its lock keeps the others out for a minute. Here no worker runs it at
    all: the engine moves the retry itself once it is OVERDUE_S late."""
    client.post(
        "/api/tasks",
        json={"id": "again", "type": "flaky", "payload": {"succeed_on": 2}, "backoff": {"initial_ms": 200}},
    )
    with engine_worker(str(settings.redis_url)):  # no --with-scheduler
        wait_for_status(client, "again", "COMPLETED", timeout=30)
    assert client.get("/api/tasks/again").json()["attempts"] == 2


def test_a_finished_task_is_one_compact_hash_with_its_history_and_result(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    client.post("/api/tasks", json={"id": "small", "type": "echo", "payload": {"n": 1}})
    EngineWorker(["default"], connection=redis, settings=settings).work(burst=True)
    task = client.get("/api/tasks/small").json()
    assert task["status"] == "COMPLETED" and task["result"]["payload"] == {"n": 1}
    events = [e["event"] for e in client.get("/api/tasks/small/history").json()]
    assert events == ["submitted", "started", "completed"]
    # No stream of its own for either (a stream costs 4.7 KB for one entry), and under the
    # shipped configuration the hash is Redis's compact encoding, not a hash table.
    assert sorted(k.decode() for k in redis.scan_iter(match="*small*")) == ["rq:job:small"]
    assert redis.object("encoding", "rq:job:small") in (b"ziplist", b"listpack")
