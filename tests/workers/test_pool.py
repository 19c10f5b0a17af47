"""The engine's children: a crash is contained, nothing of one task reaches the next, children are
recycled, and they never outlive their worker."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.jobs.engine import Claimed
from app.settings import Settings
from bench.procs import descendants
from tests.support import engine_worker, rq_worker, wait_for_status, wait_until
from workers.pool import Outcome, Pool, receive_message, send_message


def task(task_id: str, task_type: str, payload: dict[str, Any] | None = None, attempt: int = 1) -> Claimed:
    return Claimed(
        id=task_id,
        origin="default",
        execution="e",
        attempt=attempt,
        max_attempts=2,
        timeout_s=30,
        task_type=task_type,
        payload=payload or {},
        duration_ms=None,
        refused=None,
    )


@pytest.fixture
def pool_of(settings: Settings) -> Iterator[Any]:
    pools: list[Pool] = []

    def make(**changes: Any) -> Pool:
        pool = Pool(settings.model_copy(update={"concurrency": 1, **changes}))
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def run(pool: Pool, claimed: Claimed) -> Outcome:
    """Run one task on the pool's first idle child (waiting for one to be ready) and return its outcome."""
    pool.replace_spent()

    def idle() -> list[Any]:
        pool.wait(0.05)  # a child that finished starting becomes idle
        return pool.idle

    child = wait_until(idle, timeout=30, what="an idle child")[0]
    pool.run(child, claimed)
    outcomes: list[Outcome] = []
    wait_until(lambda: outcomes.extend(pool.wait(0.1)) or outcomes, timeout=30, what="the outcome")
    return outcomes[0]


def value(outcome: Outcome) -> Any:
    import json

    assert outcome.result_json is not None, (outcome.error_type, outcome.message)
    return json.loads(outcome.result_json)


@pytest.mark.parametrize("how", ["exit", "segv"])
def test_a_child_that_dies_ends_its_task_as_worker_lost_and_is_replaced(pool_of: Any, how: str) -> None:
    pool = pool_of()
    first_pid = pool.children[0].process.pid
    died = run(pool, task("dies", "crash", {"how": how}))
    assert died.error_type == "worker_lost" and died.result_json is None
    assert "died" in died.message
    after = value(run(pool, task("next", "crash", {"on": []})))
    assert after != first_pid  # a new child ran it


def test_nothing_of_one_task_reaches_the_next_in_the_same_child(pool_of: Any) -> None:
    pool = pool_of()
    first = value(run(pool, task("first", "meddle")))
    second = value(run(pool, task("second", "meddle")))
    assert second["pid"] == first["pid"]  # the same child, reused
    assert second["env"] is None  # the variable "first" set is gone
    assert second["random"] != random.Random(42).random()  # and so is the seed it fixed
    assert "RQFLOW_TEST_LEFT" not in os.environ


def test_payloads_and_results_of_any_size_cross_the_pipe_whole(pool_of: Any) -> None:
    """Larger than a pipe's buffer and than one read, so each message takes several."""
    pool = pool_of()
    for size in (0, 10, 70_000, 3_000_000):
        payload = {"text": "é" * size, "n": size}
        assert value(run(pool, task(f"sized-{size}", "echo", payload)))["payload"] == payload


def test_a_message_is_read_whole_and_a_closed_end_is_the_end() -> None:
    here, there = socket.socketpair()
    with here, there:
        for message in (b"", b"ready", bytes(range(256)) * 4000):  # the last fills the pipe: sent meanwhile
            sending = threading.Thread(target=send_message, args=(here.fileno(), message))
            sending.start()
            assert receive_message(there.fileno()) == message
            sending.join()
        here.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            receive_message(there.fileno())


def test_a_child_is_recycled_after_its_number_of_tasks(pool_of: Any) -> None:
    pool = pool_of(child_max_tasks=3)
    pids = [value(run(pool, task(f"t{i}", "meddle")))["pid"] for i in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]


def test_a_child_is_recycled_past_its_memory_limit(pool_of: Any) -> None:
    pool = pool_of(child_max_memory_mb=200)
    small = value(run(pool, task("small", "meddle")))
    again = value(run(pool, task("big", "meddle", {"mb": 300})))
    assert again["pid"] == small["pid"]
    fresh = value(run(pool, task("after", "meddle")))
    assert fresh["pid"] != small["pid"]


def test_a_crash_on_the_engine_is_retried_and_the_history_says_why(
    client: TestClient, settings: Settings, worker_env: dict[str, str]
) -> None:
    client.post("/api/tasks", json={"id": "crashy", "type": "crash", "payload": {"how": "segv"}})
    with engine_worker(str(settings.redis_url), env=worker_env):
        wait_for_status(client, "crashy", "COMPLETED", timeout=60)
    assert client.get("/api/tasks/crashy").json()["attempts"] == 2
    retrying = [e for e in client.get("/api/tasks/crashy/history").json() if e["event"] == "retrying"]
    assert retrying and retrying[0]["error"]["type"] == "worker_lost"


def test_children_never_outlive_their_worker(settings: Settings, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "RQFLOW_CONCURRENCY": "3"}
    worker = rq_worker(str(settings.redis_url), env=env, worker_class="workers.engine.EngineWorker")
    try:
        children = wait_until(
            lambda: descendants(worker.pid) if len(descendants(worker.pid)) >= 3 else [],
            timeout=30,
            what="the worker's children",
        )
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone, as the OOM killer would
        worker.wait(10)

    def gone() -> bool:
        return not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in children)

    wait_until(gone, timeout=10, what="the children to die with their worker")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def worker_env() -> dict[str, str]:
    return {"RQFLOW_HEARTBEAT_S": "1", "RQFLOW_CONCURRENCY": "1"}
