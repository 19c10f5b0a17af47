"""kill -9 of real processes: nothing acknowledged is lost, nothing stays stuck."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app import keys
from app.api.main import create_app
from app.settings import Settings
from bench.procs import kill_tree
from tests.support import (
    ROOT,
    RedisServer,
    engine_worker,
    free_port,
    output_file,
    rq_worker,
    wait_for_status,
    wait_until,
)

FAST = {"RQFLOW_WORKER_LOST_AFTER_S": "5", "RQFLOW_MAINTENANCE_S": "2", "RQFLOW_HEARTBEAT_S": "1"}


def start_worker(url: str, *, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The Procfile's default worker class (the engine)."""
    return rq_worker(url, env=env, worker_class="workers.engine.EngineWorker")


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    return FAST


def test_a_killed_workers_task_runs_again_on_another_within_10_s(client: TestClient, settings: Settings) -> None:
    """With the default settings, a dead worker's task is back in play within 10 s."""
    url = str(settings.redis_url)
    client.post(
        "/api/tasks",
        json={"id": "victim", "type": "data_processing", "duration_ms": 3000, "backoff": {"initial_ms": 0}},
    )
    first = start_worker(url, env={})
    try:
        wait_for_status(client, "victim", "RUNNING", timeout=30)
        second = start_worker(url, env={})
        try:
            wait_until(
                lambda: len(client.get("/api/workers").json()) == 2, timeout=30, what="the second worker to start"
            )
            killed_at = time.monotonic()
            kill_tree(first.pid)
            first.wait(10)

            def running_again() -> bool:
                task = client.get("/api/tasks/victim").json()
                return task["attempts"] == 2 and task["status"] in ("RUNNING", "COMPLETED")

            wait_until(running_again, timeout=40, interval=0.1, what="the task to run on the other worker")
            took = time.monotonic() - killed_at
            assert took <= 10, f"back in play after {took:.1f} s"
            wait_for_status(client, "victim", "COMPLETED", timeout=30)
            events = client.get("/api/tasks/victim/history").json()
            lost = [e for e in events if e["event"] == "retrying"]
            assert lost and lost[0]["error"]["type"] == "worker_lost"
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            kill_tree(first.pid)


def test_a_lost_task_with_no_attempts_left_fails_as_worker_lost_and_cascades(
    client: TestClient, settings: Settings, worker_env: dict[str, str]
) -> None:
    url = str(settings.redis_url)
    client.post("/api/tasks", json={"id": "once", "type": "data_processing", "duration_ms": 5000, "max_attempts": 1})
    client.post("/api/tasks", json={"id": "then", "type": "echo", "dependencies": ["once"]})
    first = start_worker(url, env=worker_env)
    wait_for_status(client, "once", "RUNNING", timeout=30)
    kill_tree(first.pid)
    first.wait(10)
    second = start_worker(url, env=worker_env)
    try:
        wait_for_status(client, "then", "CANCELED", timeout=40, interval=0.2)
        once = client.get("/api/tasks/once").json()
        assert once["status"] == "FAILED"
        assert once["error"]["type"] == "worker_lost"
    finally:
        second.terminate()
        second.wait(30)


def test_redis_killed_and_restarted_keeps_every_acknowledged_task(
    aof_redis: RedisServer, worker_env: dict[str, str]
) -> None:
    settings = Settings(redis_url=aof_redis.url, task_modules=["tests.handlers"])
    acknowledged = []
    with TestClient(create_app(settings)) as client:
        for n in range(300):
            body: dict[str, Any] = {"id": f"t{n}", "type": "echo"}
            if n % 3 == 2:
                body["dependencies"] = [f"t{n - 1}"]
            if client.post("/api/tasks", json=body).status_code == 201:
                acknowledged.append(body["id"])
        aof_redis.kill(signal.SIGKILL)  # right after the last acknowledgement
        assert client.get("/health").status_code == 503
        aof_redis.start()
        assert len(acknowledged) == 300
        stored = {t["id"] for t in client.get("/api/tasks?limit=1000").json()}
        assert stored == set(acknowledged)
        worker = start_worker(aof_redis.url, env=worker_env)
        try:

            def all_done() -> bool:
                tasks = client.get("/api/tasks?limit=1000").json()
                return all(t["status"] == "COMPLETED" for t in tasks)

            wait_until(all_done, timeout=60, interval=0.3, what="every task to complete")
        finally:
            worker.terminate()
            worker.wait(30)


