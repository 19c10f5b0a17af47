"""`python -m bench.chaos --duration 600`: `make run` under fire.

Chains and diamonds of tasks are submitted without pause while, every few seconds, a random
worker, the scheduler, the API or redis-server is killed with SIGKILL (the process manager starts
it again). At the end, once everything has settled, it checks and prints: acknowledged tasks lost
(must be 0), tasks stuck non-terminal (0), dependency-order violations (0), tasks that ran more
than once, and how long the system took to serve a task again after each kill.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from rq.utils import as_text

from app import history, keys
from bench.__main__ import save
from bench.procs import find, kill_tree
from tests.support import ROOT, free_port, wait_until

TERMINAL = {"finished", "failed", "canceled", "stopped"}


@dataclass
class Run:
    port: int
    redis_port: int
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # id -> parents
    recoveries: list[float] = field(default_factory=list)
    recovered: list[tuple[str, float]] = field(default_factory=list)
    """What was killed, and how long until a fresh task completed."""
    kills: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, None
        except (OSError, ValueError):
            return 0, None

    def submit(self, task: dict[str, Any], deadline_s: float = 60) -> bool:
        """POST until acknowledged (ids make it idempotent); True once it was."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            status, _ = self.call("POST", "/api/tasks", task)
            if status in (200, 201):
                self.acknowledged[task["id"]] = [d for d in task.get("dependencies", [])]
                return True
            time.sleep(0.1)
        return False


COMMON = {"type": "data_processing", "max_attempts": 5, "backoff": {"initial_ms": 200, "jitter": True}}


def submitter(run: Run, rng: random.Random, per_s: float) -> None:
    """Submits graphs at about `per_s` tasks a second (below what the workers can do, so the
    backlog stays short and a stuck task stands out)."""
    n = 0
    while not run.stop.is_set():
        n += 1

        def task(name: str, parents: list[str], n: int = n) -> dict[str, Any]:
            return {"id": f"g{n}-{name}", "duration_ms": rng.randint(0, 100), "dependencies": parents, **COMMON}

        if n % 2:
            graph = [task("a", []), task("b", [f"g{n}-a"]), task("c", [f"g{n}-b"])]
        else:
            graph = [task("t", []), task("l", [f"g{n}-t"]), task("r", [f"g{n}-t"]), task("j", [f"g{n}-l", f"g{n}-r"])]
        for item in graph:
            if not run.submit(item):
                return
        time.sleep(len(graph) / per_s)


def recovery(run: Run, label: str) -> float:
    """Seconds from now until a fresh task has been accepted and completed."""
    began = time.monotonic()
    probe = {"id": f"probe-{label}", "type": "data_processing", "max_attempts": 5, "priority": "high"}
    if not run.submit(probe, deadline_s=120):
        return float("inf")

    def done() -> bool:
        status, body = run.call("GET", f"/api/tasks/{probe['id']}/status")
        return status == 200 and body["status"] == "COMPLETED"

    try:
        wait_until(done, timeout=120, interval=0.1, what="the probe")
    except AssertionError:
        return float("inf")
    return time.monotonic() - began


