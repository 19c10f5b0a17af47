"""POST /api/tasks/batch: whole DAGs in one call, all or nothing."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings, TypeLimits
from tests.app.api.test_tasks import assert_problem


def layered_dag(layers: int, width: int, path: Path) -> list[dict[str, Any]]:
    tasks = []
    for layer in range(layers):
        for n in range(width):
            parents = [f"L{layer - 1}-{p}" for p in range(width) if (p + n) % 3 == 0] if layer else []
            tasks.append(
                {"id": f"L{layer}-{n}", "type": "mark", "payload": {"path": str(path)}, "dependencies": parents}
            )
    return tasks


def test_a_200_task_layered_dag_submitted_children_first_runs_in_dependency_order(
    client: TestClient, work: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    tasks = layered_dag(10, 20, log)
    shuffled = list(reversed(tasks))
    random.Random(3).shuffle(shuffled)
    response = client.post("/api/tasks/batch", json={"tasks": shuffled})
    assert response.status_code == 201, response.text
    assert [t["id"] for t in response.json()["tasks"]] == [t["id"] for t in shuffled]
    statuses = {t["id"]: t["status"] for t in response.json()["tasks"]}
    assert {statuses[f"L0-{n}"] for n in range(20)} == {"QUEUED"}
    assert {s for i, s in statuses.items() if not i.startswith("L0-")} == {"PENDING"}
    work()
    runs = {line.split()[0]: (float(line.split()[1]), float(line.split()[2])) for line in log.read_text().splitlines()}
    assert len(runs) == 200
    for task in tasks:
        for parent in task["dependencies"]:
            assert runs[task["id"]][0] >= runs[parent][1], f"{task['id']} started before {parent} ended"


def test_dependencies_may_point_at_existing_tasks(client: TestClient, work: Any) -> None:
    client.post("/api/tasks", json={"id": "old", "type": "echo"})
    body = {"tasks": [{"id": "b", "type": "echo", "dependencies": ["a", "old"]}, {"id": "a", "type": "echo"}]}
    assert client.post("/api/tasks/batch", json=body).status_code == 201
    work()
    assert client.get("/api/tasks/b").json()["status"] == "COMPLETED"


def test_a_cycle_is_refused_naming_its_ids_and_stores_nothing(client: TestClient, redis: Redis) -> None:
    body = {
        "tasks": [
            {"id": "free", "type": "echo"},
            {"id": "x", "type": "echo", "dependencies": ["z"]},
            {"id": "y", "type": "echo", "dependencies": ["x", "free"]},
            {"id": "z", "type": "echo", "dependencies": ["y"]},
        ]
    }
    problem = assert_problem(client.post("/api/tasks/batch", json=body), 422)
    assert "cycle" in problem["detail"]
    for task_id in ("x", "y", "z"):
        assert task_id in problem["detail"]
    assert "free" not in problem["detail"].split("cycle")[1]
    assert {e["field"] for e in problem["errors"]} == {
        "tasks.1.dependencies",
        "tasks.2.dependencies",
        "tasks.3.dependencies",
    }
    assert redis.keys("rq:*") == [] and redis.keys("rqflow:*") == []


def test_an_invalid_member_is_named_by_index_and_id_and_nothing_is_stored(client: TestClient, redis: Redis) -> None:
    body = {
        "tasks": [
            {"id": "ok", "type": "echo"},
            {"id": "bad", "type": "echo", "priority": "urgent"},
            {"id": "unknown", "type": "nope"},
            {"id": "orphan", "type": "echo", "dependencies": ["ghost"]},
        ]
    }
    problem = assert_problem(client.post("/api/tasks/batch", json=body), 422)
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert "tasks.1.priority" in fields and "'bad'" in fields["tasks.1.priority"]
    assert redis.keys("rq:job:*") == []
    body["tasks"] = [body["tasks"][0], body["tasks"][2]]
    problem = assert_problem(client.post("/api/tasks/batch", json=body), 422, "tasks.1.type")
    assert "'unknown'" in problem["errors"][0]["message"]
    body["tasks"] = [{"id": "ok", "type": "echo"}, {"id": "orphan", "type": "echo", "dependencies": ["ghost"]}]
    assert_problem(client.post("/api/tasks/batch", json=body), 422, "tasks.1.dependencies.0")
    body["tasks"] = [{"id": "twice", "type": "echo"}, {"id": "twice", "type": "echo"}]
    assert_problem(client.post("/api/tasks/batch", json=body), 422, "tasks.1.id")
    assert redis.keys("rq:job:*") == []


def test_bad_batch_shapes(client: TestClient) -> None:
    assert_problem(client.post("/api/tasks/batch", json=[{"type": "echo"}]), 422, "tasks")
    assert_problem(client.post("/api/tasks/batch", json={"tasks": []}), 422, "tasks")
    assert_problem(client.post("/api/tasks/batch", json={"tasks": [{"type": "echo"}] * 10_001}), 422, "tasks")
    assert_problem(client.post("/api/tasks/batch", content=b"{"), 400)


def test_dry_run_validates_and_stores_nothing(client: TestClient, redis: Redis) -> None:
    client.post("/api/tasks", json={"id": "failed", "type": "echo"})
    redis.hset("rq:job:failed", "status", "failed")
    body = {
        "tasks": [
            {"id": "a", "type": "echo"},
            {"id": "b", "type": "echo", "dependencies": ["a"]},
            {"id": "c", "type": "echo", "dependencies": ["failed"]},
            {"id": "d", "type": "echo", "delay_ms": 60_000},
        ]
    }
    keys_before = sorted(redis.keys("*"))
    response = client.post("/api/tasks/batch?dry_run=true", json=body)
    assert response.status_code == 200
    assert response.json()["dry_run"] is True
    assert [t["status"] for t in response.json()["tasks"]] == ["QUEUED", "PENDING", "CANCELED", "SCHEDULED"]
    assert sorted(redis.keys("*")) == keys_before


@pytest.mark.parametrize("query", ["dry_run=ture", "dry_run=-1", "dry-run=true", "dryrun=1"])
def test_a_query_that_does_not_say_dry_run_clearly_stores_nothing(client: TestClient, redis: Redis, query: str) -> None:
    # A misspelt dry run must not store the batch for real.
    response = client.post(f"/api/tasks/batch?{query}", json={"tasks": [{"id": "a", "type": "echo"}]})
    assert_problem(response, 422)
    assert redis.keys("rq:job:*") == []


@pytest.mark.parametrize("query", ["dry_run=TRUE", "dry_run=1", "dry_run=yes"])
def test_the_usual_spellings_of_true_ask_for_a_dry_run(client: TestClient, redis: Redis, query: str) -> None:
    response = client.post(f"/api/tasks/batch?{query}", json={"tasks": [{"id": "a", "type": "echo"}]})
    assert response.status_code == 200 and response.json()["dry_run"] is True
    assert redis.keys("rq:job:*") == []


def test_a_repeated_batch_is_idempotent(client: TestClient) -> None:
    body = {"tasks": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo", "dependencies": ["a"]}]}
    assert client.post("/api/tasks/batch", json=body).status_code == 201
    assert client.post("/api/tasks/batch", json=body).status_code == 200
    body["tasks"][1]["payload"] = {"changed": True}
    assert_problem(client.post("/api/tasks/batch", json=body), 409)


def test_a_member_behind_a_failed_parent_is_canceled_with_its_descendants(client: TestClient, redis: Redis) -> None:
    client.post("/api/tasks", json={"id": "broken", "type": "echo"})
    redis.hset("rq:job:broken", "status", "canceled")
    body = {
        "tasks": [
            {"id": "kid", "type": "echo", "dependencies": ["broken"]},
            {"id": "grandkid", "type": "echo", "dependencies": ["kid"]},
        ]
    }
    tasks = {t["id"]: t for t in client.post("/api/tasks/batch", json=body).json()["tasks"]}
    assert tasks["kid"]["status"] == tasks["grandkid"]["status"] == "CANCELED"
    assert tasks["grandkid"]["error"]["message"] == "dependency 'kid' ended CANCELED"


def test_what_a_batch_answers_is_what_the_tasks_read_back_as(settings: Settings, redis: Redis) -> None:
    limited = settings.model_copy(update={"type_limits": {"sleepy": TypeLimits(concurrency=1)}})
    with TestClient(create_app(limited)) as client:
        client.post("/api/tasks", json={"id": "broken", "type": "echo"})
        redis.hset("rq:job:broken", "status", "failed")
        many = [{"id": f"q{n}", "type": "echo", "payload": {"n": n, "text": "ü", "big": 10**30}} for n in range(150)]
        body = {
            "tasks": [
                *many,
                {"id": "pending", "type": "echo", "dependencies": ["q1", {"id": "q2", "allow_failure": True}]},
                {"id": "later", "type": "echo", "delay_ms": 60_000, "priority": "low", "max_attempts": 5},
                {"id": "doomed", "type": "echo", "dependencies": ["broken"]},
                {"id": "limited-1", "type": "sleepy", "payload": {"seconds": 0}},
                {"id": "limited-2", "type": "sleepy", "name": "second", "timeout_ms": 2500},
            ]
        }
        answered = client.post("/api/tasks/batch", json=body).json()["tasks"]
        expected = {"pending": "PENDING", "later": "SCHEDULED", "doomed": "CANCELED", "limited-2": "QUEUED"}
        for task in answered:
            assert task["status"] == expected.get(task["id"], "QUEUED")
            stored = client.get(f"/api/tasks/{task['id']}").json()
            stored.pop("waiting_for")
            assert task == stored
            first = client.get(f"/api/tasks/{task['id']}/history").json()[0]
            assert (first["event"], first["detail"], first["at"]) == (
                "submitted",
                _EVENT[task["status"]],
                task["created_at"],
            )


_EVENT = {"QUEUED": "queued", "PENDING": "pending", "SCHEDULED": "scheduled", "CANCELED": "canceled"}


def test_prefer_return_minimal_answers_ids_and_statuses_only(client: TestClient) -> None:
    body = {"tasks": [{"id": "b", "type": "echo", "dependencies": ["a"]}, {"id": "a", "type": "echo"}]}
    response = client.post("/api/tasks/batch", json=body, headers={"Prefer": "respond-async, return=minimal"})
    assert response.status_code == 201
    assert response.headers["preference-applied"] == "return=minimal"
    assert response.json() == {
        "dry_run": False,
        "tasks": [{"id": "b", "status": "PENDING"}, {"id": "a", "status": "QUEUED"}],
    }
    full = client.post("/api/tasks/batch", json=body)
    assert full.status_code == 200  # the same batch again: nothing new
    assert "preference-applied" not in full.headers
    assert full.json()["tasks"][0]["dependencies"] == ["a"]  # the whole task, as by default


def test_a_batch_of_more_than_a_thousand_tasks_is_answered_with_a_summary_unless_asked(
    settings: Settings, redis: Redis
) -> None:
    limited = settings.model_copy(update={"type_limits": {"sleepy": TypeLimits(concurrency=1)}})
    with TestClient(create_app(limited)) as client:
        client.post("/api/tasks", json={"id": "broken", "type": "echo"})
        redis.hset("rq:job:broken", "status", "failed")
        tasks = [
            {"id": f"s{n}", "type": "echo"} | ({"dependencies": [f"s{n - 10}"]} if n >= 10 else {}) for n in range(995)
        ]
        tasks += [
            {"id": "later", "type": "echo", "delay_ms": 60_000},
            {"id": "doomed", "type": "echo", "dependencies": ["broken"]},
            {"id": "limited-1", "type": "sleepy", "payload": {"seconds": 0}},
            {"id": "limited-2", "type": "sleepy", "payload": {"seconds": 0}},
            {"id": "limited-3", "type": "sleepy", "payload": {"seconds": 0}},
            {"id": "last", "type": "echo", "dependencies": ["s994"]},
        ]
        expected = {"QUEUED": 10 + 3, "PENDING": 985 + 1, "SCHEDULED": 1, "CANCELED": 1}
        response = client.post("/api/tasks/batch", json={"tasks": tasks})
        assert response.status_code == 201
        assert "preference-applied" not in response.headers
        assert response.json() == {"dry_run": False, "created": True, "count": 1001, "statuses": expected}
        again = client.post("/api/tasks/batch", json={"tasks": tasks})  # a repeat reads the statuses back
        assert again.status_code == 200
        assert again.json() == {"dry_run": False, "created": False, "count": 1001, "statuses": expected}
        full = client.post("/api/tasks/batch", json={"tasks": tasks}, headers={"Prefer": "return=representation"})
        assert [t["id"] for t in full.json()["tasks"]] == [t["id"] for t in tasks]
        assert full.json()["tasks"][-1]["dependencies"] == ["s994"]
        ids = client.post("/api/tasks/batch", json={"tasks": tasks}, headers={"Prefer": "return=minimal"})
        assert ids.headers["preference-applied"] == "return=minimal"
        assert ids.json()["tasks"][-2:] == [
            {"id": "limited-3", "status": "QUEUED"},
            {"id": "last", "status": "PENDING"},
        ]
        shown = Counter(client.get(f"/api/tasks/{t['id']}").json()["status"] for t in tasks)
        assert shown == expected  # what the summary counted is what the tasks read back as
        a_thousand = client.post("/api/tasks/batch", json={"tasks": [{"type": "echo"} for _ in range(1000)]})
        assert len(a_thousand.json()["tasks"]) == 1000  # up to 1,000: every task, as before


def ndjson(tasks: list[dict[str, Any]]) -> bytes:
    import json

    return b"\n".join(json.dumps(t).encode() for t in tasks) + b"\n"


NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}


def test_an_ndjson_batch_larger_than_a_json_batch_is_stored_whole_and_answered_with_a_summary(
    client: TestClient, redis: Redis
) -> None:
    # 20,000 tasks (twice what a JSON batch may hold), children before their parents.
    tasks = [
        {"id": f"n{i}", "type": "echo"} | ({"dependencies": [f"n{i + 1}"]} if i % 2 == 0 else {}) for i in range(20_000)
    ]
    response = client.post("/api/tasks/batch", content=ndjson(tasks), headers=NDJSON_HEADERS)
    assert response.status_code == 201, response.text[:500]
    assert response.json() == {
        "dry_run": False,
        "created": True,
        "count": 20_000,
        "statuses": {"QUEUED": 10_000, "PENDING": 10_000},
    }
    assert redis.zcard("rqflow:tasks") == 20_000 and redis.llen("rq:queue:default") == 10_000
    again = client.post("/api/tasks/batch", content=ndjson(tasks), headers=NDJSON_HEADERS)
    assert again.status_code == 200 and again.json()["created"] is False
    assert redis.zcard("rqflow:tasks") == 20_000


def test_an_ndjson_batch_with_bad_lines_stores_nothing_and_names_each_line(client: TestClient, redis: Redis) -> None:
    body = (
        b'{"id": "ok-1", "type": "echo"}\n'
        b"\n"  # blank lines are skipped
        b'{"id": "ok-2", "type": "echo", "dependencies": ["ok-1"]}\n'
        b"{not json\n"
        b'{"id": "bad", "type": "echo", "priority": "urgent"}\n'
        b"[1, 2]\n"
        b'{"id": "ok-3", "type": "echo"}'  # no newline at the end
    )
    response = client.post("/api/tasks/batch", content=body, headers=NDJSON_HEADERS)
    problem = assert_problem(response, 422)
    fields = [e["field"] for e in problem["errors"]]
    assert fields[0] == "line 4" and fields[1].startswith("line 5.priority") and fields[2].startswith("line 6")
    assert redis.exists("rq:job:ok-1") == 0 and redis.zcard("rqflow:tasks") == 0


def test_an_ndjson_batch_with_a_cycle_stores_nothing(client: TestClient, redis: Redis) -> None:
    tasks = [{"id": "a", "type": "echo", "dependencies": ["b"]}, {"id": "b", "type": "echo", "dependencies": ["a"]}]
    assert_problem(client.post("/api/tasks/batch", content=ndjson(tasks), headers=NDJSON_HEADERS), 422)
    assert redis.zcard("rqflow:tasks") == 0


def test_an_ndjson_batch_echoes_every_task_when_asked(client: TestClient) -> None:
    tasks = [{"id": "e1", "type": "echo"}, {"id": "e2", "type": "echo", "dependencies": ["e1"]}]
    response = client.post(
        "/api/tasks/batch", content=ndjson(tasks), headers={**NDJSON_HEADERS, "Prefer": "return=representation"}
    )
    assert response.status_code == 201
    assert [(t["id"], t["status"]) for t in response.json()["tasks"]] == [("e1", "QUEUED"), ("e2", "PENDING")]
    dry = client.post(
        "/api/tasks/batch?dry_run=true", content=ndjson([{"id": "e3", "type": "echo"}]), headers=NDJSON_HEADERS
    )
    assert dry.status_code == 200 and dry.json()["dry_run"] is True and dry.json()["count"] == 1
