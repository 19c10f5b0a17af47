"""The connection rqflow's processes use, reading tasks out of Redis in bulk, and the list
index's member format."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.queue import Queue
from rq.results import Result
from rq.serializers import JSONSerializer

from app import codec, keys
from app.defaults import REDIS_CONNECT_TIMEOUT_S, REDIS_HEALTH_CHECK_S, REDIS_SOCKET_TIMEOUT_S
from app.errors import UnreadableRecord
from app.jobs.job import TaskJob
from app.model import Priority
from app.settings import Settings

log = logging.getLogger(__name__)

Loaded = tuple[TaskJob, Result | None]


CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    "health_check_interval": REDIS_HEALTH_CHECK_S,
}
"""A client that fails fast instead of hanging when Redis is away (requests get a 503, the
scheduler exits and is restarted), and checks a connection idle for a while before using it."""


def connect(settings: Settings) -> Redis:
    return Redis.from_url(settings.effective_redis_url, **CLIENT_OPTIONS)


class WakingQueue(Queue):
    """RQ's queue, ringing the queue's doorbell (app.keys.wake_key) with every push it makes, in
    the same pipeline, so that an idle engine worker starts the task at once."""

    def push_job_id(self, job_id: str, pipeline: Any = None, at_front: bool = False) -> None:
        super().push_job_id(job_id, pipeline=pipeline, at_front=at_front)
        (pipeline if pipeline is not None else self.connection).zadd(keys.wake_key(self.name), {"w": 0})


def connect_async(settings: Settings) -> AsyncRedis:
    """The asyncio twin of `connect`, for what the API runs on its event loop."""
    return AsyncRedis.from_url(settings.effective_redis_url, **CLIENT_OPTIONS)


def queues(connection: Redis) -> dict[Priority, Queue]:
    return {
        p: WakingQueue(p.value, connection=connection, job_class=TaskJob, serializer=JSONSerializer) for p in Priority
    }


def fetch(connection: Redis, task_id: str) -> TaskJob | None:
    """One job without its result (one HGETALL), for operations that only change it."""
    fields = connection.hgetall(TaskJob.key_for(task_id))
    return restored(connection, task_id, fields) if fields else None


def restored(connection: Redis, task_id: str, fields: dict[Any, Any]) -> TaskJob:
    """The job whose hash (HGETALL) is `fields`; UnreadableRecord if RQ cannot restore it."""
    job = TaskJob(task_id, connection=connection)
    try:
        job.restore(fields)
    except codec.DECODE_ERRORS as error:
        raise UnreadableRecord("task", task_id, f"{type(error).__name__}: {error}") from None
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
        try:
            job = restored(connection, task_id, fields)
        except UnreadableRecord as unreadable:
            # Restoring failed before TaskJob could note why: a bare job that carries the reason.
            job = TaskJob(task_id, connection=connection)
            job.unreadable = unreadable.reason
        latest = None
        if results:
            result_id, payload = results[0]
            try:
                latest = Result.restore(
                    task_id, result_id.decode(), payload, connection=connection, serializer=codec.JSONSerializer
                )
            except codec.DECODE_ERRORS as error:
                job.unreadable = job.unreadable or f"its result: {type(error).__name__}: {error}"
        loaded.append((job, latest))
    return loaded


def note_unreadable(connection: Redis, records: Sequence[UnreadableRecord]) -> None:
    """Log the records a list leaves out, and keep them for `/api/stats` (one SADD), so they are
    seen, not just missing."""
    if not records:
        return
    for record in records:
        log.warning("left out of a list: %s", record.detail)
    connection.sadd(keys.UNREADABLE, *(f"{r.kind}:{r.record_id}" for r in records))


INDEX_MEMBER_PATTERN = r"[0-9]{20}:[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
"""What `index_member` makes (a task id is RQ's: letters, digits, `_` and `-`); a list's cursor."""


def index_member(created_at: datetime, task_id: str) -> str:
    """`<created µs>:<id>`: list-index members sort by creation, then id."""
    micros = int(created_at.replace(tzinfo=created_at.tzinfo or timezone.utc).timestamp() * 1_000_000)
    return f"{micros:020d}:{task_id}"
