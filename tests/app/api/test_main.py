"""The application around the routes: body limit, API keys, Redis outages, the bind guard."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings
from tests.app.api.test_tasks import assert_problem
from tests.support import ROOT, RedisServer


def test_a_body_over_the_limit_is_a_413_problem(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 200})
    with TestClient(create_app(small)) as client:
        response = client.post("/api/tasks", json={"type": "echo", "payload": {"blob": "x" * 500}})
        assert_problem(response, 413)
        streamed = client.post("/api/tasks", content=iter([b'{"type": "echo", ', b'"payload": {"x": "' + b"y" * 300]))
        assert_problem(streamed, 413)
        assert client.get("/api/tasks").json() == []


def test_api_keys_guard_the_api_but_not_health(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["s3cret", "other"]})
    with TestClient(create_app(keyed)) as client:
        assert_problem(client.get("/api/tasks"), 401)
        assert_problem(client.get("/api/tasks", headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get("/api/tasks", headers={"Authorization": "Bearer other"}).status_code == 200
        created = client.post("/api/tasks", json={"type": "echo"}, headers={"Authorization": "Bearer s3cret"})
        assert created.status_code == 201
        assert client.get("/health").status_code == 200


def test_redis_down_is_a_quick_503_not_a_hang(tmp_path: Path) -> None:
    server = RedisServer.start_new(tmp_path)
    settings = Settings(redis_url=server.url, task_modules=["tests.handlers"])
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/tasks", json={"id": "before", "type": "echo"}).status_code == 201
        server.kill()
        started = time.monotonic()
        for response in (
            client.post("/api/tasks", json={"type": "echo"}),
            client.get("/api/tasks/before"),
            client.get("/health"),
        ):
            assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 10


def test_the_server_refuses_a_public_bind_without_keys() -> None:
    env = {**os.environ, "RQFLOW_HOST": "0.0.0.0", "RQFLOW_API_KEYS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "app.api"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "RQFLOW_API_KEYS" in result.stderr


def test_a_batch_has_a_body_limit_of_its_own(settings: Settings) -> None:
    limits = settings.model_copy(update={"max_body_bytes": 200, "max_batch_body_bytes": 200_000})
    batch = {"tasks": [{"id": f"t{n}", "type": "echo", "payload": {"n": n}} for n in range(1000)]}
    with TestClient(create_app(limits)) as client:
        assert client.post("/api/tasks/batch", json=batch).status_code == 201
        assert_problem(client.post("/api/tasks", json={"type": "echo", "payload": {"blob": "x" * 500}}), 413)
        too_big = {"tasks": [{"type": "echo", "payload": {"blob": "x" * 100_000}} for _ in range(3)]}
        problem = assert_problem(client.post("/api/tasks/batch", json=too_big), 413)
        assert "RQFLOW_MAX_BATCH_BODY_BYTES" in problem["detail"]
        assert len(client.get("/api/tasks?limit=1000").json()) == 1000


def test_every_answer_carries_the_security_headers_and_api_answers_are_not_cached(client: TestClient) -> None:
    for response in (client.get("/api/tasks"), client.get("/health"), client.get("/api/tasks/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert client.get("/api/tasks").headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/health").headers


def test_cors_is_off_unless_origins_are_named(settings: Settings) -> None:
    preflight = {"Origin": "https://console.example.com", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(settings)) as client:
        answer = client.options("/api/tasks", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        assert (
            "access-control-allow-origin"
            not in client.get("/api/tasks", headers={"Origin": preflight["Origin"]}).headers
        )
    named = settings.model_copy(update={"cors_origins": ["https://console.example.com"]})
    with TestClient(create_app(named)) as client:
        answer = client.options("/api/tasks", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://console.example.com"
        other = client.options("/api/tasks", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        listed = client.get("/api/tasks", headers={"Origin": "https://console.example.com"})
        assert "Location" in listed.headers["access-control-expose-headers"]
