"""The event stream and the counts behind /metrics: written with the change they tell of."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis import Redis
from rq.utils import utcformat

from app import keys
from app.jobs import events
from app.jobs.tasks import TaskService
from app.model import Edge, TaskSpec
from app.settings import Settings
from tests.support import engine_worker, wait_until


def told(redis: Redis) -> list[events.Told]:
    return events.entries(redis.xrange(keys.EVENTS))


def counts(redis: Redis) -> dict[str, float]:
    """The counts behind /metrics."""
    return {k.decode(): float(v) for k, v in redis.hgetall(keys.METRICS).items()}


def story(redis: Redis, task_id: str) -> list[tuple[str, str]]:
    return [(t.data["event"], t.data["status"]) for t in told(redis) if t.data.get("task") == task_id]


LIVES = {
    "parent": [("submitted", "QUEUED"), ("started", "RUNNING"), ("completed", "COMPLETED")],
    "child": [("submitted", "PENDING"), ("queued", "QUEUED"), ("started", "RUNNING"), ("completed", "COMPLETED")],
    "flaky": [
        ("submitted", "QUEUED"),
        ("started", "RUNNING"),
        ("retrying", "RUNNING"),
        ("queued", "QUEUED"),
        ("started", "RUNNING"),
        ("completed", "COMPLETED"),
    ],
}


def submit_three(service: TaskService) -> None:
    service.submit(TaskSpec(type="echo", id="parent"))
    service.submit(TaskSpec(type="echo", id="child", dependencies=(Edge("parent"),)))
    service.submit(TaskSpec(type="flaky", id="flaky", payload={"succeed_on": 2}, backoff=None))


@pytest.fixture(params=["rq", "engine"])
def run_queued(request: pytest.FixtureRequest, work: Any, engine_work: Any) -> Any:
    """Every queued task run in this process, by RQ's loop or by the engine's."""
    return work if request.param == "rq" else engine_work


def test_every_change_of_a_task_is_told_in_order_with_the_status_it_left(
    service: TaskService, redis: Redis, run_queued: Any
) -> None:
    submit_three(service)
    assert run_queued()
    for task_id, life in LIVES.items():
        assert story(redis, task_id) == life, task_id
    everything = told(redis)
    by_task = [t.data for t in everything if t.data.get("task") == "flaky"]
    assert {d["type"] for d in by_task} == {"flaky"}
    assert by_task[2]["error"] == {"type": "ValueError", "message": "attempt 1 fails"} and by_task[2]["attempt"] == 1
    assert [t.data["event"] for t in everything if "task" not in t.data] == ["worker_started", "worker_stopped"]


def test_the_counts_add_up_whichever_worker_ran_the_tasks(service: TaskService, redis: Redis, run_queued: Any) -> None:
    submit_three(service)
    service.submit(TaskSpec(type="flaky", id="hopeless", max_attempts=2, backoff=None))
    assert run_queued()
    counted = counts(redis)
    assert counted["submitted|echo"] == 2 and counted["submitted|flaky"] == 2
    assert counted["finished|echo|COMPLETED"] == 2
    assert counted["finished|flaky|COMPLETED"] == 1 and counted["finished|flaky|FAILED"] == 1
    assert counted["retries|flaky"] == 2  # one each: flaky's first attempt, hopeless's first
    waits = sum(v for k, v in counted.items() if k.startswith("wait|echo|"))
    runs = sum(v for k, v in counted.items() if k.startswith("run|flaky|"))
    assert waits == 2 and runs == 2  # every start waited; flaky's and hopeless's last attempts ran


def test_a_batch_is_told_in_entries_of_at_most_a_hundred_events(service: TaskService, redis: Redis) -> None:
    specs = [TaskSpec(type="echo", id=f"b{n}") for n in range(250)]
    service.submit_batch(specs)
    entries = redis.xrange(keys.EVENTS)
    assert [len(events.entries([e])) for e in entries] == [100, 100, 50]
    assert [t.data["task"] for t in told(redis)] == [f"b{n}" for n in range(250)]
    assert redis.hget(keys.METRICS, "submitted|echo") == b"250"


def test_a_dry_run_and_a_repeat_tell_of_nothing(service: TaskService, redis: Redis) -> None:
    service.submit_batch([TaskSpec(type="echo", id="once")], dry_run=True)
    assert told(redis) == []
    service.submit(TaskSpec(type="echo", id="once"))
    service.submit(TaskSpec(type="echo", id="once"))
    assert story(redis, "once") == [("submitted", "QUEUED")]
    assert redis.hget(keys.METRICS, "submitted|echo") == b"1"


def test_a_task_doomed_at_submission_is_told_canceled_and_counted_as_ended(service: TaskService, redis: Redis) -> None:
    service.submit(TaskSpec(type="echo", id="broken"))
    redis.hset("rq:job:broken", "status", "failed")
    service.submit(TaskSpec(type="echo", id="doomed", dependencies=(Edge("broken"),)))
    assert story(redis, "doomed") == [("submitted", "CANCELED")]
    assert redis.hget(keys.METRICS, "finished|echo|CANCELED") == b"1"


def test_a_deleted_task_is_told_of(service: TaskService, redis: Redis, work: Any) -> None:
    service.submit(TaskSpec(type="echo", id="gone"))
    work()
    service.delete("gone")
    assert story(redis, "gone")[-1] == ("deleted", "COMPLETED")


def test_lua_reads_rq_times_as_python_does(redis: Redis) -> None:
    script = events.TELL + "return tostring(string.format('%.6f', rq_epoch(ARGV[1])))"
    rng = random.Random(5)
    start = datetime(1971, 1, 1, tzinfo=timezone.utc)
    for _ in range(200):
        at = start + timedelta(microseconds=rng.randrange(80 * 365 * 86400 * 10**6))
        assert float(redis.eval(script, 0, utcformat(at))) == pytest.approx(at.timestamp(), abs=1e-6), at


def test_an_event_id_reads_back_and_nothing_else_passes_for_one() -> None:
    assert events.parse_id(events.event_id("1700000000000-3", 7)) == ("1700000000000-3", 7)
    for bad in ("", "1700000000000-3", "x-1/2", "1-2/", "1-2/-1", "1/2"):
        assert events.parse_id(bad) is None, bad


def test_a_timed_task_released_late_is_counted_in_the_schedulers_lag(service: TaskService, redis: Redis) -> None:
    service.submit(TaskSpec(type="echo", id="timed", delay_ms=20))
    due_ms = json.loads(redis.hget("rq:job:timed", "rqflow_spec") or b"{}")["due_ms"]
    wait_until(lambda: time.time() * 1000 >= due_ms + 100, timeout=5, what="the task to be 100 ms overdue")
    service.release("timed", due_ms)
    counted = counts(redis)
    assert sum(v for k, v in counted.items() if k.startswith("lag||")) == 1
    assert counted["lag_sum|"] >= 0.1
    assert story(redis, "timed") == [("submitted", "SCHEDULED"), ("queued", "QUEUED")]


def test_only_ascii_digits_make_an_event_id() -> None:
    for bad in ("1-0/\u00b2", "\u0661-0/0", "1-0/0 ", "99999999999999999999999-0/0"):
        assert events.parse_id(bad) is None, bad


def test_a_running_task_canceled_counts_once_as_canceled(
    service: TaskService, redis: Redis, settings: Settings
) -> None:
    service.submit(TaskSpec(type="data_processing", id="long", duration_ms=30_000))
    with engine_worker(str(settings.redis_url)):
        wait_until(lambda: redis.hget("rq:job:long", "status") == b"started", timeout=30, what="the task to run")
        service.cancel("long")
        wait_until(lambda: redis.hget("rq:job:long", "status") == b"canceled", timeout=30, what="it to be canceled")
    counted = counts(redis)
    assert counted.get("finished|data_processing|CANCELED") == 1
    assert "finished|data_processing|FAILED" not in counted  # stopped on the way: not an end of its own
    assert [e for e, _ in story(redis, "long")][-2:] == ["stopped", "canceled"]
