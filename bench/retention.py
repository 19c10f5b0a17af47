"""`python -m bench.retention`: trimming a million stored tasks down to RQFLOW_KEEP_FINISHED.

A million tasks are submitted (10,000 a batch, through the same code as the API's batches) and
then marked COMPLETED as the worker engine would leave them (status, end time, a two-event history
and a small result in the job hash, an entry in RQ's finished registry), on the shipped
`deploy/redis.conf` with AOF. Then the workers' retention pass runs, in its steps, until nothing is
left to trim. Reported: the time it took, the longest single step (how long Redis was busy with
one script: no other client waits longer than that), how many tasks were left, and Redis's memory
before and after.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from app import keys
from app.defaults import EVENT_ENTRIES_KEPT
from app.jobs.retention import STATUSES, Retention
from app.jobs.tasks import TaskService
from app.model import TaskSpec
from app.registry import load_registry
from bench.__main__ import save
from bench.memory import stream_bytes
from tests.support import RedisServer

FINISH = """
-- ARGV: now as RQ writes it, its epoch seconds plus the TTL, a history, a result, then ids.
for i = 5, #ARGV do
    local key = 'rq:job:' .. ARGV[i]
    redis.call('HSET', key, 'status', 'finished', 'started_at', ARGV[1], 'ended_at', ARGV[1],
        'worker_name', '0123456789abcdef0123456789abcdef', 'rqflow_attempts', '1',
        'rqflow_history', ARGV[3], 'result', ARGV[4])
    redis.call('ZADD', 'rq:finished:default', tonumber(ARGV[2]), ARGV[i])
end
"""


def populate(redis: Redis, n: int, batch: int = 10_000) -> None:
    service = TaskService(redis, load_registry([], {}), result_ttl_s=604_800)
    finish = redis.register_script(FINISH)
    history = '[1796000000000,"started",1,"0123456789abcdef0123456789abcdef"]\n' * 2
    for start in range(0, n, batch):
        ids = [f"t{i}" for i in range(start, min(start + batch, n))]
        service.submit_batch([TaskSpec(type="data_processing", id=i, payload={"n": 1}) for i in ids])
        at = time.time()
        ended = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(at))
        finish(args=[ended, at + 604_800, history.strip(), '{"processed":true}', *ids])
    redis.delete("rq:queue:default")  # they have run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--keep", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    results: dict[str, Any] = {"tasks": args.tasks, "keep_finished": args.keep}
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        try:
            redis = Redis.from_url(server.url)
            began = time.perf_counter()
            populate(redis, args.tasks)
            results["populate_s"] = time.perf_counter() - began
            results["memory_before_mb"] = redis.info("memory")["used_memory"] / 2**20
            retention = Retention(redis, keys.QUEUES, ["data_processing"], keep_finished=args.keep)
            steps: list[float] = []
            began = time.perf_counter()
            for status in STATUSES:
                while True:
                    step = time.perf_counter()
                    removed = retention.trim(status)
                    steps.append(time.perf_counter() - step)
                    if removed == 0:
                        break
            results["trim_s"] = time.perf_counter() - began
            results["steps"] = len(steps)
            results["longest_step_ms"] = max(steps) * 1000
            results["median_step_ms"] = sorted(steps)[len(steps) // 2] * 1000
            results["left"] = int(redis.zcard("rq:finished:default"))
            results["listed_left"] = int(redis.zcard(keys.TASK_INDEX))
            results["memory_after_mb"] = redis.info("memory")["used_memory"] / 2**20
            # Not trimmed by retention: it keeps about EVENT_ENTRIES_KEPT entries of its own.
            results["event_stream_mb"] = stream_bytes(redis) / 2**20
        finally:
            server.kill()
    print(
        f"{args.tasks:,} COMPLETED tasks stored in {results['populate_s']:.0f} s, "
        f"{results['memory_before_mb']:,.0f} MB of Redis\n"
        f"trimmed to {results['left']:,} ({results['listed_left']:,} in the list index) in "
        f"{results['trim_s']:.1f} s, {results['steps']:,} steps: longest {results['longest_step_ms']:.1f} ms, "
        f"median {results['median_step_ms']:.1f} ms\n"
        f"Redis memory after: {results['memory_after_mb']:,.0f} MB, of which the event stream "
        f"{results['event_stream_mb']:,.0f} MB (it keeps about {EVENT_ENTRIES_KEPT:,} entries)"
    )
    save("retention", results)


if __name__ == "__main__":
    main()
