"""Logs: one JSON object a line with RQFLOW_LOG_FORMAT=json, from the real processes."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from app import logs
from app.jobs.tasks import TaskService
from app.model import TaskSpec
from app.settings import Settings
from deploy.launch import read_procfile
from tests.support import ROOT, api_process, complete_lines, engine_worker, shell_process, wait_until, worker_process

SECRET = "payload-secret-7f3a"


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in complete_lines(path) if line.strip()]


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
    # At DEBUG every line any code writes is in the file, so the payload is looked for in all of them.
    env = {
        **os.environ,
        "RQFLOW_TASK_MODULES": "tests.handlers",
        "RQFLOW_LOG_FORMAT": "json",
        "RQFLOW_LOG_LEVEL": "DEBUG",
    }
    try:
        with api_process(str(settings.redis_url), env, output=fd) as port:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/api/tasks",
                json={"id": "logged", "type": "echo", "payload": {"token": SECRET}},
                headers={"X-Request-ID": "req-abc-1"},
            )
            assert answer.status_code == 201
            assert SECRET in httpx.get(f"http://127.0.0.1:{port}/api/tasks/logged").text  # answered, not logged

            def access_line() -> dict[str, Any] | None:
                lines = [line for line in json_lines(out) if line.get("request_id") == "req-abc-1"]
                return next((line for line in lines if line["logger"] == "uvicorn.access"), None)

            line = wait_until(access_line, timeout=10, what="the request's log line")
    finally:
        os.close(fd)
    assert "POST /api/tasks" in line["message"]
    assert SECRET not in out.read_text()


def test_a_worker_logs_a_failed_attempt_as_json_with_its_task(
    settings: Settings, redis: Redis, service: TaskService
) -> None:
    service.submit(TaskSpec(type="flaky", id="bad", payload={"token": SECRET}, max_attempts=1))
    service.submit(TaskSpec(type="echo", id="good", payload={"token": SECRET}))  # its result holds it
    env = {"RQFLOW_LOG_FORMAT": "json", "RQFLOW_LOG_LEVEL": "DEBUG"}
    with engine_worker(str(settings.redis_url), env=env) as worker:
        wait_until(lambda: redis.hget("rq:job:bad", "status") == b"failed", timeout=30, what="the task to fail")
        wait_until(lambda: redis.hget("rq:job:good", "status") == b"finished", timeout=30, what="the other to end")
        failed = wait_until(
            lambda: next((line for line in json_lines(worker.output) if line.get("task_id") == "bad"), None),
            timeout=10,
            what="the worker's line about the task",
        )
        good = wait_until(
            lambda: next((line for line in json_lines(worker.output) if line.get("task_id") == "good"), None),
            timeout=10,
            what="the worker's line about the other task",
        )
    # Written at DEBUG only: the level took, so the payload is looked for in the DEBUG lines too.
    assert (good["level"], good["message"]) == ("DEBUG", "task good completed")
    assert failed["level"] == "WARNING" and failed["type"] == "flaky" and failed["attempt"] == 1
    assert failed["worker"] and failed["duration_ms"] >= 0 and failed["error"] == "ValueError: attempt 1 fails"
    assert SECRET not in worker.output.read_text()


def test_rqs_own_worker_at_debug_logs_that_a_task_returned_but_not_what(
    settings: Settings, redis: Redis, service: TaskService
) -> None:
    service.submit(TaskSpec(type="echo", id="echoed", payload={"token": SECRET}))
    env = {"RQFLOW_LOG_FORMAT": "json", "RQFLOW_LOG_LEVEL": "DEBUG"}
    # RQ's loop (not the engine's) writes `Worker %s: result: %r` at DEBUG, here with the payload in
    # it. RQ sets its loggers to its own --logging-level (INFO when not given): RQFLOW_LOG_LEVEL
    # alone lets that line be written.
    with worker_process(str(settings.redis_url), "--burst", env=env) as worker:
        assert worker.wait(60) == 0
    assert redis.hget("rq:job:echoed", "status") == b"finished"
    results = [line for line in json_lines(worker.output) if ": result: " in line["message"]]
    assert [line["logger"] for line in results] == ["rq.worker"]
    assert re.fullmatch(r"Worker \S+: result: '<not logged>'", results[0]["message"]), results[0]
    assert SECRET not in worker.output.read_text()


def test_the_scheduler_logs_json_too(settings: Settings) -> None:
    scheduler = read_procfile(ROOT / "Procfile")["scheduler"]
    env = {"RQFLOW_LOG_FORMAT": "json"}
    with shell_process("scheduler", scheduler, str(settings.redis_url), env=env) as process:
        lines = wait_until(
            lambda: [line for line in json_lines(process.output) if line["logger"].startswith("rq_scheduler")],
            timeout=20,
            what="rq-scheduler's own lines",
        )
    assert all(line["level"] and line["time"] and line["message"] for line in lines)
