"""`python -m bench.dag`: dependency hops on a wide DAG with many workers, next to plain RQ.

A DAG of `layers` x `width` tasks, each depending on two tasks of the layer before, every task
sleeping `duration` ms, run by `workers` forking worker processes. Per dependency hop (a child and
the last of its parents to end), from the jobs' own timestamps:
- release: the child's enqueued_at minus that parent's ended_at (how fast the end frees the child);
- start: the child's started_at minus that parent's ended_at (adds the wait for a free worker).
A child that two parents end at once must not wait for a maintenance pass: `stalled` counts
releases over one second.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Dependency
from rq.serializers import JSONSerializer
from rq.utils import str_to_date

from app.jobs.tasks import TaskService
from app.model import Edge, TaskSpec
from app.registry import load_registry
from app.settings import Settings
from bench.__main__ import WORKER_CLASSES, workers
from tests.support import ROOT, RedisServer


def wide_dag(layers: int, width: int) -> dict[str, list[str]]:
    """Task id -> parent ids, parents first: task i of a layer depends on tasks i and i+1 before it."""
    parents: dict[str, list[str]] = {}
    for layer in range(layers):
        for i in range(width):
            up = [f"L{layer - 1}-{i}", f"L{layer - 1}-{(i + 1) % width}"] if layer else []
            parents[f"L{layer}-{i}"] = up
    return parents


def submit_rqflow(redis: Redis, dag: dict[str, list[str]], duration_ms: int) -> None:
    service = TaskService(redis, load_registry([], {}), result_ttl_s=3600)
    specs = [
        TaskSpec(type="data_processing", id=task_id, duration_ms=duration_ms, dependencies=tuple(map(Edge, ups)))
        for task_id, ups in dag.items()
    ]
    service.submit_batch(specs)


def submit_plain(redis: Redis, dag: dict[str, list[str]], duration_ms: int) -> None:
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    for task_id, ups in dag.items():
        queue.enqueue("bench.noop.sleep", duration_ms, job_id=task_id, depends_on=Dependency(ups) if ups else None)


def unfinished(redis: Redis, ids: list[str]) -> int:
    with redis.pipeline(transaction=False) as reads:
        for task_id in ids:
            reads.hget(f"rq:job:{task_id}", "status")
        return sum(1 for s in reads.execute() if s not in (b"finished", b"failed", b"canceled"))


def hops(redis: Redis, dag: dict[str, list[str]]) -> dict[str, list[float]]:
    """Release and start latency (ms) of every child, from its last parent's end."""
    with redis.pipeline(transaction=False) as reads:
        for task_id in dag:
            reads.hmget(f"rq:job:{task_id}", "enqueued_at", "started_at", "ended_at")
        rows = reads.execute()
    times = {task_id: [str_to_date(t) if t else None for t in row] for task_id, row in zip(dag, rows, strict=True)}
    release, start = [], []
    for task_id, ups in dag.items():
        enqueued, started, _ = times[task_id]
        if not ups or started is None or any(times[p][2] is None for p in ups):
            continue  # a root, or a hop that never happened before the deadline
        last_end = max(times[p][2] for p in ups)
        release.append((enqueued - last_end).total_seconds() * 1000)
        start.append((started - last_end).total_seconds() * 1000)
    return {"release": sorted(release), "start": sorted(start)}


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {
        "p50_ms": values[len(values) // 2],
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max_ms": values[-1],
    }


def run(
    url: str,
    env: dict[str, str],
    *,
    plain: bool,
    procs: int,
    layers: int,
    width: int,
    duration_ms: int,
    deadline_s: float,
) -> dict[str, Any]:
    """One run; tasks not finished by `deadline_s` are counted, and their hops left out."""
    redis = Redis.from_url(url)
    redis.flushall()
    dag = wide_dag(layers, width)
    ours, theirs = WORKER_CLASSES["fork"]
    # Plain RQ's maintenance (which rescues what its release step skipped) every 10 s, as rqflow's.
    flags = ("--maintenance-interval", str(Settings().maintenance_s)) if plain else ()
    with workers(url, theirs if plain else ours, procs, env, *flags):
        started = time.perf_counter()
        (submit_plain if plain else submit_rqflow)(redis, dag, duration_ms)
        deadline = started + deadline_s
        while unfinished(redis, list(dag)) and time.perf_counter() < deadline:
            time.sleep(0.05)
        total = time.perf_counter() - started
        left = unfinished(redis, list(dag))
    measured = hops(redis, dag)
    return {
        "total_s": total,
        "unfinished": left,
        "release": summary(measured["release"]),
        "start": summary(measured["start"]),
        "stalled": sum(1 for ms in measured["release"] if ms > 1000),
        "hops": len(measured["release"]),
    }


def report(flow: dict[str, Any], plain: dict[str, Any], procs: int, layers: int, width: int, duration_ms: int) -> None:
    """Both runs side by side."""
    print(
        f"\n[wide DAG: {layers} layers of {width}, two parents each, {duration_ms} ms tasks, "
        f"{procs} forking workers; per hop from the last parent's end]"
    )
    print(f"{'':24}{'rqflow':>12}{'plain RQ':>12}")
    print(f"{'total (s)':24}{flow['total_s']:>12.2f}{plain['total_s']:>12.2f}")
    for kind in ("release", "start"):
        for key in ("p50_ms", "p99_ms", "max_ms"):
            print(f"{kind + ' ' + key:24}{flow[kind][key]:>12.1f}{plain[kind][key]:>12.1f}")
    print(f"{'stalled > 1 s':24}{flow['stalled']:>12}{plain['stalled']:>12}")
    print(f"{'hops measured':24}{flow['hops']:>12}{plain['hops']:>12}")
    print(f"{'unfinished at deadline':24}{flow['unfinished']:>12}{plain['unfinished']:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--duration", type=int, default=50, help="ms each task sleeps")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds each run may take")
    parser.add_argument("--only", choices=["rqflow", "rq"])
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    shape = {"procs": args.workers, "layers": args.layers, "width": args.width, "duration_ms": args.duration}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        try:
            flow = run(server.url, env, plain=False, deadline_s=args.deadline, **shape) if args.only != "rq" else None
            plain = (
                run(server.url, env, plain=True, deadline_s=args.deadline, **shape) if args.only != "rqflow" else None
            )
        finally:
            server.kill()
    if flow and plain:
        report(flow, plain, **shape)
    else:
        print(flow or plain)


if __name__ == "__main__":
    main()
