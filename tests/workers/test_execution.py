"""Tasks run on RQ workers: results, attempts, retries with backoff, timeouts, dependencies."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from redis import Redis
from starlette.testclient import TestClient

from tests.support import api_time, wait_until
from tests.support import get_task as get
from tests.support import post_task as post


def test_a_task_completes_with_its_result(client: TestClient, work: Any) -> None:
    post(client, {"id": "e1", "type": "echo", "payload": {"x": [1, 2]}})
    work()
    task = get(client, "e1")
    assert task["status"] == "COMPLETED"
    assert task["result"] == {"payload": {"x": [1, 2]}, "task_id": "e1", "attempt": 1}
    assert task["attempts"] == 1
    assert task["error"] is None
    assert task["worker"]
    assert task["queued_at"] <= task["started_at"] <= task["finished_at"]


def test_data_processing_works_for_its_duration(client: TestClient, work: Any) -> None:
    post(client, {"id": "d1", "type": "data_processing", "duration_ms": 300})
    work()
    task = get(client, "d1")
    assert task["status"] == "COMPLETED"
    assert task["result"] == {"processed": True, "attempt": 1, "duration_ms": 300}


def test_retries_until_success_counting_attempts(client: TestClient, work: Any) -> None:
    post(client, {"id": "f1", "type": "flaky", "payload": {"succeed_on": 3}})
    work()
    task = get(client, "f1")
    assert (task["status"], task["attempts"], task["result"]) == ("COMPLETED", 3, 3)
    # The last failed attempt's error stays on record.
    assert task["error"] == {"type": "ValueError", "message": "attempt 2 fails"}


def test_fails_after_max_attempts_keeping_the_last_error(client: TestClient, work: Any) -> None:
    post(
        client,
        {
            "id": "f2",
            "type": "data_processing",
            "payload": {"fail": True},
            "max_attempts": 2,
            "backoff": {"initial_ms": 0},
        },
    )
    work()
    task = get(client, "f2")
    assert (task["status"], task["attempts"]) == ("FAILED", 2)
    assert task["error"] == {"type": "TaskFailed", "message": "failed on request (payload.fail)"}
    assert task["finished_at"] is not None


def test_max_attempts_one_means_no_retry(client: TestClient, work: Any) -> None:
    post(client, {"id": "f3", "type": "flaky", "payload": {"succeed_on": 2}, "max_attempts": 1})
    work()
    assert (get(client, "f3")["status"], get(client, "f3")["attempts"]) == ("FAILED", 1)


def test_waiting_for_a_retry_backoff_is_scheduled(
    client: TestClient, redis: Redis, settings: Any, worker_type: Any
) -> None:
    post(
        client,
        {"id": "b1", "type": "flaky", "payload": {"succeed_on": 2}, "backoff": {"initial_ms": 2000, "jitter": False}},
    )
    worker = worker_type(["default"], connection=redis, settings=settings)
    worker.work(burst=True, max_jobs=1)
    task = get(client, "b1")
    assert (task["status"], task["attempts"]) == ("SCHEDULED", 1)
    scheduled_at = redis.zscore("rq:scheduled:default", "b1")
    retrying = next(e for e in client.get("/api/tasks/b1/history").json() if e["event"] == "retrying")
    failed_at = datetime.fromisoformat(retrying["at"].replace("Z", "+00:00")).timestamp()
    # 2 s of backoff from the failure (RQ's registry rounds up to a whole second), not an instant retry.
    assert scheduled_at is not None and 2 <= scheduled_at - failed_at <= 3.01


def test_a_running_attempt_past_its_timeout_fails(client: TestClient, work: Any) -> None:
    post(client, {"id": "slow", "type": "sleepy", "payload": {"seconds": 5}})
    started = time.monotonic()
    work()
    assert time.monotonic() - started < 4
    task = get(client, "slow")
    assert task["status"] == "FAILED"
    assert task["error"]["type"] == "timeout"


def test_timeout_ms_in_the_request_overrides_the_type(client: TestClient, work: Any) -> None:
    post(client, {"id": "slow2", "type": "sleepy", "payload": {"seconds": 1.5}, "timeout_ms": 3000})
    work()
    assert get(client, "slow2")["status"] == "COMPLETED"


def test_dependent_stays_pending_until_its_parent_completes(client: TestClient, work: Any, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    post(client, {"id": "A", "type": "mark", "payload": {"path": str(log), "seconds": 0.2}})
    post(client, {"id": "B", "type": "mark", "payload": {"path": str(log)}, "dependencies": ["A"]})
    assert get(client, "B")["status"] == "PENDING"
    work()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [line[0] for line in lines] == ["A", "B"]
    a_end, b_start = float(lines[0][2]), float(lines[1][1])
    assert b_start >= a_end
    assert get(client, "B")["status"] == "COMPLETED"


def test_a_task_whose_parents_already_completed_is_queued_at_once(client: TestClient, work: Any) -> None:
    post(client, {"id": "P", "type": "echo"})
    work()
    assert post(client, {"id": "C", "type": "echo", "dependencies": ["P"]})["status"] == "QUEUED"


def test_many_parents_all_must_complete(client: TestClient, redis: Redis, settings: Any, worker_type: Any) -> None:
    post(client, {"id": "p1", "type": "echo"})
    post(client, {"id": "p2", "type": "echo", "priority": "low"})
    post(client, {"id": "join", "type": "echo", "dependencies": ["p1", "p2"]})
    worker = worker_type(["default"], connection=redis, settings=settings)
    worker.work(burst=True)
    assert get(client, "p1")["status"] == "COMPLETED"
    assert get(client, "join")["status"] == "PENDING"
    worker_type(["high", "default", "low"], connection=redis, settings=settings).work(burst=True)
    assert get(client, "join")["status"] == "COMPLETED"


def test_priorities_are_served_high_first(client: TestClient, work: Any, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    for n in range(3):
        post(client, {"id": f"low{n}", "type": "mark", "priority": "low", "payload": {"path": str(log)}})
    post(client, {"id": "urgent", "type": "mark", "priority": "high", "payload": {"path": str(log)}})
    work()
    # Started no later than any low one (a worker running several at once starts a batch together).
    started = {t: get(client, t)["started_at"] for t in ("urgent", "low0", "low1", "low2")}
    assert started["urgent"] <= min(started[f"low{n}"] for n in range(3)), started
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["low0", "low1", "low2", "urgent"]


def test_delay_runs_the_task_no_earlier_than_its_time(client: TestClient, work: Any, fire_timers: Any) -> None:
    submitted = time.time()
    post(client, {"id": "later", "type": "echo", "delay_ms": 1500})
    assert get(client, "later")["status"] == "SCHEDULED"

    def ran() -> bool:
        fire_timers()
        work()
        return bool(get(client, "later")["status"] == "COMPLETED")

    wait_until(ran, timeout=10, interval=0.05, what="delayed task to run")
    task = get(client, "later")
    assert task["status"] == "COMPLETED"

    started = api_time(task["started_at"]).timestamp()
    assert started >= submitted + 1.5
