"""`python -m bench.engine`: the worker engine, with the Procfile's defaults, next to plain RQ
(SimpleWorker and the forking Worker) and Dramatiq, in one run on one Redis (AOF, fsync always,
as shipped).

1. No-op tasks end to end: rqflow's tasks submitted through `POST /api/tasks/batch` (1,000 a
   request) while the Procfile's `worker` line runs, submission counted; RQ's and Dramatiq's
   enqueued in-process by one client. With Redis commands and round trips per task (commandstats,
   and the replies Redis wrote), rqflow's by command.
2. Tasks that sleep 10 ms, `RQFLOW_CONCURRENCY=16` (Dramatiq: 16 threads a process).
3. A dependency chain: the hop is the time from one task's handler to the next one's (both stamp
   `time.time()` in the handler), so the bookkeeping on both sides of it is counted; the total
   runs from the first handler to the last (the workers' start-up left out).

The machine is noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from app.jobs.job import TaskJob
from bench.__main__ import BIN, api, finished, procfile_processes, save, stopping, submit_batches, workers
from tests.support import ROOT, RedisServer, wait_until

DRAMATIQ = shutil.which("dramatiq", path=str(BIN))
HUEY = shutil.which("huey_consumer", path=str(BIN))


def counters(redis: Redis) -> dict[str, int]:
    """Calls by command, and the replies Redis wrote (one per round trip, pipelines included)."""
    stats = redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    usec = {"usec:" + name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items()}
    return {**calls, **usec, "_round_trips": int(redis.info("stats")["total_writes_processed"])}


def per_task(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    return {k: (after[k] - before.get(k, 0)) / n for k in after if after[k] != before.get(k, 0)}


WARM_UP = 200
"""Tasks run before the clock starts, so that every system is measured warm (an engine worker
with 16 children takes a few seconds to start them on two cores; Dramatiq's threads start at once)."""


def timed(redis: Redis, n: int, submit: Callable[[], None], done: Callable[[], bool]) -> dict[str, Any]:
    before = counters(redis)
    started = time.perf_counter()
    submit()
    submitted = time.perf_counter()
    wait_until(done, timeout=1800, interval=0.01, what="all tasks")
    ended = time.perf_counter()
    spent = per_task(before, counters(redis), n)
    round_trips = spent.pop("_round_trips", 0.0)
    usec = {k.removeprefix("usec:"): spent.pop(k) for k in list(spent) if k.startswith("usec:")}
    spent.pop("info", None)  # the bench's own reads
    usec.pop("info", None)
    return {
        "tasks": n,
        "per_s": n / (ended - started),
        "submit_per_s": n / (submitted - started),
        "commands_per_task": sum(spent.values()),
        "round_trips_per_task": round_trips,
        "by_command": dict(sorted(spent.items(), key=lambda kv: -kv[1])),
        # A command a script or transaction runs counts in its own line and in the script's too.
        "scripts_usec_per_task": sum(usec.get(k, 0.0) for k in ("evalsha", "eval", "exec")),
        "events_metrics_usec_per_task": sum(usec.get(k, 0.0) for k in ("xadd", "hincrby", "hincrbyfloat")),
    }


def env_for(url: str, base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**base, "RQFLOW_REDIS_URL": url, "RQFLOW_TASK_MODULES": "bench.tasks", **extra}


def rqflow(url: str, base: dict[str, str], n: int, task: dict[str, Any], **extra: str) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    env = env_for(url, base, **extra)
    with api(url, env) as port, procfile_processes(url, env, ["worker"]):
        submit_batches(port, WARM_UP, task=task, prefix="warm")
        wait_until(lambda: finished(redis) >= WARM_UP, timeout=120, what="the warm-up")
        return timed(redis, n, lambda: submit_batches(port, n, task=task), lambda: finished(redis) >= n + WARM_UP)


def plain_rq(url: str, base: dict[str, str], n: int, worker_class: str, func: str, *args: Any) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    queue = Queue("default", connection=redis, serializer=JSONSerializer)

    def submit(count: int, prefix: str = "p") -> None:
        for i in range(count):
            queue.enqueue(func, *args, job_id=f"{prefix}{i}")

    with workers(url, worker_class, 2, base):
        submit(WARM_UP, "warm")
        wait_until(lambda: finished(redis) >= WARM_UP, timeout=120, what="the warm-up")
        return timed(redis, n, lambda: submit(n), lambda: finished(redis) >= n + WARM_UP)


@contextmanager
def dramatiq_workers(url: str, base: dict[str, str], threads: int) -> Iterator[None]:
    assert DRAMATIQ is not None
    proc = subprocess.Popen(
        [DRAMATIQ, "bench.peer_dramatiq", "-p", "2", "-t", str(threads)],
        cwd=ROOT,
        env={**base, "BENCH_REDIS_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = Redis.from_url(url)
    with stopping([proc]):
        # Each worker process announces itself with a heartbeat in the broker's namespace.
        wait_until(lambda: redis.zcard("dramatiq:__heartbeats__") >= 2, timeout=60, what="Dramatiq's workers")
        yield


def dramatiq(url: str, base: dict[str, str], n: int, threads: int, actor: str, *args: Any) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    with dramatiq_workers(url, base, threads):
        os.environ["BENCH_REDIS_URL"] = url
        from bench import peer_dramatiq

        send = getattr(peer_dramatiq, actor).send

        def submit(count: int) -> None:
            for _ in range(count):
                send(*args)

        # A message is in the queue's hash from its enqueue to its ack.
        drained = lambda: redis.hlen("dramatiq:default.msgs") == 0  # noqa: E731
        submit(WARM_UP)
        wait_until(drained, timeout=120, what="the warm-up")
        return timed(redis, n, lambda: submit(n), drained)


def huey(
    url: str, base: dict[str, str], n: int, workers: int, task: str, *args: Any, kind: str = "process"
) -> dict[str, Any]:
    """Huey's consumer with `workers` workers of `kind` (process or thread); done when it holds a
    result for every task."""
    assert HUEY is not None
    redis = Redis.from_url(url)
    redis.flushall()
    consumer = subprocess.Popen(
        [HUEY, "bench.peer_huey.huey", "-w", str(workers), "-k", kind, "-q"],
        cwd=ROOT,
        env={**base, "BENCH_REDIS_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with stopping([consumer]):
        os.environ["BENCH_REDIS_URL"] = url
        from bench import peer_huey

        call = getattr(peer_huey, task)

        def submit(count: int) -> None:
            for _ in range(count):
                call(*args)

        results = peer_huey.huey.storage.result_key
        submit(WARM_UP)
        wait_until(lambda: redis.hlen(results) >= WARM_UP, timeout=120, what="Huey's warm-up")
        return timed(redis, n, lambda: submit(n), lambda: redis.hlen(results) >= n + WARM_UP)


def chain(url: str, base: dict[str, str], n: int, plain: bool) -> dict[str, Any]:
    """n tasks, each depending on the one before, all submitted before the workers start."""
    redis = Redis.from_url(url)
    redis.flushall()
    ids = [f"c{i}" for i in range(n)]
    env = env_for(url, base)
    if plain:
        queue = Queue("default", connection=redis, serializer=JSONSerializer)
        for i, job_id in enumerate(ids):
            queue.enqueue("bench.noop.stamp", job_id=job_id, depends_on=ids[i - 1] if i else None)
        run = workers(url, "rq.worker.SimpleWorker", 2, base)
    else:
        with api(url, env) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            tasks = [{"id": job_id, "type": "stamp", "dependencies": ids[i - 1 : i]} for i, job_id in enumerate(ids)]
            conn.request("POST", "/api/tasks/batch", json.dumps({"tasks": tasks}), {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
        run = procfile_processes(url, env, ["worker"])
    with run:
        wait_until(lambda: finished(redis) >= n, timeout=900, interval=0.01, what="the chain")
    # rqflow's tasks through its job class, which reads the return value where the engine keeps it.
    job_class = Job if plain else TaskJob
    stamps = [job_class.fetch(i, connection=redis, serializer=JSONSerializer).return_value() for i in ids]
    hops = sorted((stamps[i + 1] - stamps[i]) * 1000 for i in range(n - 1))
    return {
        "tasks": n,
        "total_s": stamps[-1] - stamps[0],
        "hop_p50_ms": hops[len(hops) // 2],
        "hop_p90_ms": hops[int(len(hops) * 0.9)],
        "hop_p99_ms": hops[int(len(hops) * 0.99)],
    }


def compare(results: dict[str, Any], section: str, runs: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    """Keep a section's runs (key, label, result; rqflow's first, a peer not installed None) and
    print each one's speed, the peers' as a fraction of rqflow's."""
    results[section] = {key: result for key, _, result in runs}
    ours = runs[0][2]
    assert ours is not None
    for n, (_, label, result) in enumerate(runs):
        if result:
            ratio = f"{result['per_s'] / ours['per_s']:>8.2f}x" if n else ""
            print(f"  {label:44}{result['per_s']:>10.1f} tasks/s {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks end to end")
    parser.add_argument("--fork-tasks", type=int, default=1_000, help="no-op jobs for RQ's forking Worker")
    parser.add_argument("--sleep-tasks", type=int, default=5_000, help="10 ms tasks at concurrency 16")
    parser.add_argument("--chain", type=int, default=1_000)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
    base["PYTHONPATH"] = str(ROOT)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"Redis with AOF, appendfsync always; 2 worker processes each; Dramatiq {'present' if DRAMATIQ else 'absent'}, "
        f"Huey {'present' if HUEY else 'absent'}"
    )
    results: dict[str, Any] = {}
    noop = {"type": "data_processing", "duration_ms": 0}
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        url = server.url
        try:
            print(f"\n[{args.tasks} no-op tasks, end to end, submission counted]")
            ours = rqflow(url, base, args.tasks, noop)
            simple = plain_rq(url, base, args.tasks, "rq.worker.SimpleWorker", "bench.noop.noop")
            fork = plain_rq(url, base, args.fork_tasks, "rq.worker.Worker", "bench.noop.noop")
            peer = dramatiq(url, base, args.tasks, 8, "noop") if DRAMATIQ else None
            huey_noop = huey(url, base, args.tasks, 2, "noop") if HUEY else None
            compare(
                results,
                "noop",
                [
                    ("rqflow", "rqflow engine (batch over HTTP)", ours),
                    ("rq_simple", "plain RQ SimpleWorker (enqueue)", simple),
                    ("rq_fork", "plain RQ forking Worker (enqueue)", fork),
                    ("dramatiq", "Dramatiq 2 proc x 8 threads (send)", peer),
                    ("huey", "Huey 2 processes (call)", huey_noop),
                ],
            )
            print("  (ratio: the peer's speed as a fraction of rqflow's)")
            for label, r in [
                ("rqflow", ours),
                ("RQ SimpleWorker", simple),
                ("RQ Worker", fork),
                ("Dramatiq", peer),
                ("Huey", huey_noop),
            ]:
                if r:
                    print(
                        f"  {label:18} {r['commands_per_task']:5.1f} Redis commands, "
                        f"{r['round_trips_per_task']:5.2f} round trips per task"
                    )
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(ours["by_command"].items())[:14])
            print(f"  rqflow by command (per task): {top}")
            print(
                f"  rqflow's events and metrics (XADD, HINCRBY, HINCRBYFLOAT): "
                f"{ours['events_metrics_usec_per_task']:.2f} us of Redis per task, within the "
                f"{ours['scripts_usec_per_task']:.2f} us its scripts and transactions take"
            )

            print(f"\n[{args.sleep_tasks} tasks sleeping 10 ms, RQFLOW_CONCURRENCY=16]")
            sleepy = {"type": "data_processing", "duration_ms": 10}
            ours_sleep = rqflow(url, base, args.sleep_tasks, sleepy, RQFLOW_CONCURRENCY="16")
            simple_sleep = plain_rq(url, base, args.sleep_tasks // 5, "rq.worker.SimpleWorker", "bench.noop.sleep", 10)
            peer_sleep = dramatiq(url, base, args.sleep_tasks, 16, "sleep", 10) if DRAMATIQ else None
            huey_sleep = huey(url, base, args.sleep_tasks, 32, "sleep", 10, kind="thread") if HUEY else None
            compare(
                results,
                "sleep_10ms",
                [
                    ("rqflow", "rqflow engine, 2 workers x 16 children", ours_sleep),
                    ("rq_simple", "plain RQ SimpleWorker x 2", simple_sleep),
                    ("dramatiq", "Dramatiq 2 proc x 16 threads", peer_sleep),
                    ("huey", "Huey 32 threads", huey_sleep),
                ],
            )

            print(f"\n[a chain of {args.chain}: from one handler to the next]")
            ours_chain = chain(url, base, args.chain, plain=False)
            rq_chain = chain(url, base, args.chain, plain=True)
            results["chain"] = {"rqflow": ours_chain, "rq_simple": rq_chain}
            for key in ("hop_p50_ms", "hop_p90_ms", "hop_p99_ms", "total_s"):
                print(
                    f"  {key:12} rqflow {ours_chain[key]:8.2f}   plain RQ SimpleWorker {rq_chain[key]:8.2f}"
                    f"   ({rq_chain[key] / ours_chain[key]:.1f}x rqflow's)"
                )
        finally:
            server.kill()
    save("engine", results)


if __name__ == "__main__":
    main()
