"""`make run`: embedded Redis with AOF, API, workers and scheduler; restarts what dies; stops on
Ctrl-C leaving nothing behind; keeps every task across a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.procs import alive, cmdline, descendants
from tests.support import ROOT, free_port, output_file, wait_until


class Launched:
    def __init__(self, var_dir: Path) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
        self.env.update(
            RQFLOW_PORT=str(self.port),
            RQFLOW_VAR_DIR=str(var_dir),
            RQFLOW_EMBEDDED_REDIS_PORT=str(free_port()),
            RQFLOW_WORKERS="2",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "launch.py")],
            env=self.env,
            cwd=ROOT,
            stdout=output_file("make-run"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self.call("GET", "/health")[0] == 200, timeout=60, interval=0.2, what="the API")

    def stop(self, sig: int) -> None:
        assert self.process is not None
        pids = descendants(self.process.pid)
        self.process.send_signal(sig)
        assert self.process.wait(60) == 0
        wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what="every process to exit")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def task(self, task_id: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/api/tasks/{task_id}")
        assert status == 200, body
        return dict(body)


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Launched]:
    launch = Launched(tmp_path / "var")
    yield launch
    if launch.process and launch.process.poll() is None:
        for pid in descendants(launch.process.pid):
            os.kill(pid, signal.SIGKILL)
        launch.process.kill()
        launch.process.wait()


def test_make_run_serves_restarts_stops_and_keeps_tasks(launched: Launched, tmp_path: Path) -> None:
    launched.start()
    health = launched.call("GET", "/health")[1]
    assert health["redis"]["aof_enabled"] is True
    assert health["redis"]["appendfsync"] == "always"

    # The scenario of the README: B waits for A.
    assert (
        launched.call("POST", "/api/tasks", {"id": "task-A", "type": "data_processing", "duration_ms": 2000})[0] == 201
    )
    assert (
        launched.call("POST", "/api/tasks", {"id": "task-B", "type": "data_processing", "dependencies": ["task-A"]})[0]
        == 201
    )
    assert launched.task("task-B")["status"] == "PENDING"
    wait_until(lambda: launched.task("task-B")["status"] == "COMPLETED", timeout=30, interval=0.1, what="task-B")
    a, b = launched.task("task-A"), launched.task("task-B")
    assert a["status"] == "COMPLETED" and b["started_at"] >= a["finished_at"]

    # A process that dies is restarted.
    assert launched.process is not None
    web = [p for p in descendants(launched.process.pid) if "app.api" in cmdline(p)]
    assert len(web) == 1
    os.kill(web[0], signal.SIGKILL)
    wait_until(
        lambda: (
            [p for p in descendants(launched.process.pid) if "app.api" in cmdline(p) and p != web[0]]  # type: ignore[union-attr]
            and launched.call("GET", "/health")[0] == 200
        ),
        timeout=30,
        interval=0.2,
        what="the API to be restarted",
    )

    # A task still waiting at Ctrl-C is there, still waiting, after the next start.
    assert (
        launched.call("POST", "/api/tasks", {"id": "task-C", "type": "data_processing", "delay_ms": 600_000})[0] == 201
    )
    launched.stop(signal.SIGINT)
    assert launched.call("GET", "/health")[0] == 0

    launched.start()
    assert launched.task("task-A")["status"] == "COMPLETED"
    assert launched.task("task-B")["status"] == "COMPLETED"
    assert launched.task("task-C")["status"] == "SCHEDULED"
    assert (tmp_path / "var" / "appendonlydir").exists() or (tmp_path / "var" / "appendonly.aof").exists()
    launched.stop(signal.SIGTERM)
