"""Reading tasks out of Redis in bulk, and the list index's member format."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from redis import Redis
from rq.queue import Queue
from rq.results import Result
from rq.serializers import JSONSerializer

from app.job import TaskJob
from app.model import Priority

Loaded = tuple[TaskJob, Result | None]


def queues(connection: Redis) -> dict[Priority, Queue]:
    return {p: Queue(p.value, connection=connection, job_class=TaskJob, serializer=JSONSerializer) for p in Priority}


def fetch(connection: Redis, task_id: str) -> TaskJob | None:
    """One job without its result (one HGETALL), for operations that only change it."""
    fields = connection.hgetall(TaskJob.key_for(task_id))
    return restored(connection, task_id, fields) if fields else None


def restored(connection: Redis, task_id: str, fields: dict[Any, Any]) -> TaskJob:
    """The job whose hash (HGETALL) is `fields`."""
    job = TaskJob(task_id, connection=connection)
    job.restore(fields)
    return job


def load(connection: Redis, ids: Sequence[str]) -> list[Loaded | None]:
    """Each job with its newest RQ result (None for a missing job), in one round trip."""
    with connection.pipeline(transaction=False) as reads:
        for task_id in ids:
            reads.hgetall(TaskJob.key_for(task_id))
            reads.xrevrange(Result.get_key(task_id), "+", "-", count=1)
        raw = reads.execute()
    loaded: list[Loaded | None] = []
    for n, task_id in enumerate(ids):
        fields, results = raw[2 * n], raw[2 * n + 1]
        if not fields:
            loaded.append(None)
            continue
        job = restored(connection, task_id, fields)
        latest = None
        if results:
            result_id, payload = results[0]
            latest = Result.restore(
                task_id, result_id.decode(), payload, connection=connection, serializer=JSONSerializer
            )
        loaded.append((job, latest))
    return loaded


def index_member(created_at: datetime, task_id: str) -> str:
    """`<created µs>:<id>`: list-index members sort by creation, then id."""
    micros = int(created_at.replace(tzinfo=created_at.tzinfo or timezone.utc).timestamp() * 1_000_000)
    return f"{micros:020d}:{task_id}"


@lru_cache(maxsize=256)
def iso(at: datetime) -> str:
    """RFC 3339 in UTC to the millisecond. Cached: the tasks of one batch share their times."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
