"""The standard `rq` command line works on rqflow's Redis: `rq worker` runs tasks, `rq info` lists them."""

from __future__ import annotations

import os
import subprocess

from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import BIN, ROOT, output_file, wait_for_status, wait_until

RQ = str(BIN / "rq")


def rq_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "RQFLOW_TASK_MODULES": ",".join(settings.task_modules), "PYTHONPATH": str(ROOT)}


def test_the_standard_rq_worker_command_runs_tasks(client: TestClient, settings: Settings, worker_class: str) -> None:
    client.post("/api/tasks", json={"id": "cli-1", "type": "echo", "payload": {"via": "rq worker"}})
    client.post("/api/tasks", json={"id": "cli-2", "type": "data_processing", "dependencies": ["cli-1"]})
    worker = subprocess.run(
        [
            RQ,
            "worker",
            "--burst",
            "-w",
            worker_class,
            "--url",
            str(settings.redis_url),
            "high",
            "default",
            "low",
        ],
        env=rq_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert worker.returncode == 0, worker.stderr
    tasks = {t["id"]: t for t in client.get("/api/tasks").json()}
    assert tasks["cli-1"]["status"] == "COMPLETED"
    assert tasks["cli-1"]["result"]["payload"] == {"via": "rq worker"}
    assert tasks["cli-2"]["status"] == "COMPLETED"


def test_rq_info_lists_our_queues_and_workers(client: TestClient, settings: Settings, worker_class: str) -> None:
    for n in range(3):
        client.post("/api/tasks", json={"type": "echo", "priority": "low", "name": f"n{n}"})
    client.post("/api/tasks", json={"id": "served", "type": "echo"})
    worker = subprocess.Popen(
        [
            RQ,
            "worker",
            "-w",
            worker_class,
            "--url",
            str(settings.redis_url),
            "--name",
            "cli-w",
            "high",
            "default",
        ],
        env=rq_env(settings),
        cwd=ROOT,
        stdout=output_file("rq-cli"),
        stderr=subprocess.STDOUT,
    )
    try:

        def rq_info(*flags: str) -> str:
            args = [RQ, "info", "--url", str(settings.redis_url), *flags]
            return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout

        wait_until(lambda: "cli-w" in rq_info("--only-workers"), timeout=20, interval=0.2, what="rq info to show it")
        queues = rq_info("--only-queues")
        assert "low          |███ 3" in queues
        wait_for_status(client, "served", "COMPLETED", timeout=20)
    finally:
        worker.terminate()
        worker.wait(20)
