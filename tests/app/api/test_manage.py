"""Acting on tasks: cancel, retry, delete, history, and the operations views."""

from __future__ import annotations

from typing import Any

from redis import Redis
from starlette.testclient import TestClient

from app.settings import Settings
from tests.app.api.test_tasks import assert_problem
from tests.support import get_task as get
from tests.support import post_task as post
from workers.worker import TaskSimpleWorker


def events(client: TestClient, task_id: str) -> list[str]:
    return [e["event"] for e in client.get(f"/api/tasks/{task_id}/history").json()]


def test_cancel_takes_a_queued_task_out_and_cascades(client: TestClient, redis: Redis, work: Any) -> None:
    post(client, {"id": "q", "type": "echo"})
    post(client, {"id": "kid", "type": "echo", "dependencies": ["q"]})
    response = client.post("/api/tasks/q/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELED"
    assert response.json()["error"] == {"type": "canceled", "message": "canceled on request"}
    assert redis.llen("rq:queue:default") == 0
    assert get(client, "kid")["status"] == "CANCELED"
    work()
    assert get(client, "q")["attempts"] == 0


def test_cancel_pending_scheduled_and_limited_tasks(client: TestClient, redis: Redis) -> None:
    post(client, {"id": "p", "type": "echo", "priority": "low"})
    post(client, {"id": "pending", "type": "echo", "dependencies": ["p"]})
    post(client, {"id": "timed", "type": "echo", "delay_ms": 600_000})
    for task_id in ("pending", "timed"):
        assert client.post(f"/api/tasks/{task_id}/cancel").json()["status"] == "CANCELED"
    assert redis.zcard("rqflow:held") == 0
    assert_problem(client.post("/api/tasks/timed/cancel"), 409)
    assert_problem(client.post("/api/tasks/ghost/cancel"), 404)


def test_retry_reruns_a_failed_task_and_rearms_its_canceled_dependents(client: TestClient, work: Any) -> None:
    post(client, {"id": "flaky", "type": "flaky", "payload": {"succeed_on": 2}, "max_attempts": 1})
    post(client, {"id": "child", "type": "echo", "dependencies": ["flaky"]})
    post(client, {"id": "grandchild", "type": "echo", "dependencies": ["child"]})
    work()
    assert (get(client, "flaky")["status"], get(client, "child")["status"]) == ("FAILED", "CANCELED")
    retried = client.post("/api/tasks/flaky/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "QUEUED"
    assert (get(client, "child")["status"], get(client, "grandchild")["status"]) == ("PENDING", "PENDING")
    assert get(client, "child")["error"] is None
    work()
    assert {get(client, t)["status"] for t in ("flaky", "child", "grandchild")} == {"COMPLETED"}
    assert get(client, "flaky")["attempts"] == 2  # the count continues


def test_retry_refuses_a_task_whose_parent_still_failed(client: TestClient, work: Any) -> None:
    post(client, {"id": "bad", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1})
    post(client, {"id": "kid", "type": "echo", "dependencies": ["bad"]})
    work()
    problem = assert_problem(client.post("/api/tasks/kid/retry"), 409)
    assert "'bad'" in problem["detail"]
    post(client, {"id": "fine", "type": "echo"})
    assert_problem(client.post("/api/tasks/fine/retry"), 409)


def test_retry_a_canceled_task(client: TestClient, work: Any) -> None:
    post(client, {"id": "c", "type": "echo"})
    client.post("/api/tasks/c/cancel")
    assert client.post("/api/tasks/c/retry").json()["status"] == "QUEUED"
    work()
    assert get(client, "c")["status"] == "COMPLETED"


def test_delete_cancels_then_removes_everything(client: TestClient, redis: Redis, work: Any) -> None:
    post(client, {"id": "gone", "type": "echo"})
    post(client, {"id": "kid", "type": "echo", "dependencies": ["gone"]})
    assert client.delete("/api/tasks/gone").status_code == 204
    assert_problem(client.get("/api/tasks/gone"), 404)
    assert_problem(client.get("/api/tasks/gone/history"), 404)
    assert get(client, "kid")["status"] == "CANCELED"
    assert [t["id"] for t in client.get("/api/tasks").json()] == ["kid"]
    assert redis.keys("*gone*") == []
    post(client, {"id": "done", "type": "echo"})
    work()
    assert client.delete("/api/tasks/done").status_code == 204
    assert_problem(client.delete("/api/tasks/done"), 404)


def test_history_tells_the_whole_story(client: TestClient, work: Any) -> None:
    post(client, {"id": "h", "type": "flaky", "payload": {"succeed_on": 2}})
    work()
    history = client.get("/api/tasks/h/history").json()
    assert [e["event"] for e in history] == ["submitted", "started", "retrying", "queued", "started", "completed"]
    assert history[0]["detail"] == "queued"  # where the submission put it
    retrying = history[2]
    assert retrying["attempt"] == 1 and retrying["error"] == {"type": "ValueError", "message": "attempt 1 fails"}
    assert history[-1]["attempt"] == 2 and history[-1]["worker"]
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)


def test_history_of_failures_and_cancels(client: TestClient, work: Any) -> None:
    post(client, {"id": "f", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1})
    post(client, {"id": "k", "type": "echo", "dependencies": ["f"]})
    work()
    assert events(client, "f") == ["submitted", "started", "failed"]
    assert events(client, "k") == ["submitted", "canceled"]
    assert client.get("/api/tasks/k/history").json()[0]["detail"] == "pending"
    assert client.get("/api/tasks/k/history").json()[-1]["error"]["type"] == "dependency_failed"


def test_history_is_bounded(client: TestClient, redis: Redis) -> None:
    from app import history

    post(client, {"id": "long", "type": "echo"})
    for n in range(300):
        history.record(redis, "rq:job:long", history.EventName.QUEUED, detail=str(n))
    kept = client.get("/api/tasks/long/history").json()
    # The submission (kept with the task itself), then the newest MAX_EVENTS of the rest.
    assert kept[0]["event"] == "submitted"
    assert [e["detail"] for e in kept[1:]] == [str(n) for n in range(300 - history.MAX_EVENTS, 300)]


def test_stats_and_workers(client: TestClient, redis: Redis, settings: Settings, work: Any) -> None:
    post(client, {"id": "a", "type": "echo"})
    post(client, {"id": "b", "type": "echo", "priority": "low", "dependencies": ["a"]})
    post(client, {"id": "c", "type": "echo", "delay_ms": 600_000})
    post(client, {"id": "d", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1})
    stats = client.get("/api/stats").json()
    assert stats["tasks"]["QUEUED"] == 2 and stats["tasks"]["PENDING"] == 1 and stats["tasks"]["SCHEDULED"] == 1
    assert stats["queues"] == {"high": 0, "default": 2, "low": 0}
    work()
    stats = client.get("/api/stats").json()
    assert stats["tasks"]["COMPLETED"] == 2 and stats["tasks"]["FAILED"] == 1
    assert stats["finished_last_minute"] == 3
    worker = TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings, name="w-test")
    worker.register_birth()
    try:
        listed = client.get("/api/workers").json()
        assert [w["name"] for w in listed] == ["w-test"]
        assert listed[0]["queues"] == ["high", "default", "low"]
        assert client.get("/api/stats").json()["workers_alive"] == 1
    finally:
        worker.register_death()


