"""A child is released in the same transaction as its last parent's end, whatever the interleaving."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis
from rq.job import JobStatus
from starlette.testclient import TestClient

from app import history, keys
from app.graph import Verdict
from app.jobs import dependencies, tasks
from app.jobs.job import TaskJob
from app.jobs.tasks import TaskService
from tests.support import post_task as post
from tests.support import wait_until


def start(redis: Redis, *ids: str) -> list[TaskJob]:
    """Take tasks off their queue and mark them running, as a worker would."""
    for task_id in ids:
        redis.lrem("rq:queue:default", 0, task_id)
        redis.hset(f"rq:job:{task_id}", "status", JobStatus.STARTED.value)
    return [TaskJob.fetch(task_id, connection=redis) for task_id in ids]


def end_transaction(redis: Redis, job: TaskJob, status: JobStatus) -> Any:
    """The transaction a worker commits when a task ends, prepared but not sent: RQ WATCHes the
    task's dependents, then writes its status in MULTI (`handle_job_success` / `handle_job_failure`)."""
    pipe = redis.pipeline()
    pipe.watch(job.dependents_key)
    pipe.multi()
    job.set_status(status, pipeline=pipe)
    return pipe


def queued_once(redis: Redis, task_id: str) -> bool:
    in_queue = redis.lrange("rq:queue:default", 0, -1).count(task_id.encode())
    kept = redis.hget(f"rq:job:{task_id}", keys.FIELD_HISTORY)
    events = [e for e in history.decode(kept) if e.event == "queued"]
    return redis.hget(f"rq:job:{task_id}", "status") == b"queued" and in_queue == 1 and len(events) == 1


@pytest.mark.parametrize("second", ["A", "B"])
@pytest.mark.parametrize("b_ends", [JobStatus.FINISHED, JobStatus.FAILED])
def test_two_parents_ending_in_the_same_instant_queue_their_child_once(
    client: TestClient, redis: Redis, second: str, b_ends: JobStatus
) -> None:
    for task_id in ("A", "B"):
        post(client, {"id": task_id, "type": "echo"})
    post(client, {"id": "C", "type": "echo", "dependencies": ["A", {"id": "B", "allow_failure": True}]})
    a, b = start(redis, "A", "B")
    # Both ends are prepared before either commits: neither saw the other end, the classic race.
    ends = {"A": end_transaction(redis, a, JobStatus.FINISHED), "B": end_transaction(redis, b, b_ends)}
    first = "B" if second == "A" else "A"
    ends[first].execute()
    assert redis.hget("rq:job:C", "status") == b"deferred"  # one parent still runs
    ends[second].execute()
    assert queued_once(redis, "C")
    assert client.get("/api/tasks/C").json()["status"] == "QUEUED"


def test_a_parent_ending_failed_releases_nothing_through_an_edge_that_needs_it(
    client: TestClient, redis: Redis
) -> None:
    for task_id in ("A", "B"):
        post(client, {"id": task_id, "type": "echo"})
    post(client, {"id": "C", "type": "echo", "dependencies": ["A", "B"]})
    a, b = start(redis, "A", "B")
    end_transaction(redis, a, JobStatus.FINISHED).execute()
    end_transaction(redis, b, JobStatus.FAILED).execute()
    assert redis.hget("rq:job:C", "status") == b"deferred"  # the worker's cascade cancels it next
    assert redis.llen("rq:queue:default") == 0


def test_a_timed_child_whose_parent_ends_while_its_timer_fires_is_queued(
    client: TestClient, redis: Redis, service: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    post(client, {"id": "A", "type": "echo"})
    post(client, {"id": "C", "type": "echo", "dependencies": ["A"], "delay_ms": 50})
    (a,) = start(redis, "A")
    due_ms = TaskJob.fetch("C", connection=redis).spec["due_ms"]
    wait_until(lambda: time.time() * 1000 > due_ms, timeout=5, what="C's start time")

    real_judge_now: Callable[..., Verdict] = dependencies.judge_now

    def parent_ends_right_after_being_read(*args: Any) -> Verdict:
        verdict = real_judge_now(*args)  # A is still running: the timer will leave C pending...
        end_transaction(redis, a, JobStatus.FINISHED).execute()  # ...and A ends before it commits
        return verdict

    monkeypatch.setattr(tasks, "judge_now", parent_ends_right_after_being_read)
    service.release("C", due_ms)
    assert queued_once(redis, "C")


def test_a_task_retried_while_its_parent_ends_is_queued(
    client: TestClient, redis: Redis, service: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    post(client, {"id": "A", "type": "echo"})
    post(client, {"id": "C", "type": "echo", "dependencies": ["A"]})
    (a,) = start(redis, "A")
    client.post("/api/tasks/C/cancel")
    real_judge_now: Callable[..., Verdict] = dependencies.judge_now

    def parent_ends_right_after_being_read(*args: Any) -> Verdict:
        verdict = real_judge_now(*args)
        end_transaction(redis, a, JobStatus.FINISHED).execute()
        return verdict

    monkeypatch.setattr(tasks, "judge_now", parent_ends_right_after_being_read)
    assert client.post("/api/tasks/C/retry").status_code == 200
    assert redis.hget("rq:job:C", "status") == b"queued"
    assert redis.lrange("rq:queue:default", 0, -1).count(b"C") == 1
