"""Operations views: counts by status, queue depths, workers, throughput. Counters and registry
sizes only: nothing here walks the tasks, so it stays fast with any number stored."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from rq.rate_limit import RateLimitRegistry
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import as_text
from rq.worker import Worker

from app import keys
from app.defaults import FINISHED_BUCKET_S, UNREADABLE_SHOWN, WINDOW_S
from app.jobs.job import TaskJob


def stats(connection: Redis) -> dict[str, Any]:
    registries = (
        StartedJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
        FinishedJobRegistry,
        FailedJobRegistry,
        CanceledJobRegistry,
    )
    now = time.time()
    buckets = [keys.finished_bucket(now - n * FINISHED_BUCKET_S) for n in range(WINDOW_S // FINISHED_BUCKET_S)]
    with connection.pipeline(transaction=False) as reads:
        for name in keys.QUEUES:
            reads.llen(f"rq:queue:{name}")
            for registry in registries:
                reads.zcard(registry(name, connection=connection).key)
        reads.zcard(keys.HELD)
        reads.mget(buckets)
        reads.hgetall(keys.REPAIRS)
        raw = reads.execute()
    repairs = {as_text(k): int(v) for k, v in raw.pop().items()}
    per_queue = len(registries) + 1
    depth: dict[str, int] = {}
    totals = [0] * len(registries)
    for n, name in enumerate(keys.QUEUES):
        chunk = raw[n * per_queue : (n + 1) * per_queue]
        depth[name] = int(chunk[0])
        totals = [t + int(c) for t, c in zip(totals, chunk[1:], strict=True)]
    held, finished = int(raw[-2]), sum(int(b) for b in raw[-1] if b)
    started, deferred, retry_wait, completed, failed, canceled = totals
    limited = {r.key: r.get_rate_limited_job_count() for r in RateLimitRegistry.all(connection)}
    return {
        "tasks": {
            "PENDING": deferred,
            "SCHEDULED": held + retry_wait,
            "QUEUED": sum(depth.values()) + sum(limited.values()),
            "RUNNING": started,
            "COMPLETED": completed,
            "FAILED": failed,
            "CANCELED": canceled,
        },
        "queues": depth,
        "waiting_for_limits": limited,
        "workers_alive": Worker.count(connection=connection),
        "finished_last_minute": finished,
        "throughput_per_s": round(finished / WINDOW_S, 3),
        "repairs": repairs,
        "unreadable": unreadable(connection),
    }


def unreadable(connection: Redis) -> dict[str, Any]:
    """Records reads found undecodable and left out of lists (`store.note_unreadable`), with a few
    of their ids. Ones deleted since (or expired) are dropped here, where they are counted."""
    members = sorted(as_text(m) for m in connection.smembers(keys.UNREADABLE))
    if not members:
        return {"count": 0, "records": []}
    with connection.pipeline(transaction=False) as reads:
        for member in members:
            kind, _, record_id = member.partition(":")
            reads.exists(keys.schedule_key(record_id) if kind == "schedule" else TaskJob.key_for(record_id))
        present = reads.execute()
    gone = [m for m, here in zip(members, present, strict=True) if not here]
    if gone:
        connection.srem(keys.UNREADABLE, *gone)
    still = [m for m, here in zip(members, present, strict=True) if here]
    return {"count": len(still), "records": still[:UNREADABLE_SHOWN]}


def workers(connection: Redis) -> list[dict[str, Any]]:
    found = []
    for worker in Worker.all(connection=connection):
        # RQ's execution index: every task the worker runs (an engine worker runs several).
        running = sorted({execution.job_id for execution in worker.get_current_executions()})
        found.append(
            {
                "name": worker.name,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "state": as_text(worker.get_state()) if worker.get_state() else None,
                "queues": worker.queue_names(),
                "current_task": running[0] if running else None,
                "current_tasks": running,
                "successful": worker.successful_job_count,
                "failed": worker.failed_job_count,
                "birth": worker.birth_date.isoformat() if worker.birth_date else None,
                "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
            }
        )
    return found
