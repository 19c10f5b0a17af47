"""The reconciler: finds tasks whose Redis state is inconsistent after a crash and repairs them.

It runs in the workers' maintenance pass (one worker at a time), never on a request path:
- PENDING tasks whose parents have all ended: canceled or enqueued (`dependencies.sweep`);
- tasks held for a start time that passed while no scheduler ran: released;
- QUEUED tasks in no queue (a worker died between popping one and starting it): queued again;
- RUNNING tasks whose worker died are RQ's to find (its started-registry cleanup, with rqflow's
  shorter heartbeats), and their dependents are settled by the sweep right after.
Every repair is logged and counted in `/api/stats`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from rq.executions import ExecutionRegistry
from rq.job import JobStatus
from rq.utils import as_text, str_to_date

from app import history, keys
from app.defaults import LOST_AFTER_S, SEARCH_BUDGET, WALK_BUDGET
from app.history import EventName
from app.jobs import dependencies
from app.jobs.job import TaskJob
from app.jobs.tasks import TaskService

log = logging.getLogger(__name__)


def repair(service: TaskService, queue_names: Iterable[str]) -> dict[str, int]:
    connection = service.connection
    canceled, enqueued = dependencies.sweep(connection, queue_names)
    counts = {"pending_canceled": len(canceled), "pending_enqueued": len(enqueued)}
    counts["held_released"] = _release_overdue(service)
    counts["queued_requeued"] = _requeue_lost(service)
    made = {kind: n for kind, n in counts.items() if n}
    if made:
        with connection.pipeline() as pipe:
            for kind, n in made.items():
                pipe.hincrby(keys.REPAIRS, kind, n)
            pipe.execute()
        log.warning("repairs: %s", made)
    return counts


def _release_overdue(service: TaskService) -> int:
    """Timers are fired by the scheduler; one that should have fired long ago was lost with it."""
    overdue = service.connection.zrangebyscore(keys.HELD, 0, (time.time() - LOST_AFTER_S) * 1000, withscores=True)
    for task_id, due_ms in overdue:  # type: ignore[str-unpack]
        service.release(as_text(task_id), int(due_ms))  # type: ignore[arg-type]
    return len(overdue)


def _requeue_lost(service: TaskService) -> int:
    connection = service.connection
    cursor = as_text(connection.get(keys.REPAIR_CURSOR) or b"")
    upper = "(" + cursor if cursor else "+"
    members = [as_text(m) for m in connection.zrevrangebylex(keys.TASK_INDEX, upper, "-", 0, WALK_BUDGET)]
    connection.set(keys.REPAIR_CURSOR, members[-1] if len(members) == WALK_BUDGET else "")
    ids = [m.split(":", 1)[1] for m in members]
    with connection.pipeline(transaction=False) as reads:
        for task_id in ids:
            reads.hmget(TaskJob.key_for(task_id), "status", "origin", "enqueued_at")
        rows = reads.execute()
    requeued = searches = 0
    for task_id, (status, origin, enqueued_at) in zip(ids, rows, strict=True):
        if status is None or as_text(status) != JobStatus.QUEUED.value or not origin or not enqueued_at:
            continue
        if time.time() - str_to_date(enqueued_at).timestamp() < LOST_AFTER_S or searches >= SEARCH_BUDGET:
            continue
        searches += 1
        queue_key = f"rq:queue:{as_text(origin)}"
        if connection.lpos(queue_key, task_id) is not None:
            continue
        if connection.exists(ExecutionRegistry(task_id, connection=connection).key):
            continue  # a worker has it
        with connection.pipeline() as pipe:
            pipe.watch(TaskJob.key_for(task_id))
            if as_text(pipe.hget(TaskJob.key_for(task_id), "status") or b"") != JobStatus.QUEUED.value:
                pipe.unwatch()
                continue
            pipe.multi()
            pipe.lpush(queue_key, task_id)
            pipe.zadd(keys.wake_key(as_text(origin)), {"w": 0})
            history.record(
                pipe,
                TaskJob.key_for(task_id),
                EventName.QUEUED,
                detail="found in no queue (its worker died); queued again",
            )
            pipe.execute()
        requeued += 1
    return requeued