def test_workers_ride_out_a_redis_restart(aof_redis: RedisServer, worker_env: dict[str, str]) -> None:
    settings = Settings(redis_url=aof_redis.url, task_modules=["tests.handlers"])
    worker = start_worker(aof_redis.url, env=worker_env)
    try:
        with TestClient(create_app(settings)) as client:
            client.post("/api/tasks", json={"id": "before", "type": "echo"})
            wait_for_status(client, "before", "COMPLETED", timeout=30)
            aof_redis.kill(signal.SIGKILL)
            time.sleep(1.5)  # Redis is down for a while: the worker must wait, not die
            aof_redis.start()
            assert worker.poll() is None, "the worker exited instead of reconnecting"
            wait_until(
                lambda: client.post("/api/tasks", json={"id": "after", "type": "echo"}).status_code in (200, 201),
                timeout=20,
            )
            wait_for_status(
                client,
                "after",
                "COMPLETED",
                timeout=60,
                interval=0.2,
                what="a task submitted after the restart to run on the same worker",
            )
    finally:
        worker.terminate()
        worker.wait(30)


def test_tasks_running_through_a_redis_restart_end_once(aof_redis: RedisServer, worker_env: dict[str, str]) -> None:
    """The children run on while Redis is away, and their ends are written once it is back: no
    task runs twice, and none is cut off."""
    settings = Settings(redis_url=aof_redis.url, task_modules=["tests.handlers"])
    with TestClient(create_app(settings)) as client, engine_worker(aof_redis.url, env=worker_env) as worker:
        for n in range(2):
            client.post("/api/tasks", json={"id": f"long{n}", "type": "data_processing", "duration_ms": 3000})
        for n in range(2):
            wait_for_status(client, f"long{n}", "RUNNING", timeout=30)
        aof_redis.kill(signal.SIGKILL)
        wait_until(lambda: "Redis unavailable" in worker.output.read_text(), timeout=30, what="the worker to notice")
        aof_redis.start()
        for n in range(2):
            wait_for_status(client, f"long{n}", "COMPLETED", timeout=60)
            task = client.get(f"/api/tasks/long{n}").json()
            assert task["attempts"] == 1, task
        assert worker.poll() is None


def test_a_worker_whose_redis_is_gone_still_stops_on_sigterm(
    aof_redis: RedisServer, worker_env: dict[str, str]
) -> None:
    with engine_worker(aof_redis.url, env=worker_env) as worker:
        redis = aof_redis.client()
        wait_until(lambda: len(redis.smembers("rq:workers")) == 1, timeout=30, what="the worker to start")
        redis.close()
        aof_redis.kill(signal.SIGKILL)  # and it does not come back
        wait_until(lambda: "Redis unavailable" in worker.output.read_text(), timeout=30, what="the worker to notice")
        worker.terminate()
        worker.wait(15)  # TimeoutExpired if it goes on trying to reconnect instead


def test_an_api_killed_in_the_middle_of_a_batch_leaves_all_of_it_or_none(settings: Settings, redis: Redis) -> None:
    url = str(settings.redis_url)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RQFLOW_REDIS_URL": url, "RQFLOW_PORT": str(port)}
    api = subprocess.Popen(
        [sys.executable, "-m", "app.api"], env=env, cwd=ROOT, stdout=output_file("api"), stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), timeout=30, what="the API")
        ids = [f"b{n}" for n in range(10_000)]
        chain = [
            {"id": i, "type": "data_processing"} | ({"dependencies": [ids[n - 1]]} if n else {})
            for n, i in enumerate(ids)
        ]
        batch = {"tasks": chain}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/tasks/batch", json.dumps(batch).encode(), {"Content-Type": "application/json"}
        )
        sender = threading.Thread(target=_answers, args=(request,))
        sender.start()
        # Redis flags a client inside MULTI with "x": the batch is claimed and half sent.
        wait_until(lambda: any("x" in c["flags"] for c in redis.client_list()), timeout=30, what="the transaction")
        api.kill()
        api.wait(10)
        sender.join(30)
    finally:
        if api.poll() is None:
            api.kill()
    stored = redis.exists(*(f"rq:job:{i}" for i in ids))
    assert (stored, redis.zcard(keys.TASK_INDEX)) in ((0, 0), (10_000, 10_000))

    with TestClient(create_app(settings)) as client:
        again = client.post("/api/tasks/batch", json=batch, headers={"Prefer": "return=minimal"})
        if stored == 0:
            assert again.status_code == 409 and again.headers["retry-after"] == "1", again.text
            redis.zadd(keys.CLAIMS, dict.fromkeys(ids, 1))  # the dead process's claims lapse
            again = client.post("/api/tasks/batch", json=batch, headers={"Prefer": "return=minimal"})
            assert again.status_code == 201, again.text
        else:
            assert again.status_code == 200, again.text
    assert redis.exists(*(f"rq:job:{i}" for i in ids)) == redis.zcard(keys.TASK_INDEX) == 10_000
    assert [t["status"] for t in again.json()["tasks"][:2]] == ["QUEUED", "PENDING"]


def _answers(request: str | urllib.request.Request) -> bool:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status == 200
    except OSError:
        return False
