"""Strict JSON in, and every stored record readable: one bad request never breaks reads for others."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from tests.app.api.test_tasks import assert_problem
from tests.support import nested_lists, same_json

NOT_STRICT_JSON = {
    "NaN": b'{"x": NaN, "y": Infinity}',
    "an infinite number": b'{"x": 1e999}',
    "a lone surrogate": b'{"x": "\\ud800"}',
    "a duplicate key": b'{"x": 1, "x": 2}',
    "deep nesting": b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "an integer of 101 digits": b'{"x": 1%s}' % (b"0" * 100),
}


def task_body(payload: bytes, task_id: str = "t1") -> bytes:
    return b'{"id": "%s", "type": "echo", "payload": %s}' % (task_id.encode(), payload)


def write_requests(payload: bytes) -> list[tuple[str, str, bytes]]:
    """Every endpoint that takes a body, with `payload` where the task's payload goes."""
    template = b'{"type": "echo", "payload": %s}' % payload
    return [
        ("POST", "/api/tasks", task_body(payload)),
        ("POST", "/api/tasks/batch", b'{"tasks": [%s]}' % task_body(payload, "b1")),
        ("PUT", "/api/tasks/existing", b'{"payload": %s}' % payload),
        ("POST", "/api/schedules", b'{"id": "s1", "interval_s": 60, "task": %s}' % template),
        ("PUT", "/api/schedules/existing", b'{"interval_s": 60, "task": %s}' % template),
    ]


def stored(redis: Redis) -> dict[bytes, Any]:
    """Every key with its type and contents, to see that a refused request changed nothing."""
    dump = {}
    for key in sorted(redis.keys()):
        kind = redis.type(key)
        if kind == b"hash":
            dump[key] = redis.hgetall(key)
        elif kind == b"zset":
            dump[key] = redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            dump[key] = redis.lrange(key, 0, -1)
        elif kind == b"set":
            dump[key] = redis.smembers(key)
        elif kind == b"stream":
            dump[key] = redis.xrange(key)
        else:
            dump[key] = redis.get(key)
    return dump


@pytest.fixture
def existing(client: TestClient) -> None:
    """A task and a schedule for the PUT requests to aim at, created in the future so nothing moves."""
    assert client.post("/api/tasks", json={"id": "existing", "type": "echo", "delay_ms": 3_600_000}).status_code == 201
    body = {"id": "existing", "interval_s": 3600, "task": {"type": "echo"}}
    assert client.post("/api/schedules", json=body).status_code == 201


@pytest.mark.parametrize("case", NOT_STRICT_JSON)
def test_a_body_that_is_not_strict_json_is_a_400_naming_it_and_stores_nothing(
    client: TestClient, redis: Redis, existing: None, case: str
) -> None:
    before = stored(redis)
    for method, path, body in write_requests(NOT_STRICT_JSON[case]):
        response = client.request(method, path, content=body, headers={"content-type": "application/json"})
        problem = assert_problem(response, 400)
        assert "not valid JSON" in problem["detail"], (path, problem)
    assert stored(redis) == before
    assert client.get("/api/tasks").status_code == 200
    assert client.get("/api/schedules").status_code == 200


AWKWARD = {
    "unicode": "😀 é 日本 \u0000 \u2028 \\ \" '",
    "big": 9223372036854775807,
    "small": -9223372036854775808,
    "beyond_64_bits": 10**40,
    "float": 1.7976931348623157e308,
    "tiny": 5e-324,
    "negative_zero": -0.0,
    "third": 0.1 + 0.2,
    "empty_object": {},
    "empty_list": [],
    "empty_string": "",
    "nested": {"a": [[[{"b": [None, True, False, 1, 1.5]}]]]},
    "long": "x" * 100_000,
    "deep": nested_lists(40),
}


def test_what_a_task_submission_answers_is_what_is_read_back(client: TestClient) -> None:
    answered = client.post("/api/tasks", json={"id": "a", "type": "echo", "payload": AWKWARD, "delay_ms": 3_600_000})
    assert answered.status_code == 201, answered.text
    read = client.get("/api/tasks/a").json()
    assert same_json(answered.json()["payload"], AWKWARD)
    assert {k: v for k, v in read.items() if k != "waiting_for"} == answered.json()
    assert client.get("/api/tasks").json() == [answered.json()]


def test_what_a_batch_answers_is_what_is_read_back(client: TestClient) -> None:
    tasks = [
        {"id": "p", "type": "echo", "payload": AWKWARD, "delay_ms": 3_600_000},
        {"id": "c", "type": "echo", "payload": {"k": AWKWARD["unicode"]}, "dependencies": ["p"]},
    ]
    answered = client.post("/api/tasks/batch", json={"tasks": tasks})
    assert answered.status_code == 201, answered.text
    for task in answered.json()["tasks"]:
        read = client.get(f"/api/tasks/{task['id']}").json()
        assert {k: v for k, v in read.items() if k != "waiting_for"} == task


