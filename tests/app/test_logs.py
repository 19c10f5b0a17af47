"""Logs: one JSON object a line with RQFLOW_LOG_FORMAT=json, from the real processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
from redis import Redis

from app import logs
from app.settings import Settings
from deploy.launch import read_procfile
from tests.support import PROCESS_OUTPUT, ROOT, api_process, engine_worker, output_file, wait_until

SECRET = "payload-secret-7f3a"


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_line_carries_the_fields_that_apply_and_the_request_it_was_written_for() -> None:
    record = logging.LogRecord("rqflow", logging.WARNING, __file__, 1, "task %s failed", ("t1",), None)
    record.task_id, record.attempt, record.duration_ms = "t1", 2, 12.5
    token = logs.REQUEST_ID.set("req-9")
    try:
        logs._WithRequestId().filter(record)
    finally:
        logs.REQUEST_ID.reset(token)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "task t1 failed" and line["level"] == "WARNING" and line["logger"] == "rqflow"
    assert (line["task_id"], line["attempt"], line["duration_ms"], line["request_id"]) == ("t1", 2, 12.5, "req-9")
    assert "worker" not in line and "error" not in line
    assert logs.TextFormatter().format(record).endswith("[task_id=t1 attempt=2 duration_ms=12.5 request_id=req-9]")


def test_rqs_line_with_a_jobs_result_does_not_show_it() -> None:
    record = logging.LogRecord("rq.worker", logging.DEBUG, __file__, 1, "Worker %s: result: %r", ("w1", SECRET), None)
    logs._NoResults().filter(record)
    assert record.getMessage() == "Worker w1: result: '<not logged>'"


def test_the_api_logs_json_with_the_request_id_and_no_payload(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "api.log"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    env = {**os.environ, "RQFLOW_TASK_MODULES": "tests.handlers", "RQFLOW_LOG_FORMAT": "json"}
    try:
        with api_process(str(settings.redis_url), env, output=fd) as port:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/api/tasks",
                json={"id": "logged", "type": "echo", "payload": {"token": SECRET}},
                headers={"X-Request-ID": "req-abc-1"},
            )
            assert answer.status_code == 201

            def access_line() -> dict[str, Any] | None:
                return next((line for line in json_lines(out) if line.get("request_id") == "req-abc-1"), None)

            line = wait_until(access_line, timeout=10, what="the request's log line")
    finally:
        os.close(fd)
    assert line["logger"] == "uvicorn.access" and "POST /api/tasks" in line["message"]
    assert SECRET not in out.read_text()


def test_a_worker_logs_a_failed_attempt_as_json_with_its_task(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    from app.jobs.tasks import TaskService
    from app.model import TaskSpec
    from app.registry import load_registry

    service = TaskService(redis, load_registry(settings.task_modules, settings.type_limits), settings.result_ttl_s)
    service.submit(TaskSpec(type="flaky", id="bad", payload={"token": SECRET}, max_attempts=1))
    with engine_worker(str(settings.redis_url), env={"RQFLOW_LOG_FORMAT": "json"}):
        wait_until(lambda: redis.hget("rq:job:bad", "status") == b"failed", timeout=30, what="the task to fail")
        output = [path for path in PROCESS_OUTPUT if "rq-worker" in path.name][-1]
        failed = wait_until(
            lambda: next((line for line in json_lines(output) if line.get("task_id") == "bad"), None),
            timeout=10,
            what="the worker's line about the task",
        )
    assert failed["level"] == "WARNING" and failed["type"] == "flaky" and failed["attempt"] == 1
    assert failed["worker"] and failed["duration_ms"] >= 0 and failed["error"] == "ValueError: attempt 1 fails"
    assert SECRET not in output.read_text()


def test_the_scheduler_logs_json_too(settings: Settings) -> None:
    scheduler = read_procfile(ROOT / "Procfile")["scheduler"]
    env = {
        **os.environ,
        "RQFLOW_REDIS_URL": str(settings.redis_url),
        "RQFLOW_LOG_FORMAT": "json",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        ["/bin/sh", "-c", f"exec {scheduler}"],
        env=env,
        cwd=ROOT,
        stdout=output_file("scheduler"),
        stderr=subprocess.STDOUT,
    )
    try:
        output = [path for path in PROCESS_OUTPUT if "scheduler" in path.name][-1]
        lines = wait_until(
            lambda: [line for line in json_lines(output) if line["logger"].startswith("rq_scheduler")],
            timeout=20,
            what="rq-scheduler's own lines",
        )
    finally:
        process.terminate()
        process.wait(30)
    assert all(line["level"] and line["time"] and line["message"] for line in lines)
