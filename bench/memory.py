"""`python -m bench.memory`: Redis memory per finished task, next to plain RQ's, in one run.

Redis runs with the shipped `deploy/redis.conf`. Each kind of task is submitted through the API
(1,000 a request) and run by the Procfile's workers until every one has finished; the figure is
the growth of Redis's `used_memory` divided by the number of tasks, with `MEMORY USAGE` of each
kind of key it left. Plain RQ's no-op jobs are enqueued in-process and run by RQ's SimpleWorker
(its result stream per job included). Nothing expires during the run: what is measured is what
each finished task costs for as long as it is kept (`RQFLOW_RESULT_TTL_S`).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from app import keys
from app.defaults import EVENT_ENTRIES_KEPT
from bench.__main__ import api, finished, procfile_processes, save, submit_batches, workers
from bench.engine import env_for
from tests.support import RedisServer, wait_until


def settled_memory(redis: Redis) -> int:
    """`used_memory` once the workers' last writes are in (two equal readings a second apart)."""
    last = -1
    while True:
        now = int(redis.info("memory")["used_memory"])
        if abs(now - last) < 4096:
            return now
        last = now
        time.sleep(1)


def by_key_kind(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Keys named after the measured tasks, by kind (the id replaced): count and mean MEMORY USAGE."""
    kinds: dict[str, list[bytes]] = defaultdict(list)
    pattern = re.compile(re.escape(prefix).encode() + rb"\d+")
    for key in redis.scan_iter(match=f"*{prefix}*", count=1000):
        kinds[pattern.sub(b"<id>", key).decode()].append(key)
    return {
        kind: {
            "keys": len(found),
            "bytes_each": sum(redis.memory_usage(k, samples=0) or 0 for k in found[:200]) / len(found[:200]),
            "encoding": redis.object("encoding", found[0]).decode(),
        }
        for kind, found in sorted(kinds.items())
    }


def rqflow(url: str, n: int, task: dict[str, Any], prefix: str) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    env = env_for(url, dict(os.environ))
    with api(url, env) as port, procfile_processes(url, env, ["worker"]):
        submit_batches(port, 100, task=task, prefix="warm")
        wait_until(lambda: finished(redis) >= 100, timeout=120, what="the warm-up")
        before, stream_before = settled_memory(redis), stream_bytes(redis)
        submit_batches(port, n, task=task, prefix=prefix)
        wait_until(lambda: finished(redis) >= n + 100, timeout=600, interval=0.2, what="the tasks")
        after, stream_after = settled_memory(redis), stream_bytes(redis)
    # The event stream is not a cost per task: it keeps about EVENT_ENTRIES_KEPT entries however
    # many tasks run. Until it holds that many (as in a run this short) it grows with every task.
    stream = stream_after - stream_before
    return {
        "tasks": n,
        "bytes_per_task": (after - before - stream) / n,
        "event_stream": {"grew_bytes": stream, "bytes": stream_after, "entries": redis.xlen(keys.EVENTS)},
        "keys": by_key_kind(redis, prefix),
    }


def stream_bytes(redis: Redis) -> int:
    """What the event stream holds, in bytes of Redis (every node counted)."""
    return int(redis.memory_usage(keys.EVENTS, samples=0) or 0)


def plain_rq(url: str, n: int, prefix: str) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    with workers(url, "rq.worker.SimpleWorker", 1, dict(os.environ)):
        for i in range(100):
            queue.enqueue("bench.noop.noop", job_id=f"warm{i}")
        wait_until(lambda: finished(redis) >= 100, timeout=120, what="the warm-up")
        before = settled_memory(redis)
        for i in range(n):
            queue.enqueue("bench.noop.noop", job_id=f"{prefix}{i}")
        wait_until(lambda: finished(redis) >= n + 100, timeout=600, interval=0.2, what="the jobs")
        after = settled_memory(redis)
    return {"tasks": n, "bytes_per_task": (after - before) / n, "keys": by_key_kind(redis, prefix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, {args.tasks} tasks a kind")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        try:
            results["rqflow_noop"] = rqflow(
                server.url, args.tasks, {"type": "data_processing", "duration_ms": 0, "payload": {"n": 1}}, "noop-"
            )
            results["rqflow_retried_once"] = rqflow(server.url, args.tasks, {"type": "fail_once"}, "retried-")
            results["rq_noop"] = plain_rq(server.url, args.tasks, "rq-")
        finally:
            server.kill()
    for name, found in results.items():
        print(f"\n[{name}] {found['bytes_per_task']:,.0f} bytes of used_memory per finished task")
        for kind, key in found["keys"].items():
            print(f"  {key['keys']:>7,} x {kind:<28} {key['encoding']:<10} {key['bytes_each']:>8,.0f} B each")
        if "event_stream" in found:
            stream = found["event_stream"]
            held = stream["bytes"] / max(stream["entries"], 1) * EVENT_ENTRIES_KEPT
            print(
                f"  and the event stream, not counted above: it grew {stream['grew_bytes'] / found['tasks']:,.0f} B "
                f"a task; it keeps about {EVENT_ENTRIES_KEPT:,} entries, {held / 2**20:,.0f} MB at this run's "
                f"{stream['bytes'] / max(stream['entries'], 1):,.0f} B an entry"
            )
    ratio = results["rqflow_noop"]["bytes_per_task"] / results["rq_noop"]["bytes_per_task"]
    print(f"\nrqflow no-op / plain RQ no-op: {ratio:.2f}")
    save("memory", results)


if __name__ == "__main__":
    main()
