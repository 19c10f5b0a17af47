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
from app.defaults import (
    FINISHED_BUCKET_S,
    FORECAST_WINDOW_S,
    MEMORY_SAMPLES,
    MEMORY_WARN_FRACTION,
    MEMORY_WARN_FULL_IN_S,
    UNREADABLE_SHOWN,
    WINDOW_S,
)
from app.jobs.job import TaskJob


def stats(connection: Redis) -> dict[str, Any]:
    seen = counts(connection)
    return {
        **seen,
        "unreadable": unreadable(connection),
        "memory": memory(connection),
    }


def counts(connection: Redis) -> dict[str, Any]:
    """Tasks by status, queue lengths, waiting lines, workers, throughput and repairs: a few
    counters and registry sizes (what `/metrics` reads on each scrape)."""
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
    limited = _waiting_for_limits(connection)
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
    }


def sample_memory(connection: Redis) -> None:
    """Keep a reading of Redis's memory (the workers' maintenance pass takes one each time)."""
    used = int(connection.info("memory")["used_memory"])
    with connection.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.MEMORY_SAMPLES, f"{time.time():.3f}:{used}")
        pipe.ltrim(keys.MEMORY_SAMPLES, 0, MEMORY_SAMPLES - 1)
        pipe.execute()


def memory(connection: Redis) -> dict[str, Any]:
    """Redis's memory against its `maxmemory`, the tasks stored, and how long until it is full at
    the growth of the last minutes (None: not growing, no limit, or too few readings yet), for an
    operator to alert on before `noeviction` starts refusing submissions."""
    with connection.pipeline(transaction=False) as reads:
        reads.info("memory")
        reads.zcard(keys.TASK_INDEX)
        reads.lrange(keys.MEMORY_SAMPLES, 0, -1)
        info, stored, raw = reads.execute()
    used, limit = int(info["used_memory"]), int(info.get("maxmemory") or 0) or None
    now = time.time()
    readings = [(float(at), int(size)) for at, size in (as_text(r).split(":") for r in raw)]
    recent = [(at, size) for at, size in readings if now - at <= FORECAST_WINDOW_S]
    growth = None
    if len(recent) >= 2 and recent[0][0] - recent[-1][0] >= 60:
        (newest_at, newest), (oldest_at, oldest) = recent[0], recent[-1]
        growth = (newest - oldest) / (newest_at - oldest_at)
    full_in = (limit - used) / growth if limit and growth and growth > 0 else None
    warnings = []
    if limit and used >= MEMORY_WARN_FRACTION * limit:
        warnings.append(f"Redis uses {used / limit:.0%} of its maxmemory; at 100% it refuses every submission")
    elif full_in is not None and full_in < MEMORY_WARN_FULL_IN_S:
        warnings.append(f"at the growth of the last minutes Redis reaches its maxmemory in {full_in / 3600:.1f} h")
    if limit is None:
        warnings.append("Redis has no maxmemory: it grows until the machine runs out of memory")
    return {
        "used_bytes": used,
        "maxmemory_bytes": limit,
        "used_fraction": round(used / limit, 4) if limit else None,
        "tasks_stored": int(stored),
        "growth_bytes_per_s": round(growth, 1) if growth is not None else None,
        "full_in_s": round(full_in) if full_in is not None else None,
        "warnings": warnings,
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


def _waiting_for_limits(connection: Redis) -> dict[str, int]:
    """For each concurrency limit in use (by its key), how many tasks wait for a slot."""
    limits = RateLimitRegistry.all(connection)
    with connection.pipeline(transaction=False) as reads:
        for limit in limits:
            reads.zcard(limit.rate_limited_key)
        return {limit.key: int(n) for limit, n in zip(limits, reads.execute(), strict=True)}


def limit_load(connection: Redis, waiting: dict[str, int] | None = None) -> dict[str, dict[str, int]]:
    """For each task type with a concurrency limit in use: the slots its tasks hold and how many
    wait for one (RQ's rate limit registries); `waiting` as `counts` found it, not read again."""
    waiting = _waiting_for_limits(connection) if waiting is None else waiting
    with connection.pipeline(transaction=False) as reads:
        for key in waiting:
            reads.zcard(RateLimitRegistry(key, connection=connection).allowed_key)
        holding = reads.execute()
    return {
        key.removeprefix("type:"): {"holding": int(held), "waiting": waiting[key]}
        for key, held in zip(waiting, holding, strict=True)
    }


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
