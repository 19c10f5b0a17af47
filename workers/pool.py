"""The engine's children: long-lived processes that run task handlers, one task at a time each.

A child is started with `spawn` (a fresh interpreter: no lock, thread or Redis connection of the
worker comes along), loads the task registry once, and then takes tasks over a pipe: JSON in,
JSON out, never pickle. It never touches Redis; its worker does all the bookkeeping. It dies
with its worker (PR_SET_PDEATHSIG, and the pipe's end), and between tasks it puts back what one
task could leave for the next: the environment, the random seed.

Killing a child is how its worker stops a task (timeout, cancel, shutdown); the worker then
starts another in its place.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import random
import select
import signal
import struct
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from app import codec
from app.jobs.engine import Claimed
from app.model import ErrorType
from app.settings import Settings
from workers.worker import describe_error

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

_HEADER = struct.Struct("!Q")
"""A message's length before it (8 bytes: no size of result is refused on the way)."""


def send_message(fd: int, data: bytes) -> None:
    """One message, in one write where the pipe takes it whole."""
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def receive_message(fd: int) -> bytes:
    """The next message; EOFError once the other end is closed. multiprocessing's Connection
    reads a message's length and the message in two system calls; worker and child take turns
    (a task, its outcome), so nothing of a next message can follow, and one read mostly does."""
    data = os.read(fd, 65536)
    while len(data) < _HEADER.size:
        more = os.read(fd, 65536)
        if not more:
            raise EOFError
        data += more
    (size,) = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    while len(body) < size:
        more = os.read(fd, size - len(body))
        if not more:
            raise EOFError
        body += more
    return body


@dataclass
class Child:
    process: Any
    conn: Connection
    task: Claimed | None = None
    started: float = 0.0
    """When its task started (epoch s)."""
    deadline: float = 0.0
    """When its task overruns its timeout (monotonic)."""
    runs: int = 0
    stopping: str | None = None
    """Why its worker is killing it (ErrorType value, or 'shutdown'), if it is."""
    spent: bool = False
    """Dead or due for recycling: `Pool.replace_spent` puts a new child in its place."""
    ready: bool = False
    """It has loaded the task registry and said so: only then is it given tasks."""


@dataclass(frozen=True)
class Outcome:
    """What a child's task came to: a value (JSON), an error, or the child's death."""

    child: Child
    task: Claimed
    started: float
    ended: float
    result_json: bytes | None = None
    error_type: str | None = None
    message: str = ""
    trace: str = ""