def check(redis: Redis, run: Run) -> dict[str, Any]:
    ids = list(run.acknowledged)
    with redis.pipeline(transaction=False) as reads:
        for task_id in ids:
            reads.hmget(f"rq:job:{task_id}", "status", "rqflow_attempts", keys.FIELD_HISTORY)
        raw = reads.execute()
    status: dict[str, str | None] = {}
    attempts: dict[str, int] = {}
    first_start: dict[str, int] = {}
    last_completed: dict[str, int] = {}
    for n, task_id in enumerate(ids):
        st, att, kept = raw[n]
        status[task_id] = as_text(st) if st else None
        attempts[task_id] = int(att or 0)
        for event in history.decode(kept):
            at = int(event.at.timestamp() * 1000)
            if event.event == "started" and task_id not in first_start:
                first_start[task_id] = at
            if event.event == "completed":
                last_completed[task_id] = at
    violations = [
        (task_id, parent)
        for task_id, parents in run.acknowledged.items()
        for parent in parents
        if task_id in first_start and (parent not in last_completed or first_start[task_id] < last_completed[parent])
    ]
    finite = sorted(r for r in run.recoveries if r != float("inf"))
    return {
        "acknowledged": len(ids),
        "lost": sum(1 for s in status.values() if s is None),
        "stuck": sum(1 for s in status.values() if s is not None and s not in TERMINAL),
        "stuck_sample": sorted((i, s) for i, s in status.items() if s is not None and s not in TERMINAL)[:10],
        "order_violations": len(violations),
        "ran_more_than_once": sum(1 for a in attempts.values() if a > 1),
        "completed": sum(1 for s in status.values() if s == "finished"),
        "failed": sum(1 for s in status.values() if s in ("failed", "stopped")),
        "canceled": sum(1 for s in status.values() if s == "canceled"),
        "kills": run.kills,
        "recovery_p50_s": finite[len(finite) // 2] if finite else None,
        "recovery_p99_s": finite[min(len(finite) - 1, int(len(finite) * 0.99))] if finite else None,
        "recoveries_that_never_came": sum(1 for r in run.recoveries if r == float("inf")),
        "recovery_by_kill": run.recovered,
    }


def run_chaos(
    duration_s: float,
    var_dir: Path,
    seed: int = 1,
    every: tuple[float, float] = (2, 5),
    per_s: float = 20,
    min_kills: int = 0,
) -> dict[str, Any]:
    """Kill a random process every `every` seconds for `duration_s` (and on until `min_kills` kills,
    since waiting for each recovery, a Redis restart above all, can take most of a short run)."""
    rng = random.Random(seed)
    run = Run(port=free_port(), redis_port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
    env.update(
        RQFLOW_PORT=str(run.port),
        RQFLOW_VAR_DIR=str(var_dir),
        RQFLOW_EMBEDDED_REDIS_PORT=str(run.redis_port),
        RQFLOW_WORKERS="2",
        RQFLOW_LOG_LEVEL="WARNING",
    )
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "launch.py")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: run.call("GET", "/health")[0] == 200, timeout=60, interval=0.2, what="make run")
        feeder = threading.Thread(target=submitter, args=(run, rng, per_s), daemon=True)
        feeder.start()
        end = time.monotonic() + duration_s
        n = 0
        while time.monotonic() < end or (n < min_kills and time.monotonic() < end + 120):
            time.sleep(rng.uniform(*every))
            kind = rng.choice(["worker", "worker", "scheduler", "web", "redis"])
            pids = find(launcher.pid, kind)
            if not pids:
                continue
            kill_tree(rng.choice(pids))
            run.kills[kind] = run.kills.get(kind, 0) + 1
            n += 1
            run.recoveries.append(recovery(run, f"{n}-{kind}"))
            run.recovered.append((kind, round(run.recoveries[-1], 2)))
        run.stop.set()
        feeder.join(120)
        redis = Redis(port=run.redis_port, socket_timeout=10)

        def settled() -> bool:
            try:
                report = check(redis, run)
            except OSError:
                return False
            return report["stuck"] == 0

        with contextlib.suppress(AssertionError):  # reported as stuck below
            wait_until(settled, timeout=180, interval=1, what="every task to settle")
        return check(redis, run)
    finally:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(90)
        except subprocess.TimeoutExpired:
            for pid in [*find(launcher.pid, "redis")]:
                kill_tree(pid)
            launcher.kill()


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, nargs=2, default=(2, 5), help="seconds between kills")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as var_dir:
        report = run_chaos(args.duration, Path(var_dir), seed=args.seed, every=tuple(args.every))
    print(json.dumps(report, indent=2))
    save("chaos", report)


if __name__ == "__main__":
    main()
