"""Three `rqscheduler` processes against one Redis: every fire makes exactly one run, none early."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from app.settings import Settings
from deploy.launch import read_procfile
from tests.support import ROOT, api_time, output_file, wait_until

RUNS = 20


def test_three_schedulers_make_each_run_exactly_once(client: TestClient, settings: Settings) -> None:
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    expected = {f"every-second-{start + timedelta(seconds=k):%Y%m%dT%H%M%S}000Z" for k in range(RUNS)}
    env = {
        **os.environ,
        "RQFLOW_REDIS_URL": str(settings.redis_url),
        "RQFLOW_TASK_MODULES": "tests.handlers",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    procfile = read_procfile(ROOT / "Procfile")
    commands = [procfile["scheduler"]] * 3 + [procfile["worker"]]
    processes = [
        subprocess.Popen(
            ["/bin/sh", "-c", f"exec {c}"], env=env, cwd=ROOT, stdout=output_file("scheduler"), stderr=subprocess.STDOUT
        )
        for c in commands
    ]
    try:
        body = {
            "id": "every-second",
            "interval_s": 1,
            "task": {"type": "echo"},
            "start_at": start.isoformat(),
            "end_at": (start + timedelta(seconds=RUNS - 1)).isoformat(),
        }
        assert client.post("/api/schedules", json=body).status_code == 201

        def finished() -> Any:
            schedule = client.get("/api/schedules/every-second").json()
            tasks = client.get("/api/tasks?schedule_id=every-second&limit=1000").json()
            done = schedule["next_run_at"] is None and all(t["status"] == "COMPLETED" for t in tasks)
            return tasks if done else None

        tasks = wait_until(finished, timeout=RUNS + 30, interval=0.5, what="every run to complete")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    assert {t["id"] for t in tasks} == expected
    assert len(tasks) == RUNS
    assert all(t["attempts"] == 1 for t in tasks)
    assert client.get("/api/schedules/every-second").json()["runs"] == RUNS
    for task in tasks:
        fire = datetime.strptime(task["id"].rsplit("-", 1)[1], "%Y%m%dT%H%M%S000Z").replace(tzinfo=timezone.utc)
        created = api_time(task["created_at"])
        assert created >= fire, f"{task['id']} was made before its time"
