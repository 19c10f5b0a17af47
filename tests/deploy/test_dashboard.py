"""rq-dashboard, as the Procfile runs it: loopback only, JSON (never unpickles), readable tasks."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from redis import Redis
from starlette.testclient import TestClient

from app.settings import Settings
from deploy.launch import read_procfile
from tests.support import ROOT, free_port, shell_process, wait_until
from workers.worker import TaskSimpleWorker


def fetch(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_the_dashboard_shows_tasks_readably_and_listens_on_loopback(
    client: TestClient, redis: Redis, settings: Settings
) -> None:
    command = read_procfile(ROOT / "Procfile")["dashboard"]
    assert "--bind 127.0.0.1" in command and "--json" in command
    port = free_port()
    command = command.replace("--port 9181", f"--port {port}")
    client.post("/api/tasks", json={"id": "shown", "type": "echo", "payload": {"n": 1}})
    client.post("/api/tasks", json={"id": "queued-one", "type": "data_processing", "priority": "low"})
    assert TaskSimpleWorker(["default"], connection=redis, settings=settings).work(burst=True)
    with shell_process("dashboard", command, str(settings.redis_url), grace_s=20):
        base = f"http://127.0.0.1:{port}/0/data"
        queues = wait_until(lambda: fetch(f"{base}/queues.json"), timeout=30, interval=0.2, what="the dashboard")
        assert {"high", "default", "low"} >= {q["name"] for q in queues["queues"]}
        job = fetch(f"{base}/job/shown.json")
        assert job["description"] == "echo shown"
        assert job["result"] == {"payload": {"n": 1}, "task_id": "shown", "attempt": 1}
        listed = fetch(f"{base}/jobs/low/queued/10/asc/1.json")
        assert [j["description"] for j in listed["jobs"]] == ["data_processing queued-one"]