def test_a_task_lists_its_dependents_so_a_graph_is_drawn_both_ways(client: TestClient, redis: Redis) -> None:
    batch = [
        {"id": "root", "type": "echo", "delay_ms": 60_000},
        {"id": "left", "type": "echo", "dependencies": ["root"]},
        {"id": "right", "type": "echo", "dependencies": [{"id": "root", "allow_failure": True}]},
        {"id": "leaf", "type": "echo", "dependencies": ["left", "right"]},
    ]
    client.post("/api/tasks/batch", json={"tasks": batch})
    assert [t["id"] for t in client.get("/api/tasks/root/dependents").json()] == ["left", "right"]
    assert [t["id"] for t in client.get("/api/tasks/left/dependents").json()] == ["leaf"]
    assert client.get("/api/tasks/leaf/dependents").json() == []
    client.delete("/api/tasks/right")
    assert [t["id"] for t in client.get("/api/tasks/root/dependents").json()] == ["left"]
    assert client.get("/api/tasks/nope/dependents").status_code == 404


def test_tasks_are_listed_by_id_prefix_across_pages(client: TestClient) -> None:
    ids = [f"{group}-{n}" for n in range(7) for group in ("order", "mail")]
    client.post("/api/tasks/batch", json={"tasks": [{"id": i, "type": "echo", "delay_ms": 60_000} for i in ids]})
    seen, path = [], "/api/tasks?id_prefix=order-&limit=3"
    while path:
        page = client.get(path)
        seen += [t["id"] for t in page.json()]
        path = page.headers.get("link", "").split(";")[0].strip("<>")
    assert sorted(seen) == sorted(i for i in ids if i.startswith("order-"))
    assert client.get("/api/tasks?id_prefix=order-6").json()[0]["id"] == "order-6"
    assert client.get("/api/tasks?id_prefix=bad%20prefix").status_code == 422


def test_a_list_query_with_a_parameter_it_does_not_know_is_refused(client: TestClient) -> None:
    client.post("/api/tasks", json={"id": "x", "type": "echo"})
    for query in ("stauts=FAILED", "=null", "status=FAILED&limit=5&extra=1"):
        problem = assert_problem(client.get(f"/api/tasks?{query}"), 422)
        assert problem["errors"], query
    assert client.get("/api/tasks?status=QUEUED&limit=5").status_code == 200
