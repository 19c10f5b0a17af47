"""Submission under contention: one id is created once, whoever sends it and however often."""

from __future__ import annotations

import threading

import pytest
from redis import Redis

from app import keys
from app.errors import SubmissionInProgress
from app.jobs.tasks import TaskService
from app.model import Edge, TaskSpec


def test_the_same_batch_sent_twice_at_once_is_created_exactly_once(service: TaskService, redis: Redis) -> None:
    specs = [TaskSpec(type="echo", id=f"t{n}", dependencies=(Edge(f"t{n - 1}"),) if n else ()) for n in range(2000)]
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        try:
            _, created = service.submit_batch(specs)
            outcomes.append("created" if created else "repeat")
        except SubmissionInProgress:
            outcomes.append("in progress")

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) in (["created", "in progress"], ["created", "repeat"])
    assert redis.zcard(keys.TASK_INDEX) == 2000
    assert redis.llen("rq:queue:default") == 1  # t0; the others wait on their parent
    assert redis.zcard(keys.CLAIMS) == 0
    _, created = service.submit_batch(specs)  # and once the first is written, a repeat is a repeat
    assert not created


def test_a_claim_cut_off_by_a_crash_holds_its_ids_only_until_it_lapses(service: TaskService, redis: Redis) -> None:
    redis.zadd(keys.CLAIMS, {"x": 2**50})  # an API process died after claiming "x"
    with pytest.raises(SubmissionInProgress):
        service.submit(TaskSpec(type="echo", id="x"))
    redis.zadd(keys.CLAIMS, {"x": 1})  # ... and its claim has lapsed
    task, created = service.submit(TaskSpec(type="echo", id="x"))
    assert created and task.status.value == "QUEUED"