class Pool:
    def __init__(self, settings: Settings) -> None:
        self.size = settings.concurrency
        self.max_tasks = settings.child_max_tasks
        self.max_memory_mb = settings.child_max_memory_mb
        self.settings_json = settings.model_dump_json()
        self.context = multiprocessing.get_context("spawn")
        self.children: list[Child] = []
        self._poller = select.poll()
        self._by_fd: dict[int, Child] = {}

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the children and wait until they are ready (or dead: they get replaced)."""
        self.children = [self._spawn() for _ in range(self.size)]
        deadline = time.monotonic() + timeout_s
        while any(not c.ready and not c.spent for c in self.children) and time.monotonic() < deadline:
            self.wait(deadline - time.monotonic())

    def _spawn(self) -> Child:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=child_main, args=(child_end, self.settings_json), daemon=True, name="rqflow-child"
        )
        process.start()
        child_end.close()
        child = Child(process=process, conn=parent_end)
        for fd in (parent_end.fileno(), process.sentinel):
            self._poller.register(fd, select.POLLIN)
            self._by_fd[fd] = child
        return child

    def _spend(self, child: Child) -> None:
        """Take it out of service: out of the poll (a dead child's pipe would wake it for ever)
        and due for replacement."""
        child.spent = True
        for fd in (child.conn.fileno(), child.process.sentinel):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(fd)
            self._by_fd.pop(fd, None)

    @property
    def idle(self) -> list[Child]:
        return [c for c in self.children if c.task is None and c.ready and not c.spent]

    @property
    def busy(self) -> list[Child]:
        return [c for c in self.children if c.task is not None]

    def run(self, child: Child, task: Claimed) -> None:
        child.task = task
        child.started = time.time()
        child.deadline = time.monotonic() + task.timeout_s if task.timeout_s > 0 else float("inf")
        message = {
            "id": task.id,
            "type": task.task_type,
            "payload": task.payload,
            "duration_ms": task.duration_ms,
            "attempt": task.attempt,
            "max_attempts": task.max_attempts,
        }
        with contextlib.suppress(OSError):  # a dead child: wait() reports it
            send_message(child.conn.fileno(), codec.dumps(message))

    def kill(self, child: Child, why: str) -> None:
        """Stop the child's task by killing the child (from any thread)."""
        child.stopping = why
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            os.kill(child.process.pid, signal.SIGKILL)

    def running(self, task_id: str) -> Child | None:
        return next((c for c in self.children if c.task is not None and c.task.id == task_id), None)

    def wait(self, timeout: float) -> list[Outcome]:
        """The outcomes of tasks that ended within `timeout` (a child that died is marked spent);
        a child that finished starting meanwhile becomes idle.

        One poll object lives as long as the pool, every child's pipe and process sentinel in it:
        multiprocessing's wait() builds a selector of all of them on every call, which with 16
        children cost more than the tasks' own bookkeeping."""
        if not any(not c.spent and (c.task is not None or not c.ready) for c in self.children):
            if timeout > 0:
                time.sleep(timeout)
            return []
        events = self._poller.poll(max(timeout, 0.0) * 1000)
        touched: dict[int, Child] = {}
        piped: set[int] = set()
        """The children whose pipe has something (a message, or its end closed), not only their sentinel."""
        for fd, _ in events:
            child = self._by_fd.get(fd)
            if child is not None:
                touched[id(child)] = child
                if fd == child.conn.fileno():
                    piped.add(id(child))
        outcomes = []
        for child in touched.values():
            if child.spent:
                continue
            if not child.ready:
                with contextlib.suppress(EOFError, OSError):
                    if id(child) in piped:
                        receive_message(child.conn.fileno())  # its one message before any task: "ready"
                        child.ready = True
                        continue
            elif child.task is not None and id(child) in piped:
                outcome = self._receive(child)
                if outcome is not None:
                    outcomes.append(outcome)
                    continue
            if not child.process.is_alive():
                if child.task is not None:
                    outcomes.append(self._died(child))
                else:
                    log.error("a child process died %s", "while starting" if not child.ready else "between tasks")
                    self._spend(child)
        return outcomes

    def _receive(self, child: Child) -> Outcome | None:
        try:
            header, _, result_json = receive_message(child.conn.fileno()).partition(b"\n")
        except (EOFError, OSError):
            return None
        reply = codec.loads(header)
        task = child.task
        assert task is not None
        ended = time.time()
        child.task = None
        child.runs += 1
        if child.runs >= self.max_tasks or int(reply.get("rss_mb", 0)) >= self.max_memory_mb:
            self._spend(child)
        if reply.get("ok"):
            return Outcome(child, task, child.started, ended, result_json=result_json)
        return Outcome(
            child,
            task,
            child.started,
            ended,
            error_type=str(reply.get("type") or "error"),
            message=str(reply.get("message") or ""),
            trace=str(reply.get("trace") or ""),
        )

    def _died(self, child: Child) -> Outcome:
        task = child.task
        assert task is not None
        why = child.stopping
        child.process.join(timeout=1)
        code = child.process.exitcode
        child.task = None
        self._spend(child)
        if why == ErrorType.TIMEOUT.value:
            message = f"task exceeded its timeout of {task.timeout_s} s"
        elif why is not None:
            message = why
        else:
            why = ErrorType.WORKER_LOST.value
            message = f"the process running it died (exit code {code})"
        return Outcome(child, task, child.started, time.time(), error_type=why, message=message)

    def replace_spent(self) -> None:
        """New children in the places of the dead and the retired. The worker calls it after it
        has written what their tasks came to, so that starting an interpreter never delays the
        end of a task (a cancel shows within a second however loaded the machine)."""
        for index, child in enumerate(self.children):
            if child.spent:
                with contextlib.suppress(OSError):
                    child.conn.close()
                child.process.join(timeout=0)  # a retired child exits when its pipe closes
                self.children[index] = self._spawn()

    def overdue(self) -> list[Child]:
        now = time.monotonic()
        return [c for c in self.busy if c.deadline <= now and c.stopping is None]

    def close(self) -> None:
        for child in self.children:
            with contextlib.suppress(OSError):
                child.conn.close()
        deadline = time.monotonic() + 2
        for child in self.children:
            child.process.join(timeout=max(deadline - time.monotonic(), 0))
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout=1)
        self.children = []


def child_main(conn: Connection, settings_json: str) -> None:
    """A child's life: load the registry, then run one task per message until the pipe closes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        return  # the worker died before this child got going
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the worker's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from app.registry import load_registry
    from workers import entry

    settings = Settings.model_validate_json(settings_json)
    entry.install(load_registry(settings.task_modules, settings.type_limits), settings)
    environment = dict(os.environ)
    # os.environ's own comparison decodes every variable (17 us a task); its underlying dict of
    # bytes compares in well under one.
    raw_environ: dict[bytes, bytes] = getattr(os.environ, "_data", {})
    raw_saved = dict(raw_environ)
    resident = _Resident()
    fd = conn.fileno()
    try:
        send_message(fd, b"ready")
    except OSError:
        return
    while True:
        try:
            message = codec.loads(receive_message(fd))
        except (EOFError, OSError):
            return
        reply, result_json = _run(message)
        # What one task may leave behind for the next.
        if raw_environ != raw_saved or not raw_saved:
            os.environ.clear()
            os.environ.update(environment)
        random.seed(int.from_bytes(os.urandom(8), "little"))
        reply["rss_mb"] = resident.mb()
        # A header line, then the result's JSON as it goes into Redis (encoded once, here).
        try:
            send_message(fd, codec.dumps(reply) + b"\n" + result_json)
        except OSError:
            return


def _run(message: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    from workers import entry

    try:
        result = entry.call(
            message["id"],
            message["type"],
            message["payload"],
            message.get("duration_ms"),
            int(message["attempt"]),
            message.get("max_attempts"),
        )
        # RQ's JSON serializer, as the other workers store results (app.codec: what JSON cannot
        # hold is shown as text).
        return {"ok": True}, codec.dumps(result)
    except Exception as error:
        error_type, text = describe_error(error)
        return {"ok": False, "type": error_type, "message": text, "trace": traceback.format_exc()}, b""


class _Resident:
    """The child's resident memory now, read from a /proc file kept open (1 us; opening it for
    every task took 11). Not getrusage's peak: on Linux that survives exec, so a child would
    report the peak of the worker it was forked from."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        try:
            self.fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self.fd = None

    def mb(self) -> int:
        if self.fd is None:
            return 0
        try:
            return int(os.pread(self.fd, 64, 0).split()[1]) * self.page // (1024 * 1024)
        except (OSError, ValueError, IndexError):
            return 0
