"""Only registered task types ever run: a job written or tampered with in Redis runs nothing."""

from __future__ import annotations

import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient


class Evil:
    """Unpickling this runs a shell command: proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def status_and_error(client: TestClient, task_id: str) -> tuple[str, dict[str, str] | None]:
    task = client.get(f"/api/tasks/{task_id}").json()
    return task["status"], task["error"]


def test_a_job_naming_another_callable_fails_and_runs_nothing(
    client: TestClient, redis: Redis, work: Any, tmp_path: Path
) -> None:
    proof = tmp_path / "pwned"
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    queue.enqueue_call("os.system", args=[f"touch {proof}"], job_id="evil")
    work()
    assert not proof.exists()
    status, error = status_and_error(client, "evil")
    assert status == "FAILED"
    assert error is not None and error["type"] == "forbidden_job"
    assert "os.system" in error["message"]


def test_a_pickled_payload_is_never_unpickled(client: TestClient, redis: Redis, work: Any, tmp_path: Path) -> None:
    proof = tmp_path / "pwned"
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue_call("workers.entry.run_task", kwargs={"task_type": "echo", "payload": {}}, job_id="pickled")
    redis.hset(job.key, "data", zlib.compress(pickle.dumps(Evil(proof))))
    work()
    assert not proof.exists()
    assert client.get("/api/tasks/pickled/status").json()["status"] == "FAILED"
    assert json.loads(redis.hget(job.key, "rqflow_error"))["type"] == "DeserializationError"
    # Its data is not JSON, so the task cannot be shown; it is reported as such, never unpickled.
    unreadable = client.get("/api/tasks/pickled")
    assert unreadable.status_code == 500
    assert unreadable.json()["type"] == "urn:rqflow:problem:unreadable-record"
    assert not proof.exists()


def test_a_tampered_callback_is_never_called(client: TestClient, redis: Redis, work: Any, tmp_path: Path) -> None:
    client.post("/api/tasks", json={"id": "victim", "type": "echo"})
    redis.hset(Job.key_for("victim"), mapping={"success_callback_name": "os.system"})
    work()
    status, error = status_and_error(client, "victim")
    assert status == "FAILED"
    assert error is not None and error["type"] == "forbidden_job"


def test_an_unregistered_type_written_into_redis_fails_clearly(client: TestClient, redis: Redis, work: Any) -> None:
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    queue.enqueue_call("workers.entry.run_task", kwargs={"task_type": "rm_rf", "payload": {}}, job_id="ghost-type")
    work()
    status, error = status_and_error(client, "ghost-type")
    assert status == "FAILED"
    assert error is not None and error["type"] == "unknown_task_type"
