"""POST/GET /api/tasks: submission, aliases, idempotency, every kind of bad input, listing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings
from tests.support import RedisServer


def post(client: TestClient, body: Any) -> Any:
    return client.post("/api/tasks", json=body)


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["detail"] and problem["type"]
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    return problem


def test_submit_stores_a_queued_task_with_type_defaults(client: TestClient) -> None:
    response = post(client, {"id": "task-A", "type": "data_processing", "duration_ms": 5})
    assert response.status_code == 201
    assert response.headers["location"] == "/api/tasks/task-A"
    task = response.json()
    assert task["id"] == "task-A"
    assert task["status"] == "QUEUED"
    assert task["attempts"] == 0
    assert task["max_attempts"] == 3
    assert task["timeout_ms"] == 300_000
    assert task["backoff"] == {"initial_ms": 1000, "factor": 2.0, "max_ms": 300000, "jitter": True}
    assert task["name"] == "data_processing"
    assert task["priority"] == "default"
    assert task["created_at"].endswith("Z")
    assert client.get("/api/tasks/task-A").json() == {
        **task,
        "waiting_for": {"worker": {"queue": "default", "queued": 1}},
    }


def test_generated_id_when_none_given(client: TestClient) -> None:
    task = post(client, {"type": "echo"}).json()
    assert len(task["id"]) == 32
    assert client.get(f"/api/tasks/{task['id']}").status_code == 200


def test_every_alias_is_accepted(client: TestClient) -> None:
    post(client, {"id": "parent", "type": "echo"})
    body = {
        "id": "aliased",
        "type": "data_processing",
        "task_data": {"k": 1},
        "duration": 7,
        "depends_on": ["parent"],
        "maxAttempts": 5,
        "description": "nightly import",
    }
    task = post(client, body).json()
    assert task["payload"] == {"k": 1}
    assert task["duration_ms"] == 7
    assert task["dependencies"] == ["parent"]
    assert task["max_attempts"] == 5
    assert task["name"] == "nightly import"
    later = post(client, {"id": "timed", "type": "echo", "execution_time": "2999-01-01T00:00:00Z"}).json()
    assert later["run_at"] == "2999-01-01T00:00:00.000Z"
    assert later["status"] == "SCHEDULED"


def test_same_id_same_body_is_an_idempotent_200(client: TestClient) -> None:
    body = {"id": "dup", "type": "echo", "payload": {"a": 1}}
    first = post(client, body)
    again = post(client, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["created_at"] == first.json()["created_at"]
    # The same request spelled with aliases is the same request.
    assert post(client, {"id": "dup", "type": "echo", "task_data": {"a": 1}}).status_code == 200


def test_same_id_different_body_is_a_409_that_changes_nothing(client: TestClient, redis: Redis) -> None:
    post(client, {"id": "dup", "type": "echo", "payload": {"a": 1}})
    assert_problem(post(client, {"id": "dup", "type": "echo", "payload": {"a": 2}}), 409)
    assert client.get("/api/tasks/dup").json()["payload"] == {"a": 1}
    assert redis.llen("rq:queue:default") == 1


def test_a_finished_task_is_never_overwritten_by_reusing_its_id(client: TestClient, work: Any) -> None:
    post(client, {"id": "done", "type": "echo", "payload": {"n": 1}})
    work()
    assert_problem(post(client, {"id": "done", "type": "echo", "payload": {"n": 2}}), 409)
    task = client.get("/api/tasks/done").json()
    assert (task["status"], task["payload"]) == ("COMPLETED", {"n": 1})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "nope"}, "type"),
        ({}, "type"),
        ({"type": 5}, "type"),
        ({"type": "echo", "id": "bad id!"}, "id"),
        ({"type": "echo", "id": "a.b"}, "id"),
        ({"type": "echo", "id": "x" * 129}, "id"),
        ({"type": "echo", "id": ""}, "id"),
        ({"type": "echo", "duration_ms": -1}, "duration_ms"),
        ({"type": "echo", "duration": "10"}, "duration"),
        ({"type": "echo", "delay_ms": -5}, "delay_ms"),
        # Past ten years a due time overflows what dates hold, a timeout the worker's alarm.
        ({"type": "echo", "delay_ms": 10**20}, "delay_ms"),
        ({"type": "echo", "timeout_ms": 10**20}, "timeout_ms"),
        ({"type": "echo", "duration_ms": 10**20}, "duration_ms"),
        ({"type": "echo", "backoff": {"max_ms": 10**20}}, "backoff.max_ms"),
        ({"type": "echo", "max_attempts": 0}, "max_attempts"),
        ({"type": "echo", "maxAttempts": 101}, "maxAttempts"),
        ({"type": "echo", "timeout_ms": 0}, "timeout_ms"),
        ({"type": "echo", "priority": "urgent"}, "priority"),
        ({"type": "echo", "payload": [1, 2]}, "payload"),
        ({"type": "echo", "task_data": "x"}, "task_data"),
        ({"type": "echo", "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"type": "echo", "run_at": "tomorrow"}, "run_at"),
        ({"type": "echo", "backoff": {"factor": 0.5}}, "backoff.factor"),
        ({"type": "echo", "backoff": {"initial_ms": -1}}, "backoff.initial_ms"),
        ({"type": "echo", "dependencies": "a"}, "dependencies"),
        ({"type": "echo", "dependencies": ["missing"]}, "dependencies.0"),
        ({"type": "echo", "name": "n" * 201}, "name"),
        ({"type": "echo", "colour": "red"}, "colour"),
        ([{"type": "echo"}], "body"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(
    client: TestClient, redis: Redis, body: Any, field: str
) -> None:
    assert_problem(post(client, body), 422, field)
    assert redis.keys("rq:job:*") == []
    assert redis.zcard("rqflow:tasks") == 0


def test_any_json_number_in_a_payload_comes_back_exactly(client: TestClient) -> None:
    payload = {"big": 10**30, "negative": -(2**70), "float": 0.1, "text": "grüße ✓"}
    created = post(client, {"id": "exact", "type": "echo", "payload": payload})
    assert created.json()["payload"] == payload
    assert client.get("/api/tasks/exact").json()["payload"] == payload


def test_cross_field_rules_are_422(client: TestClient, redis: Redis) -> None:
    post(client, {"id": "p", "type": "echo"})
    assert_problem(post(client, {"type": "echo", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}), 422)
    assert_problem(post(client, {"type": "echo", "dependencies": ["p", "p"]}), 422)
    assert_problem(post(client, {"id": "self", "type": "echo", "dependencies": ["self"]}), 422)
    assert redis.zcard("rqflow:tasks") == 1


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe"])
def test_malformed_json_is_a_400(client: TestClient, redis: Redis, raw: bytes) -> None:
    response = client.post("/api/tasks", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert redis.zcard("rqflow:tasks") == 0


def test_unknown_task_is_a_404(client: TestClient) -> None:
    assert_problem(client.get("/api/tasks/ghost"), 404)
    assert_problem(client.get("/api/tasks/ghost/status"), 404)
    assert_problem(client.get("/api/nothing-here"), 404)


def test_status_endpoint(client: TestClient) -> None:
    post(client, {"id": "s1", "type": "echo"})
    assert client.get("/api/tasks/s1/status").json() == {"id": "s1", "status": "QUEUED"}


def test_list_is_newest_first_with_filters(client: TestClient, work: Any) -> None:
    for n in range(5):
        post(client, {"id": f"t{n}", "type": "echo"})
    post(client, {"id": "other", "type": "data_processing"})
    listed = client.get("/api/tasks").json()
    assert [t["id"] for t in listed] == ["other", "t4", "t3", "t2", "t1", "t0"]
    assert [t["id"] for t in client.get("/api/tasks?type=echo").json()] == ["t4", "t3", "t2", "t1", "t0"]
    work()
    assert {t["status"] for t in client.get("/api/tasks?status=COMPLETED").json()} == {"COMPLETED"}
    assert len(client.get("/api/tasks?status=completed").json()) == 6
    assert client.get("/api/tasks?status=QUEUED").json() == []


def test_pagination_walks_every_task_once_while_tasks_arrive(client: TestClient) -> None:
    for n in range(25):
        post(client, {"id": f"t{n:02d}", "type": "echo"})
    seen: list[str] = []
    url = "/api/tasks?limit=10"
    while url:
        response = client.get(url)
        page = response.json()
        assert isinstance(page, list) and len(page) <= 10
        seen += [t["id"] for t in page]
        post(client, {"type": "echo"})  # arrives mid-walk; it is newer than the cursor
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else ""
    assert seen == [f"t{n:02d}" for n in reversed(range(25))]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("status=DONE", "status"),
        ("cursor=zz", "cursor"),
    ],
)
def test_bad_list_queries_are_422(client: TestClient, query: str, field: str) -> None:
    assert_problem(client.get(f"/api/tasks?{query}"), 422, field)


def test_types_lists_registered_types_with_defaults(client: TestClient) -> None:
    types = {t["name"]: t for t in client.get("/api/types").json()}
    assert {"data_processing", "http_request", "echo"} <= set(types)
    assert types["data_processing"]["max_attempts"] == 3
    assert types["data_processing"]["timeout_ms"] == 300_000


def test_health_reports_persistence(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["redis"]["ok"] is True
    assert body["redis"]["aof_enabled"] is False  # the test server runs without AOF...
    assert any("AOF" in w for w in body["redis"]["warnings"])  # ...and health says so


def test_health_warns_of_an_fsync_a_redis_crash_can_outrun(aof_redis: RedisServer, settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"redis_url": aof_redis.url}))) as client:
        shipped = client.get("/health").json()["redis"]
        assert (shipped["appendfsync"], shipped["warnings"]) == ("always", [])
        aof_redis.client().config_set("appendfsync", "everysec")
        warned = client.get("/health").json()["redis"]["warnings"]
        assert any("appendfsync everysec" in w and "2 s" in w for w in warned), warned


def test_a_single_task_claimed_by_a_batch_in_flight_is_refused_until_the_claim_lapses(
    client: TestClient, redis: Redis
) -> None:
    """The one-script path of a single POST honours the claims of batches being written."""
    from app import keys

    redis.zadd(keys.CLAIMS, {"held": 2**50})  # a batch holding "held" is being written
    problem = assert_problem(post(client, {"id": "held", "type": "echo"}), 409)
    assert "being written" in problem["detail"]
    assert redis.exists("rq:job:held") == 0 and redis.llen("rq:queue:default") == 0
    redis.zadd(keys.CLAIMS, {"held": 1})  # ... whose writer died long ago
    assert post(client, {"id": "held", "type": "echo"}).status_code == 201
    again = post(client, {"id": "held", "type": "echo"})  # a repeat: the same task, not a new one
    assert again.status_code == 200 and again.json()["id"] == "held"
    assert redis.llen("rq:queue:default") == 1
    assert_problem(post(client, {"id": "held", "type": "echo", "priority": "high"}), 409)


def _concurrently(settings: Any, bodies: list[dict[str, Any]]) -> list[Any]:
    """POST every body at once on one event loop, as the API's clients do: their scripts leave
    for Redis together (app.jobs.autopipeline)."""

    async def scenario() -> list[Any]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                return list(await asyncio.gather(*(http.post("/api/tasks", json=body) for body in bodies)))

    return asyncio.run(scenario())


def test_concurrent_submissions_are_each_stored_once(settings: Any, redis: Redis) -> None:
    bodies = [{"id": f"c-{i}", "type": "data_processing", "payload": {"i": i}} for i in range(40)]
    answers = _concurrently(settings, bodies)
    assert [a.status_code for a in answers] == [201] * 40
    assert [a.json()["id"] for a in answers] == [b["id"] for b in bodies]
    assert redis.llen("rq:queue:default") == 40
    assert redis.zcard("rqflow:tasks") == 40


def test_the_same_task_sent_many_times_at_once_is_created_once(settings: Any, redis: Redis) -> None:
    same = {"id": "twin", "type": "data_processing", "payload": {"n": 1}}
    answers = _concurrently(settings, [same] * 12)
    assert sorted(a.status_code for a in answers) == [200] * 11 + [201]
    assert {a.json()["id"] for a in answers} == {"twin"}
    assert redis.lrange("rq:queue:default", 0, -1) == [b"twin"]


def test_the_same_id_with_other_contents_at_once_is_created_once_and_refused_otherwise(
    settings: Any, redis: Redis
) -> None:
    bodies = [{"id": "contested", "type": "data_processing", "payload": {"n": n}} for n in range(8)]
    answers = _concurrently(settings, bodies)
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7
    created = next(a.json() for a in answers if a.status_code == 201)
    with TestClient(create_app(settings)) as reader:
        assert reader.get("/api/tasks/contested").json()["payload"] == created["payload"]
    assert redis.lrange("rq:queue:default", 0, -1) == [b"contested"]


def test_a_submission_after_redis_lost_its_scripts_is_stored(client: TestClient, redis: Redis) -> None:
    assert post(client, {"id": "before", "type": "data_processing"}).status_code == 201
    redis.script_flush()  # as after a restart of Redis
    response = post(client, {"id": "after", "type": "data_processing"})
    assert response.status_code == 201, response.text
    assert client.get("/api/tasks/after").json()["status"] == "QUEUED"


def test_a_submission_right_after_redis_restarted_is_stored_not_refused(
    aof_redis: RedisServer, settings: Settings
) -> None:
    with TestClient(create_app(settings.model_copy(update={"redis_url": aof_redis.url}))) as client:
        assert post(client, {"id": "before", "type": "data_processing"}).status_code == 201
        aof_redis.kill()
        aof_redis.start()  # its AOF keeps "before"; the API's connection to the old one is dead
        response = post(client, {"id": "after", "type": "data_processing"})
        assert response.status_code == 201, response.text
        assert {client.get(f"/api/tasks/{i}").json()["status"] for i in ("before", "after")} == {"QUEUED"}
