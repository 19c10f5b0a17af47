"""Test helpers: real redis-server processes, free ports, waiting on conditions with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.embedded import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
"""This virtualenv's commands (rq, rqscheduler, rq-dashboard, rqflow)."""
REDIS_CONF = ROOT / "deploy" / "redis.conf"
T = TypeVar("T")

PROCESS_OUTPUT: dict[Path, int] = {}
"""Files holding the output of the processes the running test started, with this process's
descriptor of each: a failing test shows their tails (tests/conftest.py), so a crash in a worker
is seen, not guessed."""


def output_file(name: str) -> int:
    """A file descriptor for a started process's stdout and stderr, shown if the test fails."""
    return _output(name)[0]


def _output(name: str) -> tuple[int, Path]:
    fd, path = tempfile.mkstemp(prefix=f"rqflow-{name}-", suffix=".log")
    PROCESS_OUTPUT[Path(path)] = fd
    return fd, Path(path)


class Process(subprocess.Popen[bytes]):
    """A process the test started, its stdout and stderr in the file `output` (shown if the test
    fails): a test that reads what its process wrote reads it there."""

    def __init__(self, args: Sequence[str], name: str, **kwargs: Any) -> None:
        fd, self.output = _output(name)
        super().__init__(args, stdout=fd, stderr=subprocess.STDOUT, **kwargs)


def complete_lines(path: Path) -> list[str]:
    """The lines of a file a process may still be writing, only those it has ended with a newline:
    a line caught half-written would not parse."""
    text = path.read_text(errors="replace")
    return text[: text.rfind("\n") + 1].splitlines()


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class RedisServer:
    """A real redis-server on a free loopback port, with its data in `data_dir`."""

    data_dir: Path
    port: int
    appendonly: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start_new(cls, data_dir: Path, appendonly: bool = False) -> RedisServer:
        server = cls(data_dir=data_dir, port=free_port(), appendonly=appendonly)
        server.start()
        return server

    def start(self) -> None:
        # The shipped configuration, with this server's port, address and directory.
        args = [redis_server_binary(), str(REDIS_CONF), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir)]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--save", ""]  # the shipped appendfsync
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url, socket_connect_timeout=0.2)
        wait_until(lambda: _pings(client), timeout=10, what=f"redis-server on port {self.port}")
        client.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(10)

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisConnectionError:
        return False


def rq_worker(
    url: str,
    *flags: str,
    queues: tuple[str, ...] = ("high", "default", "low"),
    env: dict[str, str] | None = None,
    worker_class: str = "workers.worker.TaskWorker",
) -> Process:
    """The standard `rq worker` command with rqflow's worker class, as a process of its own
    (its own session, so that killing its tree takes the work-horse too)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "RQFLOW_TASK_MODULES": "tests.handlers", **(env or {})}
    return Process(
        [str(BIN / "rq"), "worker", "-w", worker_class, "--url", url, *flags, *queues],
        "rq-worker",
        env=full_env,
        cwd=ROOT,
        start_new_session=True,
    )


@contextmanager
def engine_worker(url: str, *flags: str, env: dict[str, str] | None = None) -> Iterator[Process]:
    """The Procfile's default worker class as `rq worker`, killed (with its children) on the way out."""
    with worker_process(url, *flags, env=env, worker_class="workers.engine.EngineWorker") as worker:
        yield worker


@contextmanager
def worker_process(
    url: str, *flags: str, env: dict[str, str] | None = None, worker_class: str = "workers.worker.TaskWorker"
) -> Iterator[Process]:
    """`rq_worker`, killed (with its children) on the way out."""
    from bench.procs import kill_tree

    worker = rq_worker(url, *flags, env=env, worker_class=worker_class)
    try:
        yield worker
    finally:
        # A worker the test stopped and waited for is reaped: its pid may be another process's now.
        if worker.poll() is None:
            kill_tree(worker.pid)
        worker.wait(10)


@contextmanager
def shell_process(
    name: str,
    command: str,
    url: str,
    *,
    env: dict[str, str] | None = None,
    inside: Sequence[str] = (),
    grace_s: float = 30,
) -> Iterator[Process]:
    """`command` (a Procfile line) as `make run` starts it: by a shell, for its $VARIABLES, with
    RQFLOW_REDIS_URL set to `url` and this virtualenv's commands first on PATH, in this process's
    environment and `env`; `inside` goes before the shell (`ip netns exec <ns>`). On the way out
    its process group gets SIGTERM, and SIGKILL if still there after `grace_s` (0: at once)."""
    full_env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RQFLOW_REDIS_URL": url,
        **(env or {}),
    }
    # A session of its own: what the command starts (a pool's workers) is stopped with it.
    process = Process(
        [*inside, "/bin/sh", "-c", f"exec {command}"], name, env=full_env, cwd=ROOT, start_new_session=True
    )
    try:
        yield process
    finally:
        stop_group(process, grace_s)


def stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """Stop a process started in a session of its own, with all it started: SIGTERM and
    `grace_s` to leave, then SIGKILL (at once with no grace). Only while it is not reaped: after,
    its pid (and group id) may be another's."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM if grace_s else signal.SIGKILL)
        try:
            process.wait(grace_s or 10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def api_process(url: str, env: dict[str, str] | None = None, output: int | None = None) -> Iterator[int]:
    """`python -m app.api` (the Procfile's web process) on a free port, in `env` (by default this
    process's, with the test task types); yields the port once /health answers, and stops it on
    the way out."""
    import http.client

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.api"],
        cwd=ROOT,
        stdout=output if output is not None else output_file("api"),
        stderr=subprocess.STDOUT,
        env={
            **(env if env is not None else {**os.environ, "RQFLOW_TASK_MODULES": "tests.handlers"}),
            "PYTHONPATH": str(ROOT),
            "RQFLOW_REDIS_URL": url,
            "RQFLOW_PORT": str(port),
        },
    )

    def up() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    try:
        wait_until(up, timeout=30, what="the API")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def post_task(client: Any, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/api/tasks", json=body)
    assert response.status_code == status, response.text
    return dict(response.json())


def get_task(client: Any, task_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/tasks/{task_id}").json())


def wait_for_status(
    client: Any, task_id: str, status: str, timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Poll the API until the task is in `status`; fail the test at the deadline."""
    wait_until(
        lambda: client.get(f"/api/tasks/{task_id}").json()["status"] == status,
        timeout=timeout,
        interval=interval,
        what=what or f"task {task_id} to be {status}",
    )


def nested_lists(levels: int) -> list[Any]:
    """`levels` lists, each in the one before, the innermost empty (JSON nested that deep)."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text: unlike ==, tells -0.0 from 0 and an integer from the float of its value."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def api_time(stamp: str) -> datetime:
    """A time as the API shows it (RFC 3339 with "Z", which Python 3.10's fromisoformat refuses)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
