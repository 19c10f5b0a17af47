"""Backpressure: past RQFLOW_MAX_UNFINISHED a submission gets 503 and stores nothing; a payload
past RQFLOW_MAX_PAYLOAD_BYTES gets 413; a Redis at its maxmemory gets 503, not 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app import keys
from app.api.main import create_app
from app.settings import Settings
from tests.app.api.test_tasks import assert_problem


@pytest.fixture
def capped(settings: Settings) -> Iterator[TestClient]:
    limits = {"max_unfinished": 5, "max_payload_bytes": 100}
    with TestClient(create_app(settings.model_copy(update=limits))) as client:
        yield client


def test_past_the_cap_on_unfinished_tasks_nothing_is_stored(capped: TestClient, redis: Redis) -> None:
    kinds = [
        {"type": "echo"},  # queued
        {"type": "echo", "delay_ms": 600_000},  # waiting for its time
        {"type": "echo", "dependencies": ["t0"]},  # pending
    ]
    for n in range(4):
        assert capped.post("/api/tasks", json={"id": f"t{n}", **kinds[n % 3]}).status_code == 201
    # A batch that would cross the cap stores none of its tasks.
    refused = capped.post(
        "/api/tasks/batch", json={"tasks": [{"id": "b0", "type": "echo"}, {"id": "b1", "type": "echo"}]}
    )
    assert_problem(refused, 503)
    assert refused.headers["retry-after"] == "5" and "RQFLOW_MAX_UNFINISHED" in refused.json()["detail"]
    assert capped.get("/api/tasks/b0").status_code == 404 and redis.zcard(keys.CLAIMS) == 0
    assert capped.post("/api/tasks", json={"id": "t4", "type": "echo"}).status_code == 201  # the fifth fits
    for body in ({"id": "t5", "type": "echo"}, {"id": "t6", "type": "echo", "dependencies": ["t0"]}):
        assert_problem(capped.post("/api/tasks", json=body), 503)
    assert redis.zcard(keys.TASK_INDEX) == 5
    # A repeat of a stored task is still answered as one, and a dry run is not refused.
    assert capped.post("/api/tasks", json={"id": "t0", "type": "echo"}).status_code == 200
    assert capped.post("/api/tasks/batch?dry_run=true", json={"tasks": [{"type": "echo"}]}).status_code == 200
    # Finished work makes room.
    capped.post("/api/tasks/t1/cancel")
    assert capped.post("/api/tasks", json={"id": "t5", "type": "echo"}).status_code == 201


def test_a_payload_past_its_cap_is_413_naming_the_task(capped: TestClient) -> None:
    big = {"blob": "x" * 200}
    assert_problem(capped.post("/api/tasks", json={"id": "p", "type": "echo", "payload": big}), 413)
    batch = [{"id": "ok", "type": "echo"}, {"id": "big", "type": "echo", "payload": big}]
    answer = capped.post("/api/tasks/batch", json={"tasks": batch})
    assert_problem(answer, 413)
    assert [e["field"] for e in answer.json()["errors"]] == ["tasks.1.payload"]
    assert capped.get("/api/tasks/ok").status_code == 404


def test_a_full_redis_is_a_503_saying_so(client: TestClient, redis: Redis) -> None:
    before = redis.config_get("maxmemory")["maxmemory"]
    redis.config_set("maxmemory", 1)  # every write refused, as at maxmemory under noeviction
    try:
        answer = client.post("/api/tasks", json={"type": "echo"})
        batch = client.post("/api/tasks/batch", json={"tasks": [{"type": "echo"}, {"type": "echo"}]})
    finally:
        redis.config_set("maxmemory", before)
    for refused in (answer, batch):
        assert_problem(refused, 503)
        assert "maxmemory" in refused.json()["detail"] and refused.headers["retry-after"] == "30"
    assert client.get("/api/tasks").json() == []
