"""`python -m bench`: end-to-end throughput of rqflow (HTTP submit -> COMPLETED) next to plain RQ.

Both runs use the same Redis settings (AOF, appendfsync always, as shipped), the same number of worker
processes of the same class, and the same JSON serializer; the machine is noisy, so compare the
ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from rq.utils import as_text, str_to_date

from tests.support import ROOT, RedisServer, api_process, wait_until

BIN = Path(sys.executable).parent
WORKER_CLASSES = {
    "engine": ("workers.engine.EngineWorker", "rq.worker.SimpleWorker"),
    "fork": ("workers.worker.TaskWorker", "rq.worker.Worker"),
    "simple": ("workers.worker.TaskSimpleWorker", "rq.worker.SimpleWorker"),
}


def commands(redis: Redis) -> int:
    return sum(int(v["calls"]) for v in redis.info("commandstats").values())


def finished(redis: Redis) -> int:
    return sum(int(redis.zcard(f"rq:finished:{q}")) for q in ("high", "default", "low"))


@contextmanager
def stopping(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Terminate the processes on the way out, and wait for each."""
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


@contextmanager
def workers(url: str, worker_class: str, count: int, env: dict[str, str], *flags: str) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            [
                str(BIN / "rq"),
                "worker",
                "-w",
                worker_class,
                "-S",
                "json",
                "--url",
                url,
                *flags,
                "high",
                "default",
                "low",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    redis = Redis.from_url(url)
    with stopping(procs):
        wait_until(lambda: len(redis.smembers("rq:workers")) >= count, timeout=30, what="workers")
        yield


@contextmanager
def api(url: str, env: dict[str, str]) -> Iterator[int]:
    with api_process(url, {**env, "RQFLOW_LOG_LEVEL": "WARNING"}, output=subprocess.DEVNULL) as port:
        yield port


def submit_over_http(port: int, n: int, clients: int) -> None:
    def send(indices: range) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in indices:
            body = json.dumps({"id": f"b{i}", "type": "data_processing", "duration_ms": 0})
            conn.request("POST", "/api/tasks", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"submit failed: {response.status}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, [range(c, n, clients) for c in range(clients)]))


def timed_run(redis: Redis, n: int, submit: Callable[[], None]) -> dict[str, Any]:
    """Submit n tasks with `submit` (workers already running) and time it until all finished."""
    before = commands(redis)
    started = time.perf_counter()
    submit()
    submitted = time.perf_counter()
    wait_until(lambda: finished(redis) >= n, timeout=900, interval=0.01, what="all tasks")
    done = time.perf_counter()
    return {
        "submit_per_s": n / (submitted - started),
        "end_to_end_per_s": n / (done - started),
        "redis_commands_per_task": (commands(redis) - before) / n,
    }


def submit_batches(port: int, n: int, size: int = 1000, task: dict[str, Any] | None = None, prefix: str = "b") -> None:
    """n tasks (no-op unless `task` says) through `POST /api/tasks/batch`, `size` at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    task = task or {"type": "data_processing", "duration_ms": 0}
    for start in range(0, n, size):
        tasks = [{"id": f"{prefix}{i}", **task} for i in range(start, min(start + size, n))]
        headers = {"Content-Type": "application/json", "Prefer": "return=minimal"}
        conn.request("POST", "/api/tasks/batch", json.dumps({"tasks": tasks}), headers)
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"batch submit failed: {response.status}")


def run_rqflow(
    url: str, n: int, worker_class: str, procs: int, clients: int, env: dict[str, str], batches: bool = False
) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    with api(url, env) as port, workers(url, worker_class, procs, env):
        submit = (lambda: submit_batches(port, n)) if batches else (lambda: submit_over_http(port, n, clients))
        return timed_run(redis, n, submit)


def run_plain(url: str, n: int, worker_class: str, procs: int, env: dict[str, str]) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    queue = Queue("default", connection=redis, serializer=JSONSerializer)

    def submit() -> None:
        for i in range(n):
            queue.enqueue("bench.noop.noop", job_id=f"p{i}")

    with workers(url, worker_class, procs, env):
        return timed_run(redis, n, submit)


def hop_latencies(redis: Redis, ids: list[str]) -> list[float]:
    """Per hop of a chain: the child's start minus its parent's end, in ms (RQ's own timestamps)."""
    with redis.pipeline(transaction=False) as reads:
        for job_id in ids:
            reads.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
        times = [(str_to_date(s), str_to_date(e)) for s, e in reads.execute()]
    return [(times[i + 1][0] - times[i][1]).total_seconds() * 1000 for i in range(len(ids) - 1)]


def run_chain(url: str, n: int, worker_class: str, procs: int, env: dict[str, str], plain: bool) -> dict[str, Any]:
    """A chain of n no-op tasks, all submitted first; then the workers start and we time it."""
    redis = Redis.from_url(url)
    redis.flushall()
    ids = [f"c{i}" for i in range(n)]
    if plain:
        queue = Queue("default", connection=redis, serializer=JSONSerializer)
        for i, job_id in enumerate(ids):
            queue.enqueue("bench.noop.noop", job_id=job_id, depends_on=ids[i - 1] if i else None)
    else:
        with api(url, env) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i, job_id in enumerate(ids):
                body = {"id": job_id, "type": "data_processing", "duration_ms": 0, "dependencies": ids[i - 1 : i]}
                conn.request("POST", "/api/tasks", json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                assert response.status == 201, response.status
    started = time.perf_counter()
    with workers(url, worker_class, procs, env):
        wait_until(lambda: finished(redis) >= n, timeout=900, interval=0.01, what="the chain")
        total = time.perf_counter() - started
    hops = sorted(hop_latencies(redis, ids))
    return {"total_s": total, "hop_p50_ms": hops[len(hops) // 2], "hop_p99_ms": hops[int(len(hops) * 0.99)]}


@contextmanager
def procfile_processes(url: str, env: dict[str, str], names: list[str]) -> Iterator[None]:
    from deploy.launch import read_procfile

    procfile = read_procfile(ROOT / "Procfile")
    full_env = {**env, "RQFLOW_REDIS_URL": url, "PATH": f"{BIN}:{os.environ['PATH']}"}
    procs = [
        subprocess.Popen(
            ["/bin/sh", "-c", f"exec {procfile[name]}"],
            env=full_env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in names
    ]
    with stopping(procs):
        yield


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }


def started_minus(redis: Redis, ids: list[str], due: dict[str, float]) -> list[float]:
    with redis.pipeline(transaction=False) as reads:
        for job_id in ids:
            reads.hget(f"rq:job:{job_id}", "started_at")
        starts = [str_to_date(s).timestamp() for s in reads.execute()]
    return [(start - due[job_id]) * 1000 for job_id, start in zip(ids, starts, strict=True)]


def run_lateness(url: str, env: dict[str, str], n: int, spread_s: float) -> dict[str, Any]:
    """n one-off tasks due over `spread_s` seconds, with three schedulers and the Procfile's workers;
    plus an every-second schedule over the same window, to count duplicate runs."""
    redis = Redis.from_url(url)
    redis.flushall()
    with api(url, env) as port, procfile_processes(url, env, ["scheduler", "scheduler", "scheduler", "worker"]):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def post(path: str, body: dict[str, Any]) -> None:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status

        begin = time.time() + 2
        due = {f"late{i}": begin + spread_s * i / n for i in range(n)}
        window_start = datetime.fromtimestamp(math.ceil(begin), tz=timezone.utc)
        fires = int(spread_s)
        post(
            "/api/schedules",
            {
                "id": "tick",
                "interval_s": 1,
                "task": {"type": "data_processing"},
                "start_at": window_start.isoformat(),
                "end_at": (window_start + timedelta(seconds=fires - 1)).isoformat(),
            },
        )
        for job_id, when in due.items():
            post(
                "/api/tasks",
                {
                    "id": job_id,
                    "type": "data_processing",
                    "run_at": datetime.fromtimestamp(when, tz=timezone.utc).isoformat(),
                },
            )
        wait_until(lambda: finished(redis) >= n + fires, timeout=spread_s + 60, interval=0.1, what="all tasks")
        runs = [as_text(m) for m in redis.zrange("rqflow:tasks:schedule:tick", 0, -1)]
    late = started_minus(redis, list(due), due)
    return {
        **percentiles(late),
        "early": sum(1 for v in late if v < 0),
        "schedule_runs": len(runs),
        "schedule_fires": fires,
        "duplicates": len(runs) - len(set(runs)) + max(0, len(runs) - fires),
    }


def run_lateness_plain(url: str, env: dict[str, str], n: int, spread_s: float) -> dict[str, Any]:
    """The same one-off load on plain RQ: enqueue_at, fired by the workers' own scheduler."""
    redis = Redis.from_url(url)
    redis.flushall()
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    begin = time.time() + 2
    due = {f"late{i}": begin + spread_s * i / n for i in range(n)}
    for job_id, when in due.items():
        queue.enqueue_at(datetime.fromtimestamp(when, tz=timezone.utc), "bench.noop.noop", job_id=job_id)
    procs = [
        subprocess.Popen(
            [str(BIN / "rq"), "worker", "--with-scheduler", "-S", "json", "--url", url, "default"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        wait_until(lambda: finished(redis) >= n, timeout=spread_s + 60, interval=0.1, what="all jobs")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    late = started_minus(redis, list(due), due)
    return {**percentiles(late), "early": sum(1 for v in late if v < 0)}


def run_batch_and_listing(
    url: str, env: dict[str, str], batch: int, stored: int, ndjson_tasks: int = 100_000
) -> dict[str, Any]:
    """A `batch`-task DAG submitted over HTTP (server time from the Server-Timing header, and the
    client's wall time), next to plain RQ's `enqueue_many` of the same jobs in-process; then list
    latency with `stored` tasks in Redis."""
    redis = Redis.from_url(url)

    def dag_of(size: int, prefix: str) -> list[dict[str, Any]]:
        # Not a flat list: every task but the first ten depends on the one ten places back.
        return [
            {"id": f"{prefix}{i}", "type": "data_processing", "duration_ms": 0}
            | ({"dependencies": [f"{prefix}{i - 10}"]} if i >= 10 else {})
            for i in range(size)
        ]

    def dag(prefix: str) -> list[dict[str, Any]]:
        return dag_of(batch, prefix)

    def rq_enqueue_many(prefix: str, dependencies: bool) -> float:
        redis.flushall()
        queue = Queue("default", connection=redis, serializer=JSONSerializer)
        jobs = [
            Queue.prepare_data(
                "bench.noop.noop",
                job_id=f"{prefix}{i}",
                depends_on=[f"{prefix}{i - 10}"] if dependencies and i >= 10 else None,
            )
            for i in range(batch)
        ]
        started = time.perf_counter()
        queue.enqueue_many(jobs)
        return time.perf_counter() - started

    result: dict[str, Any] = {"batch_tasks": batch}
    result["rq_flat_s"] = sorted(rq_enqueue_many(f"f{n}-", dependencies=False) for n in range(3))[1]
    # One round: RQ checks each dependent job's parents in a round trip of its own.
    result["rq_dag_s"] = rq_enqueue_many("d-", dependencies=True)
    with api(url, env) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        redis.flushall()
        lines = (json.dumps(task).encode() for task in dag_of(ndjson_tasks, "nd-"))
        started = time.perf_counter()
        conn.request("POST", "/api/tasks/batch", b"\n".join(lines), {"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        summary = json.loads(response.read())
        assert response.status == 201 and summary["count"] == ndjson_tasks, summary
        result["ndjson_tasks"] = ndjson_tasks
        result["ndjson_wall_s"] = time.perf_counter() - started
        result["ndjson_server_s"] = float(response.headers["Server-Timing"].partition("dur=")[2]) / 1000
        forms = (("", {}), ("minimal_", {"Prefer": "return=minimal"}), ("full_", {"Prefer": "return=representation"}))
        for label, headers in forms:
            server, wall = [], []
            for round_ in range(5):
                redis.flushall()
                body = json.dumps({"tasks": dag(f"r{round_}-")}).encode()
                started = time.perf_counter()
                conn.request("POST", "/api/tasks/batch", body, {"Content-Type": "application/json", **headers})
                response = conn.getresponse()
                response.read()
                wall.append(time.perf_counter() - started)
                assert response.status == 201, response.status
                server.append(float(response.headers["Server-Timing"].partition("dur=")[2]) / 1000)
            result[f"batch_{label}server_s"] = sorted(server)[2]
            result[f"batch_{label}wall_s"] = sorted(wall)[2]
        while redis.zcard("rqflow:tasks") < stored:
            body = json.dumps({"tasks": dag(f"fill{redis.zcard('rqflow:tasks')}-")}).encode()
            conn.request("POST", "/api/tasks/batch", body, {"Content-Type": "application/json"})
            conn.getresponse().read()

        def latency(path: str) -> float:
            samples = []
            for _ in range(20):
                begin = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, (path, response.status)
                samples.append((time.perf_counter() - begin) * 1000)
            return sorted(samples)[len(samples) // 2]

        conn.request("GET", "/api/tasks?limit=100")
        first = conn.getresponse()
        first.read()
        next_path = first.headers["Link"].split(";")[0].strip("<>")
        result.update(
            stored=redis.zcard("rqflow:tasks"),
            list_first_page_ms=latency("/api/tasks?limit=100"),
            list_next_page_ms=latency(next_path),
            list_by_type_ms=latency("/api/tasks?type=data_processing&limit=100"),
            list_rare_status_ms=latency("/api/tasks?status=COMPLETED&limit=100"),
            get_one_ms=latency("/api/tasks/r4-5000"),
            stats_ms=latency("/api/stats"),
        )
    return result


def save(name: str, results: dict[str, Any]) -> None:
    """A bench's figures, as JSON, in bench/results/<name>.json."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("RQFLOW_WORKERS", 2)))
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients submitting")
    parser.add_argument("--worker-kind", choices=sorted(WORKER_CLASSES), action="append")
    parser.add_argument("--chain", type=int, default=1000, help="length of the dependency chain")
    parser.add_argument("--timed", type=int, default=200, help="one-off tasks due over --spread seconds")
    parser.add_argument("--spread", type=float, default=20.0)
    parser.add_argument("--only", choices=["throughput", "timing", "manage"], help="run one part")
    parser.add_argument("--batch", type=int, default=10_000, help="tasks in one batch submission")
    parser.add_argument("--stored", type=int, default=100_000, help="tasks stored for the list latency")
    args = parser.parse_args()
    kinds = args.worker_kind or ["engine", "fork", "simple"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{args.tasks} tasks, {args.workers} worker processes, {args.clients} HTTP clients, Redis fsync always"
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        try:
            for kind in kinds if args.only in (None, "throughput") else []:
                ours, theirs = WORKER_CLASSES[kind]
                plain = run_plain(server.url, args.tasks, theirs, args.workers, env)
                flow = run_rqflow(server.url, args.tasks, ours, args.workers, args.clients, env)
                results[kind] = {"rqflow": flow, "rq": plain}
                if kind == "engine":
                    batched = run_rqflow(server.url, args.tasks, ours, args.workers, args.clients, env, batches=True)
                    results[kind]["rqflow_batches"] = batched
                    ratio = batched["end_to_end_per_s"] / plain["end_to_end_per_s"]
                    print(
                        f"\n[engine, submitted through /api/tasks/batch 1000 at a time]: end to end "
                        f"{batched['end_to_end_per_s']:.1f} tasks/s ({ratio:.2f}"
                        f" x plain RQ SimpleWorker), submit {batched['submit_per_s']:.1f} tasks/s, "
                        f"{batched['redis_commands_per_task']:.1f} Redis commands / task"
                    )
                print(f"\n[{kind} workers: {ours} vs {theirs}]")
                print(f"{'':24}{'rqflow':>12}{'plain RQ':>12}{'ratio':>8}")
                for key, label in (
                    ("end_to_end_per_s", "end to end (tasks/s)"),
                    ("submit_per_s", "submit (tasks/s)"),
                    ("redis_commands_per_task", "Redis commands / task"),
                ):
                    print(f"{label:24}{flow[key]:>12.1f}{plain[key]:>12.1f}{flow[key] / plain[key]:>8.2f}")
                chain_plain = run_chain(server.url, args.chain, theirs, args.workers, env, plain=True)
                chain_flow = run_chain(server.url, args.chain, ours, args.workers, env, plain=False)
                results[kind]["chain"] = {"rqflow": chain_flow, "rq": chain_plain}
                print(f"chain of {args.chain}:")
                for key, label in (
                    ("total_s", "total (s)"),
                    ("hop_p50_ms", "hop p50 (ms)"),
                    ("hop_p99_ms", "hop p99 (ms)"),
                ):
                    print(
                        f"{label:24}{chain_flow[key]:>12.2f}{chain_plain[key]:>12.2f}"
                        f"{chain_flow[key] / chain_plain[key]:>8.2f}"
                    )
            if args.only in (None, "manage"):
                manage = run_batch_and_listing(server.url, env, args.batch, args.stored)
                results["manage"] = manage
                print(
                    f"\n[one batch of {manage['batch_tasks']} tasks (a DAG) over HTTP, median of 5]: "
                    f"server time {manage['batch_server_s'] * 1000:.0f} ms with the summary answer (client wall "
                    f"{manage['batch_wall_s'] * 1000:.0f} ms); answering ids and statuses "
                    f"(Prefer: return=minimal) {manage['batch_minimal_server_s'] * 1000:.0f} ms "
                    f"({manage['batch_minimal_wall_s'] * 1000:.0f} ms); every task (return=representation) "
                    f"{manage['batch_full_server_s'] * 1000:.0f} ms ({manage['batch_full_wall_s'] * 1000:.0f} ms)\n"
                    f"[plain RQ enqueue_many of the same jobs, in-process]: "
                    f"{manage['rq_flat_s'] * 1000:.0f} ms flat, {manage['rq_dag_s'] * 1000:.0f} ms as a DAG"
                )
                print(
                    f"[one NDJSON batch of {manage['ndjson_tasks']} tasks (a DAG), summary answer]: server time "
                    f"{manage['ndjson_server_s']:.2f} s (client wall {manage['ndjson_wall_s']:.2f} s)"
                )
                print(f"[with {manage['stored']} tasks stored, median of 20 requests over HTTP]")
                for key in (
                    "list_first_page_ms",
                    "list_next_page_ms",
                    "list_by_type_ms",
                    "list_rare_status_ms",
                    "get_one_ms",
                    "stats_ms",
                ):
                    print(f"{key:24}{manage[key]:>12.1f}")
            if args.only in (None, "timing"):
                plain_late = run_lateness_plain(server.url, env, args.timed, args.spread)
                late = run_lateness(server.url, env, args.timed, args.spread)
                results["lateness"] = {"rqflow": late, "rq": plain_late}
                print(f"\n[{args.timed} one-off tasks due over {args.spread:.0f} s: start minus due time]")
                print(f"{'':24}{'rqflow':>12}{'plain RQ':>12}")
                for key in ("p50_ms", "p99_ms", "max_ms", "min_ms", "early"):
                    print(f"{key:24}{late[key]:>12.1f}{plain_late[key]:>12.1f}")
                print(
                    f"three schedulers, every-second schedule: {late['schedule_runs']} runs for "
                    f"{late['schedule_fires']} fires, {late['duplicates']} duplicates"
                )
        finally:
            server.kill()
    save("throughput", results)


if __name__ == "__main__":
    main()
