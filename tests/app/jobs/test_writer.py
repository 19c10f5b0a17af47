"""JobWriter's packed commands write exactly what the plain commands write."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from rq.job import JobStatus

from app.jobs import store
from app.jobs.bulk import FastTransaction
from app.jobs.factory import Factory, Planned, Shapes
from app.jobs.writer import JobWriter
from app.registry import load_registry
from tests.app.jobs.test_factory import SHAPES


def _write(redis: Redis, packed: bool) -> dict[bytes, Any]:
    """Every shape twice (so the second comes from its template), queued and pending, through a
    JobWriter; then what Redis holds."""
    registry = load_registry(["tests.handlers"])
    shapes = Shapes(Factory(store.queues(redis), result_ttl_s=600), datetime(2026, 3, 1, tzinfo=timezone.utc))
    with FastTransaction.on(redis) as pipe:
        writer = JobWriter(pipe, shapes, packed=packed)
        for name, spec in SHAPES.items():
            for n in range(2):
                task_id = f"{name}-{n}"
                s = replace(spec, id=task_id)
                p = Planned(n, task_id, s, registry.get_type(s.type), s.fingerprint())
                status = JobStatus.DEFERRED if s.dependencies else JobStatus.QUEUED
                writer.add(p, status)
        pipe.execute()
    held: dict[bytes, Any] = {}
    for key in redis.keys("*"):
        kind = redis.type(key)
        held[key] = redis.hgetall(key) if kind == b"hash" else redis.smembers(key)
    redis.flushdb()
    return held


def test_packed_writes_equal_plain_ones(redis: Redis) -> None:
    plain = _write(redis, packed=False)
    assert b"rq:job:dependent-1" in plain and b"rq:job:p1:dependents" in plain
    others = {b"failure-tolerant-0", b"failure-tolerant-1", b"marker-named-0", b"marker-named-1"}
    assert plain[b"rq:job:p1:dependents"] == {b"dependent-0", b"dependent-1", *others}
    assert _write(redis, packed=True) == plain
