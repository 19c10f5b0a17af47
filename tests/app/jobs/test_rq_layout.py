"""What rqflow writes into Redis is what RQ itself writes for the same job: the job hash, the queue,
the registries, the dependency sets, the result. rqflow leans on that layout (its Lua, its bulk
writes, its reads); an RQ upgrade that changes it fails here, not in a production queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker
from starlette.testclient import TestClient

from app import keys
from app.jobs.job import RESULT_FIELD, TaskJob
from app.settings import Settings
from workers.engine import EngineWorker
from workers.worker import TaskSimpleWorker

OWN_FIELDS = {keys.FIELD_ATTEMPTS, keys.FIELD_ERROR, keys.FIELD_FINGERPRINT, keys.FIELD_SPEC, keys.FIELD_HISTORY}
"""What rqflow adds to RQ's job hash (keys.py)."""

PER_JOB = {
    "created_at",
    "enqueued_at",
    "started_at",
    "ended_at",
    "last_heartbeat",
    "data",
    "description",
    "worker_name",
}
"""Fields whose values name the job or the moment, not the layout: only their presence is compared."""

FALSE_WHEN_ABSENT = {"allow_dependency_failures", "enqueue_at_front"}
"""Flags RQ reads as false when absent; RQ writes them "0" for a `Dependency` object (as rqflow
builds) and leaves them out for a bare `depends_on` id."""

PLAIN = "plain"
"""The queue RQ's own jobs go to, so that each worker runs only its own kind."""


def job_hash(redis: Redis, job_id: str) -> dict[str, bytes]:
    return {k.decode(): v for k, v in redis.hgetall(f"rq:job:{job_id}").items()}


def layout(fields: dict[str, bytes], *renames: tuple[str, str], ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A job hash as a comparable layout: rqflow's own fields dropped, per-job values blanked,
    the other job's ids and queue name put in place of this one's. A field RQ writes empty reads as
    an absent one (rqflow's bulk writes leave them out)."""
    shown: dict[str, Any] = {}
    for name, value in fields.items():
        if name in OWN_FIELDS or value == b"" or (name in FALSE_WHEN_ABSENT and value == b"0"):
            continue
        if name == "dependency_id" and "dependency_ids" in fields:
            continue  # RQ reads it only from a hash without `dependency_ids` (its older layout)
        text = "<set>" if name in PER_JOB else value.decode()
        for ours, theirs in renames:
            text = text.replace(ours, theirs)
        shown[name] = (ids or {}).get(text, text)
    return shown


def where(redis: Redis, job_id: str, queue: str) -> dict[str, bool]:
    """In which of RQ's structures the job is."""
    return {
        "queue": job_id.encode() in redis.lrange(f"rq:queue:{queue}", 0, -1),
        "deferred": redis.zscore(f"rq:deferred:{queue}", job_id) is not None,
        "finished": redis.zscore(f"rq:finished:{queue}", job_id) is not None,
        "queues": f"rq:queue:{queue}".encode() in redis.smembers("rq:queues"),
    }


@pytest.mark.parametrize("worker_type", [TaskSimpleWorker, EngineWorker], ids=["rq", "engine"])
def test_rqflow_writes_what_rqs_own_enqueue_and_worker_write(
    client: TestClient, redis: Redis, settings: Settings, worker_type: Any
) -> None:
    client.post("/api/tasks", json={"id": "p", "type": "echo"})
    client.post("/api/tasks", json={"id": "c", "type": "echo", "dependencies": ["p"]})
    ttl, timeout_s = 604800, client.get("/api/tasks/p").json()["timeout_ms"] // 1000
    queue = Queue(PLAIN, connection=redis, serializer=JSONSerializer)
    plain = {"job_timeout": timeout_s, "result_ttl": ttl, "failure_ttl": settings.failed_ttl_s}
    queue.enqueue("tests.handlers.plain", job_id="rp", **plain)
    queue.enqueue("tests.handlers.plain", job_id="rc", depends_on="rp", **plain)
    renames = (("default", PLAIN), ('"p"', '"rp"'), ("echo", "plain"))
    ids = {"p": "rp", "c": "rc"}

    # Submitted: the parent queued, the child deferred behind it, in RQ's own structures.
    assert layout(job_hash(redis, "p"), *renames, ids=ids) == layout(job_hash(redis, "rp"))
    assert layout(job_hash(redis, "c"), *renames, ids=ids) == layout(job_hash(redis, "rc"))
    assert (
        where(redis, "p", "default")
        == where(redis, "rp", PLAIN)
        == {**dict.fromkeys(("queue", "queues"), True), "deferred": False, "finished": False}
    )
    assert where(redis, "c", "default") == where(redis, "rc", PLAIN)
    assert redis.smembers("rq:job:p:dependents") == {b"c"} and redis.smembers("rq:job:rp:dependents") == {b"rc"}
    rq_dependencies_key = Job.fetch("rc", connection=redis, serializer=JSONSerializer).dependencies_key
    assert redis.smembers(rq_dependencies_key) == {b"rp"}
    assert redis.smembers(TaskJob.dependencies_key_for("c")) == {b"p"}
    assert TaskJob.dependencies_key_for("rc") == rq_dependencies_key

    # The parent run by each worker: the child released (by rqflow's script, by RQ's own two steps).
    worker_type(["default"], connection=redis, settings=settings).work(burst=True, max_jobs=1)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True, max_jobs=1)
    ours_done = job_hash(redis, "p")
    if worker_type is EngineWorker:
        # The engine keeps the return value in RQ's `result` field, not in a stream per job.
        result = ours_done.pop(RESULT_FIELD)
        assert Job.fetch("p", connection=redis, serializer=JSONSerializer)._result == json.loads(result)
        assert TaskJob.fetch("p", connection=redis).return_value() == json.loads(result)
        assert redis.xrange("rq:results:p") == []
    assert layout(ours_done, *renames, ids=ids) == layout(job_hash(redis, "rp"))
    assert layout(job_hash(redis, "c"), *renames, ids=ids) == layout(job_hash(redis, "rc"))
    assert where(redis, "p", "default") == where(redis, "rp", PLAIN)
    assert where(redis, "c", "default") == where(redis, "rc", PLAIN)
    assert where(redis, "c", "default")["queue"]

    if worker_type is not EngineWorker:
        # RQ's worker classes: one entry in the job's result stream, with the same fields.
        ours = redis.xrange("rq:results:p")
        theirs = redis.xrange("rq:results:rp")
        assert len(ours) == len(theirs) == 1
        assert set(ours[0][1]) == set(theirs[0][1])
