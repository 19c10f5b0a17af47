"""Task types that exist only in tests (loaded through RQFLOW_TASK_MODULES, as a user's would be)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from app.model import Backoff
from app.registry import TaskContext, task_type


@task_type("echo", max_attempts=1)
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Returns its payload and what it was told about the run."""
    return {"payload": payload, "task_id": ctx.task_id, "attempt": ctx.attempt}


@task_type("flaky", max_attempts=4, backoff=Backoff(initial_ms=0, jitter=False))
def flaky(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Fails until attempt `payload.succeed_on`."""
    if ctx.attempt < int(payload.get("succeed_on", 10**6)):
        raise ValueError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@task_type("sleepy", max_attempts=1, timeout_ms=1000)
def sleepy(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Sleeps `payload.seconds`; its 1 s timeout stops it first when that is longer."""
    time.sleep(float(payload.get("seconds", 0)))
    return "awake"


@task_type("mark", max_attempts=1)
def mark(payload: dict[str, Any], ctx: TaskContext) -> float:
    """Appends `<task id> <start> <end>` to `payload.path`, to check order across processes."""
    start = time.time()
    time.sleep(float(payload.get("seconds", 0)))
    with Path(payload["path"]).open("a") as log:
        log.write(f"{ctx.task_id} {start} {time.time()}\n")
    return start


def plain(**kwargs: Any) -> dict[str, Any]:
    """A plain RQ job function (no task type), for jobs RQ's own Queue and Worker handle end to end."""
    return kwargs


@task_type("crash", max_attempts=2, backoff=Backoff(initial_ms=0, jitter=False))
def crash(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Kills its own process on the attempts listed in `payload.on` (default: the first): by
    `os._exit` or, with `payload.how = "segv"`, a segmentation fault."""
    if ctx.attempt in payload.get("on", [1]):
        if payload.get("how") == "segv":
            import ctypes

            ctypes.string_at(0)
        os._exit(3)
    return os.getpid()


@task_type("meddle", max_attempts=1)
def meddle(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Reports what an earlier task may have left in its process, then leaves some itself: an
    environment variable, a fixed random seed, and `payload.mb` megabytes kept alive."""
    seen = {"env": os.environ.get("RQFLOW_TEST_LEFT"), "random": random.random(), "pid": os.getpid()}
    os.environ["RQFLOW_TEST_LEFT"] = ctx.task_id
    random.seed(42)
    _KEPT.append(bytearray(int(payload.get("mb", 0)) * 1024 * 1024))
    return seen


_KEPT: list[bytearray] = []


@task_type("node_mark", max_attempts=3, backoff=Backoff(initial_ms=0, jitter=False))
def node_mark(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Appends `start <task id> <attempt> <node> <time>` to `payload.path`, sleeps `payload.seconds`,
    then appends the same with `end`: which node ran what, when, and how often (the multi-node tests;
    the node is the worker's TEST_NODE)."""
    node = os.environ.get("TEST_NODE", "?")
    with Path(payload["path"]).open("a") as log:
        log.write(f"start {ctx.task_id} {ctx.attempt} {node} {time.time()}\n")
    time.sleep(float(payload.get("seconds", 0)))
    with Path(payload["path"]).open("a") as log:
        log.write(f"end {ctx.task_id} {ctx.attempt} {node} {time.time()}\n")
    return node
