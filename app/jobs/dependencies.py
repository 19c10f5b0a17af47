"""Dependencies in Redis: the parents' statuses, the cascade of a failed parent, the re-arming of a
retried one, and the sweep that repairs what a crash interrupted (the rules are `app.graph`'s).

RQ leaves the dependents of a failed parent deferred forever (rq#1093) and knows failure tolerance
only per job, not per dependency. A child with an edge that can no longer be met is CANCELED at
once, and so on down the graph.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, DeferredJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import as_text

from app import keys
from app.graph import Verdict, dependency_failed_error, edge_met, judge
from app.jobs import release
from app.jobs.job import TaskJob
from app.jobs.status import task_status
from app.model import Edge, ErrorType, TaskStatus

log = logging.getLogger(__name__)

WAITING = frozenset({JobStatus.DEFERRED, JobStatus.SCHEDULED})
"""States of a task that has dependencies and has not been released to a queue: the ones a
failed parent can still cancel. (A timed task with dependencies is SCHEDULED until its time.)"""


def parent_statuses(connection: Redis, parents: Sequence[str]) -> list[TaskStatus | None]:
    """The status of each parent, None for one that does not exist, in one round trip."""
    with connection.pipeline(transaction=False) as reads:
        for parent in parents:
            reads.hget(Job.key_for(parent), "status")
        raw = reads.execute()
    return [task_status(JobStatus(as_text(r))) if r else None for r in raw]


def judge_now(connection: Redis, edges: Sequence[Edge]) -> Verdict:
    """`judge` on the parents' current statuses (one round trip)."""
    return judge(edges, parent_statuses(connection, [e.parent for e in edges]))


def cancel_dependent(job: Job, parent: str, parent_status: TaskStatus | None) -> bool:
    """Cancel a waiting task because `parent` can no longer meet its edge; False if it was not waiting."""
    return cancel_task(job, dependency_failed_error(parent, parent_status), only=WAITING)


CANCELABLE = frozenset(
    {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.RATE_LIMITED, JobStatus.READY_TO_ENQUEUE, *WAITING}
)


def cancel_task(job: Job, error: dict[str, str], only: frozenset[JobStatus] = CANCELABLE) -> bool:
    """Cancel a task that has not started (RQ's cancel: out of its queue, registries and limit),
    keeping `error` as the reason; False if its status is not in `only` any more."""
    deferred = DeferredJobRegistry(job.origin, connection=job.connection, serializer=JSONSerializer)
    with job.connection.pipeline() as pipe:
        try:
            # The error is written first: a crash between the two writes leaves a pending task the
            # sweep cancels again, never a canceled task without its reason.
            pipe.watch(job.key)
            status = pipe.hget(job.key, "status")
            if status is None or JobStatus(as_text(status)) not in only:
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.hset(job.key, keys.FIELD_ERROR, json.dumps(error))
            # RQ's cancel cleans the registry of the job's status; a timed task also sits in these.
            deferred.remove(job, pipeline=pipe)
            pipe.zrem(keys.HELD, job.id)
            pipe.execute()
        except WatchError:
            return False
    if hasattr(job, "error"):
        job.error = error  # so the history event carries the reason
    try:
        job.cancel()
    except InvalidJobOperation:
        return False
    log.info("task %s canceled: %s", job.id, error["message"])
    return True


def rearm(connection: Redis, parent: str, pipe: Pipeline) -> list[str]:
    """Put back to PENDING (on `pipe`, in MULTI) the tasks below `parent` that were canceled because of
    it, recursively, unless another of their parents still stands in the way. Returns their ids."""
    rearmed: list[str] = []
    todo = [parent]
    while todo:
        current = todo.pop()
        child_ids = [as_text(c) for c in connection.smembers(Job.dependents_key_for(current))]
        for child in TaskJob.fetch_many(child_ids, connection=connection, serializer=JSONSerializer):
            if not isinstance(child, TaskJob) or child.get_status(refresh=False) is not JobStatus.CANCELED:
                continue
            error = child.error or {}
            if error.get("type") != ErrorType.DEPENDENCY_FAILED or error.get("dependency") != current:
                continue
            others = [e for e in child.edges if e.parent not in (current, parent, *rearmed)]
            if judge_now(connection, others).met is False:
                continue
            child.error = None
            pipe.hdel(child.key, keys.FIELD_ERROR)
            CanceledJobRegistry(child.origin, connection=connection).remove(child, pipeline=pipe)
            DeferredJobRegistry(child.origin, connection=connection).add(child, pipeline=pipe)
            child.set_status(JobStatus.DEFERRED, pipeline=pipe)
            pipe.persist(child.key)
            pipe.persist(keys.history_key(child.id))
            rearmed.append(child.id)
            todo.append(child.id)
    return rearmed


def cascade(connection: Redis, parent: str) -> list[str]:
    """Cancel every pending task below `parent` whose edge its outcome breaks, recursively.

    Call after `parent` ended FAILED, STOPPED or CANCELED. Returns the canceled ids.
    """
    canceled: list[str] = []
    todo = [parent]
    while todo:
        current = todo.pop()
        status = parent_statuses(connection, [current])[0]
        child_ids = [as_text(c) for c in connection.smembers(Job.dependents_key_for(current))]
        for child in TaskJob.fetch_many(child_ids, connection=connection, serializer=JSONSerializer):
            if not isinstance(child, TaskJob) or child.get_status(refresh=False) not in WAITING:
                continue
            edge = next((e for e in child.edges if e.parent == current), Edge(current))
            if edge_met(status, edge.allow_failure) is not False:
                continue
            if cancel_dependent(child, current, status):
                canceled.append(child.id)
                todo.append(child.id)
    return canceled


def sweep(connection: Redis, queue_names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Settle every pending task whose parents have all decided: cancel it (and below) or enqueue it.

    The worker cascades as a parent ends, so this only finds what a crash interrupted or what RQ's
    own paths (e.g. its cleanup of a dead worker's job) left behind. Returns (canceled, enqueued).
    """
    canceled: list[str] = []
    enqueued: list[str] = []
    for name in queue_names:
        registry = DeferredJobRegistry(name, connection=connection, job_class=TaskJob, serializer=JSONSerializer)
        ids = registry.get_job_ids(cleanup=False)
        for job in TaskJob.fetch_many(ids, connection=connection, serializer=JSONSerializer):
            if not isinstance(job, TaskJob) or job.get_status(refresh=False) not in WAITING:
                continue
            verdict = judge_now(connection, job.edges)
            if verdict.blocking is not None:
                if cancel_dependent(job, verdict.blocking.parent, verdict.blocking_status):
                    canceled += [job.id, *cascade(connection, job.id)]
            elif verdict.met is True and not job.is_held_by_time():
                enqueued += release.run(connection, [job.id])
    if canceled or enqueued:
        log.warning("dependency sweep repaired tasks: canceled %s, enqueued %s", canceled, enqueued)
    return canceled, enqueued
