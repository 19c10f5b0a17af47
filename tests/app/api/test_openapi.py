"""The published contract: every route is in it, and what the routes answer is what it says."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from redis import Redis
from starlette.routing import Route
from starlette.testclient import TestClient

from app.api.main import create_app
from app.api.openapi import OPERATIONS
from app.api.routes import ROUTES
from app.api.schemas import (
    BatchOut,
    BatchSummaryOut,
    EventOut,
    ProblemOut,
    ScheduleOut,
    TaskOut,
    TaskStatusOut,
    TypeOut,
)
from app.settings import Settings
from workers.engine import EngineWorker

CONTRACT = {"/openapi.json", "/docs"}


def test_every_route_is_in_the_document_and_nothing_else_is(client: TestClient, settings: Settings) -> None:
    routes = {(r.path, m.lower()) for r in ROUTES if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    assert {key for key in routes if key[0] not in CONTRACT} == set(OPERATIONS)
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {(p, m) for p, methods in doc["paths"].items() for m in methods} == set(OPERATIONS)
    with TestClient(create_app(settings.model_copy(update={"api_keys": ["k"]}))) as keyed:
        keyed_doc = keyed.get("/openapi.json").json()
    for (path, method), operation in ((k, doc["paths"][k[0]][k[1]]) for k in OPERATIONS):
        keyed_operation = keyed_doc["paths"][path][method]
        if path.startswith("/api/"):
            # Without keys no operation answers 401 or 403, nor asks for a key; with keys each does.
            assert {"401", "403"}.isdisjoint(operation["responses"]) and operation["security"] == []
            assert {"401", "403", "429", "503"} <= set(keyed_operation["responses"]), (path, method)
            assert "security" not in keyed_operation
            assert "RateLimit" in operation["responses"]["429"]["headers"]
            assert "Retry-After" in operation["responses"]["429"]["headers"]
    # A task's type is one of the registered types.
    assert "echo" in doc["components"]["schemas"]["TaskIn"]["properties"]["type"]["enum"]
    created = doc["paths"]["/api/tasks"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskOut"}
    assert "Location" in created["headers"]
    assert "Link" in doc["paths"]["/api/tasks"]["get"]["responses"]["200"]["headers"]
    # Every reference points at a schema the document has.
    text = client.get("/openapi.json").text
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in doc["components"]["schemas"], name


def test_the_reference_page_shows_every_operation_and_fetches_nothing(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path, method in OPERATIONS:
        assert f"<span class=m>{method}</span> <code>{path}</code>" in page.text
    assert "<script" not in page.text and "://" not in page.text  # nothing to run, nothing fetched


def check(model: Any, body: Any) -> None:
    TypeAdapter(model).validate_python(body)


def test_what_the_routes_answer_is_what_the_document_says(client: TestClient, redis: Redis, settings: Settings) -> None:
    check(TaskOut, client.post("/api/tasks", json={"id": "a", "type": "echo", "payload": {"n": 1}}).json())
    check(
        TaskOut,
        client.post(
            "/api/tasks", json={"id": "b", "type": "echo", "dependencies": [{"id": "a", "allow_failure": True}]}
        ).json(),
    )
    check(TaskOut, client.post("/api/tasks", json={"id": "c", "type": "echo", "run_at": "2099-01-01T00:00:00Z"}).json())
    bad = {"id": "f", "type": "data_processing", "payload": {"fail": True}, "max_attempts": 1}
    check(BatchOut, client.post("/api/tasks/batch", json={"tasks": [bad]}).json())
    check(
        BatchOut,
        client.post(
            "/api/tasks/batch", json={"tasks": [{"type": "echo"}]}, headers={"Prefer": "return=minimal"}
        ).json(),
    )
    ndjson = b'{"type": "echo"}\n{"type": "echo"}\n'
    check(
        BatchSummaryOut,
        client.post("/api/tasks/batch", content=ndjson, headers={"Content-Type": "application/x-ndjson"}).json(),
    )
    check(TaskOut, client.put("/api/tasks/c", json={"priority": "high"}).json())
    check(TaskOut, client.post("/api/tasks/c/cancel").json())
    check(TaskOut, client.post("/api/tasks/c/retry").json())
    EngineWorker(["high", "default", "low"], connection=redis, settings=settings).work(burst=True)
    for task_id in ("a", "b", "f"):
        check(TaskOut, client.get(f"/api/tasks/{task_id}").json())
        check(list[EventOut], client.get(f"/api/tasks/{task_id}/history").json())
        check(TaskStatusOut, client.get(f"/api/tasks/{task_id}/status").json())
    listed = client.get("/api/tasks", params={"limit": 2})
    check(list[TaskOut], listed.json())
    assert listed.headers["link"].endswith('rel="next"')
    check(list[TypeOut], client.get("/api/types").json())
    schedule = client.post(
        "/api/schedules", json={"id": "s", "cron": "*/5 * * * *", "timezone": "Europe/Paris", "task": {"type": "echo"}}
    )
    check(ScheduleOut, schedule.json())
    check(list[ScheduleOut], client.get("/api/schedules").json())
    for problem in (
        client.get("/api/tasks/nope"),
        client.post("/api/tasks", json={"type": 1}),
        client.post("/api/tasks", content=b"{"),
    ):
        check(ProblemOut, problem.json())
