"""Finding and killing the processes `make run` started (for crash tests and the chaos run)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

KINDS = {
    "web": "app.api",
    "worker": "worker-pool",
    "scheduler": "rqscheduler",
    "redis": "redis-server",
}


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    children = children_map()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def find(root: int, kind: str) -> list[int]:
    """Pids of one kind among `root`'s descendants; for workers, the pool's worker processes."""
    pids = [p for p in descendants(root) if KINDS[kind] in cmdline(p) and alive(p)]
    if kind == "worker":
        pool = set(pids)
        # The pool's children (the workers) share its command line; skip the pool and horses' children.
        children = children_map()
        return [p for p in pids if any(p in children.get(q, []) for q in pool)]
    return pids


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (a worker with its work-horse: a machine dying)."""
    for target in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