def test_what_a_change_answers_is_what_is_read_back(client: TestClient) -> None:
    assert client.post("/api/tasks", json={"id": "a", "type": "echo", "delay_ms": 3_600_000}).status_code == 201
    answered = client.put("/api/tasks/a", json={"payload": AWKWARD, "name": "ü" * 200})
    assert answered.status_code == 200, answered.text
    assert same_json(answered.json()["payload"], AWKWARD)
    assert client.get("/api/tasks/a").json() == answered.json()


def test_what_a_schedule_answers_is_what_is_read_back(client: TestClient) -> None:
    body = {"id": "s", "interval_s": 3600, "task": {"type": "echo", "payload": AWKWARD}}
    created = client.post("/api/schedules", json=body)
    assert created.status_code == 201, created.text
    assert same_json(created.json()["task"]["payload"], AWKWARD)
    assert client.get("/api/schedules/s").json() == created.json()
    body["task"]["payload"] = {"again": AWKWARD}
    replaced = client.put("/api/schedules/s", json=body)
    assert replaced.status_code == 200, replaced.text
    assert client.get("/api/schedules/s").json() == replaced.json()
    assert client.get("/api/schedules").json() == [replaced.json()]


def test_a_damaged_task_is_left_out_of_lists_reported_alone_counted_and_deletable(
    client: TestClient, redis: Redis
) -> None:
    for task_id in ("good", "nan", "junk-spec"):
        assert client.post("/api/tasks", json={"id": task_id, "type": "echo", "delay_ms": 3_600_000}).status_code == 201
    # As an older version stored it: Python's json wrote NaN into the job data.
    redis.hset("rq:job:nan", "data", b'["workers.entry.run_task",null,[],{"task_type":"echo","payload":{"x":NaN}}]')
    redis.hset("rq:job:junk-spec", "rqflow_spec", b"{not json")

    listed = client.get("/api/tasks")
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()] == ["good"]
    assert [t["id"] for t in client.get("/api/tasks", params={"type": "echo"}).json()] == ["good"]
    for task_id in ("nan", "junk-spec"):
        problem = assert_problem(client.get(f"/api/tasks/{task_id}"), 500)
        assert problem["type"] == "urn:rqflow:problem:unreadable-record"
        assert task_id in problem["detail"]
    assert client.get("/api/stats").json()["unreadable"] == {"count": 2, "records": ["task:junk-spec", "task:nan"]}

    assert client.delete("/api/tasks/nan").status_code == 204
    assert client.get("/api/tasks/nan").status_code == 404
    assert client.get("/api/stats").json()["unreadable"] == {"count": 1, "records": ["task:junk-spec"]}


def test_a_damaged_history_entry_is_left_out_of_the_history(client: TestClient, redis: Redis) -> None:
    assert client.post("/api/tasks", json={"id": "a", "type": "echo", "delay_ms": 3_600_000}).status_code == 201
    redis.xadd("rqflow:history:a", {"event": "failed", "at_ms": "soon", "error": "{"})
    redis.xadd("rqflow:history:a", {"event": "note", "at_ms": "1700000000000"})
    response = client.get("/api/tasks/a/history")
    assert response.status_code == 200
    assert [e["event"] for e in response.json()] == ["submitted", "note"]


def test_a_damaged_schedule_is_left_out_reported_alone_and_mended_by_a_new_definition(
    client: TestClient, redis: Redis
) -> None:
    for schedule_id in ("good", "bad"):
        body = {"id": schedule_id, "interval_s": 3600, "task": {"type": "echo"}}
        assert client.post("/api/schedules", json=body).status_code == 201
    spec = redis.hget("rqflow:schedule:bad", "spec")
    redis.hset("rqflow:schedule:bad", "spec", spec.replace(b'"payload":{}', b'"payload":{"x":NaN}'))

    assert [s["id"] for s in client.get("/api/schedules").json()] == ["good"]
    assert assert_problem(client.get("/api/schedules/bad"), 500)["type"] == "urn:rqflow:problem:unreadable-record"
    assert client.get("/api/stats").json()["unreadable"]["records"] == ["schedule:bad"]

    mended = client.put("/api/schedules/bad", json={"interval_s": 60, "task": {"type": "echo"}})
    assert mended.status_code == 200, mended.text
    assert sorted(s["id"] for s in client.get("/api/schedules").json()) == ["bad", "good"]
    assert client.get("/api/stats").json()["unreadable"]["count"] == 0
