"""Putting tasks into Redis: one or a whole DAG, all or nothing, in one MULTI/EXEC.

The job keys of the new tasks and of every parent outside the batch are WATCHed from the checks
to the write: two submissions of one id cannot both create it, and a parent cannot vanish or
fail unseen in between. Each task is written in the state its parents allow: canceled at once
(a parent already failed), held for its time, pending on parents, or queued.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq.job import Dependency, JobStatus, Retry
from rq.queue import Queue
from rq.rate_limit import RateLimit
from rq.registry import CanceledJobRegistry, DeferredJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp

from app import history, keys, store
from app.bulk import RUN_COMMANDS, BulkWriter
from app.dag import DependencyCycle, dependency_failed_error, edge_met, parent_statuses, topological_order
from app.errors import FieldError, InvalidTask, TaskConflict, UnknownTaskType
from app.job import STATUS_EVENTS, TaskJob
from app.model import Priority, Task, TaskSpec
from app.registry import Registry, TaskType
from app.timers import Timer, arm

MAX_BATCH = 10_000
BULK_FROM = 100
"""Batches of at least this many tasks write through BulkWriter."""

RESERVATION_TTL_S = 120
"""A claim outlives any write it precedes; one left by a crashed API process expires by itself."""

# KEYS: pairs of (job key, claim key) for each new id. ARGV: ttl, token. Returns the (1-based)
# positions of ids already taken (stored, or claimed by a submission in flight), claiming none;
# or an empty list, having claimed them all.
RESERVE = """
local taken = {}
for i = 1, #KEYS, 2 do
    if redis.call('EXISTS', KEYS[i], KEYS[i + 1]) > 0 then table.insert(taken, (i + 1) / 2) end
end
if #taken == 0 then
    for i = 2, #KEYS, 2 do redis.call('SET', KEYS[i], ARGV[2], 'EX', ARGV[1]) end
end
return taken
"""

# KEYS: claim keys. ARGV: the token of the claims to drop (someone else's are left alone).
RELEASE = """
for _, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
"""


@dataclass(frozen=True)
class Planned:
    batch: bool
    index: int
    task_id: str
    spec: TaskSpec
    task_type: TaskType
    fingerprint: str


class Submission:
    def __init__(self, connection: Redis, registry: Registry, result_ttl_s: int, queues: dict[Any, Queue]) -> None:
        self.connection = connection
        self.registry = registry
        self.result_ttl_s = result_ttl_s
        self.queues = queues
        self._reserve = connection.register_script(RESERVE)
        self._run_commands = connection.register_script(RUN_COMMANDS)
        self._release = connection.register_script(RELEASE)

    def submit(self, specs: Sequence[TaskSpec], *, batch: bool, dry_run: bool = False) -> tuple[list[Task], bool]:
        """Store every task or none; returns them in request order, and whether they were created
        (False: the same submission came again). `batch` only changes how errors name fields.

        The new ids are reserved first by one atomic script (WATCHing thousands of keys costs Redis
        quadratic time); parents outside the batch are WATCHed until the write commits.
        """
        plan = self._plan(specs, batch)
        new_keys = [TaskJob.key_for(p.task_id) for p in plan]
        in_batch = {p.task_id for p in plan}
        outside = sorted({e.parent for p in plan for e in p.spec.dependencies if e.parent not in in_batch})
        claims = [keys.claim_key(p.task_id) for p in plan]
        token = uuid4().hex
        if dry_run:
            if self.connection.exists(*new_keys):
                return self._repeat(plan), False
        elif self._reserve(
            keys=[k for pair in zip(new_keys, claims, strict=True) for k in pair], args=[RESERVATION_TTL_S, token]
        ):
            return self._repeat(plan), False
        try:
            with _gc_paused():
                jobs = self._write(plan, outside, dry_run)
        finally:
            if not dry_run:
                self._release(keys=claims, args=[token])
        by_id = {job.id: job.to_task() for job in jobs}
        return [by_id[p.task_id] for p in sorted(plan, key=lambda p: p.index)], True

    def _write(self, plan: list[Planned], outside: list[str], dry_run: bool) -> list[TaskJob]:
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    if outside:
                        pipe.watch(*(TaskJob.key_for(parent) for parent in outside))
                    statuses = dict(zip(outside, parent_statuses(self.connection, outside), strict=True))
                    self._check_parents_exist(plan, statuses, batch=plan[0].batch)
                    jobs = self._write_all(plan, statuses, pipe, dry_run)
                    if dry_run:
                        pipe.reset()
                    else:
                        pipe.execute()
                    return jobs
                except WatchError:
                    continue

    def _plan(self, specs: Sequence[TaskSpec], batch: bool) -> list[Planned]:
        """Validate names and ids, and order the tasks parents first (or name the cycle)."""
        errors: list[FieldError] = []
        planned: dict[str, Planned] = {}
        for index, spec in enumerate(specs):
            where = f"tasks.{index}." if batch else ""
            task_id = spec.id or uuid4().hex
            try:
                task_type = self.registry.get_type(spec.type)
            except UnknownTaskType as unknown:
                errors.append(FieldError(f"{where}type", f"task {task_id!r}: {unknown.detail}"))
                continue
            if task_id in planned:
                errors.append(FieldError(f"{where}id", f"task id {task_id!r} appears more than once in the batch"))
                continue
            planned[task_id] = Planned(batch, index, task_id, spec, task_type, spec.fingerprint())
        if errors:
            raise InvalidTask("; ".join(e.message for e in errors), errors)
        try:
            order = topological_order({i: [e.parent for e in p.spec.dependencies] for i, p in planned.items()})
        except DependencyCycle as cycle:
            raise InvalidTask(
                f"the dependencies form a cycle: {cycle}",
                [
                    FieldError(_where(batch, planned[i].index, "dependencies"), f"{i!r} is on the cycle {cycle}")
                    for i in cycle.ids
                ],
            ) from None
        return [planned[i] for i in order]

    def _check_parents_exist(self, plan: list[Planned], statuses: dict[str, JobStatus | None], batch: bool) -> None:
        missing = [
            FieldError(_where(batch, p.index, f"dependencies.{n}"), f"task {p.task_id!r}: no task with id {e.parent!r}")
            for p in plan
            for n, e in enumerate(p.spec.dependencies)
            if e.parent in statuses and statuses[e.parent] is None
        ]
        if missing:
            raise InvalidTask("; ".join(e.message for e in missing), missing)

    def _repeat(self, plan: list[Planned]) -> list[Task]:
        loaded = store.load(self.connection, [p.task_id for p in plan])
        differing = [
            p.task_id
            for p, found in zip(plan, loaded, strict=True)
            if not found or found[0].fingerprint != p.fingerprint
        ]
        if differing:
            listed = ", ".join(differing[:20])
            raise TaskConflict(f"tasks with these ids exist with other contents (or not all exist): {listed}")
        by_id = {found[0].id: found[0].to_task(found[1]) for found in loaded if found}
        return [by_id[p.task_id] for p in sorted(plan, key=lambda p: p.index)]

    def _write_all(
        self, plan: list[Planned], outside: dict[str, JobStatus | None], pipe: Pipeline, dry_run: bool
    ) -> list[TaskJob]:
        """Queue every write on `pipe` (after MULTI), parents before children."""
        canceled: set[str] = set()
        jobs = []
        indexes: dict[str, dict[str, float]] = {}
        pushes: dict[str, list[str]] = {}
        if not dry_run:
            pipe.multi()
        # A dry run makes every write into a no-op and so returns exactly what would be stored.
        target: Any = _Discard() if dry_run else pipe
        bulk: Any = target
        if len(plan) >= BULK_FROM and not dry_run:
            # For a handful of tasks the script's own overhead (redis-py checks it is loaded before
            # each transaction) costs more than it saves.
            bulk = BulkWriter(pipe, self._run_commands)
        for p in plan:
            job = self._build_job(p)
            jobs.append(job)
            blocked: tuple[str, JobStatus | None] | None = None
            waiting = False
            for edge in p.spec.dependencies:
                if edge.parent in canceled:
                    blocked = (edge.parent, JobStatus.CANCELED)
                elif edge.parent not in outside:
                    waiting = True  # a parent in this batch has not run yet
                    continue
                else:
                    met = edge_met(outside[edge.parent], edge.allow_failure)
                    if met is False:
                        blocked = (edge.parent, outside[edge.parent])
                    waiting = waiting or met is None
                if blocked:
                    break
            due = _due(p.spec)
            if blocked:
                canceled.add(p.task_id)
                self._store_canceled(job, *blocked, target)
            elif due is not None:
                self._hold_until(job, due, target, indexes)
            elif waiting:
                job._status = JobStatus.DEFERRED  # written by save
                job.save(pipeline=bulk)
                self._register_dependency(job, bulk, indexes)
            elif job.has_rate_limit:
                self.enqueue(job, target)
            else:
                # RQ's Queue._enqueue_job, with the status written once (by save) and the ids pushed
                # in one RPUSH per queue, in dependency order, after every job is written.
                queue = self.queues[Priority(job.origin)]
                queue._prepare_for_queue(job)
                job.save(pipeline=bulk)
                pushes.setdefault(queue.key, []).append(job.id)
            history.record(bulk, job.id, "submitted", detail=STATUS_EVENTS.get(job.get_status(refresh=False)))
            job.record_status_events = True
            member = store.index_member(job.created_at, job.id)
            for index in (keys.TASK_INDEX, keys.type_index(p.spec.type)) + (
                (keys.schedule_runs_index(p.spec.schedule_id),) if p.spec.schedule_id else ()
            ):
                indexes.setdefault(index, {})[member] = 0
        if isinstance(bulk, BulkWriter):
            bulk.flush()
        for index, members in indexes.items():
            target.zadd(index, members)
        for queue_key, ids in pushes.items():
            target.sadd(Queue.redis_queues_keys, queue_key)
            target.rpush(queue_key, *ids)
        return jobs

    def enqueue(self, job: TaskJob, pipe: Any) -> None:
        """Put a job on its queue (or in its limit's waiting line) within the caller's MULTI."""
        queue = self.queues[Priority(job.origin)]
        pipe.sadd(queue.redis_queues_keys, queue.key)
        if job.has_rate_limit:
            # RQ's enqueue_job refuses a pipeline for rate-limited jobs only because saving the
            # returned job afterwards would overwrite its promoted status; nothing saves it here.
            queue._enqueue_rate_limited_job(job, pipeline=pipe)
        else:
            queue._enqueue_job(job, pipeline=pipe)

    def _build_job(self, p: Planned) -> TaskJob:
        spec, task_type = p.spec, p.task_type
        max_attempts = spec.max_attempts or task_type.max_attempts
        backoff = spec.backoff or task_type.backoff
        timeout_ms = spec.timeout_ms or task_type.timeout_ms
        kwargs: dict[str, Any] = {"task_type": spec.type, "payload": spec.payload}
        if spec.duration_ms is not None:
            kwargs["duration_ms"] = spec.duration_ms
        retries = max_attempts - 1
        # RQ's RateLimit holds a slot from queued to finished, across every worker on every machine.
        limit = RateLimit(keys.rate_limit_key(spec.type), task_type.concurrency) if task_type.concurrency else None
        job = self.queues[spec.priority].create_job(
            keys.ENTRY_POINT,
            kwargs=kwargs,
            # RQ's death penalty counts whole seconds; round up so no attempt is cut short.
            timeout=math.ceil(timeout_ms / 1000),
            result_ttl=self.result_ttl_s,
            failure_ttl=self.result_ttl_s,
            description=f"{spec.type} {p.task_id}",
            depends_on=Dependency(
                [e.parent for e in spec.dependencies],
                # RQ knows one failure rule per job; TaskJob.dependencies_are_met applies the
                # per-edge rule. RQ's own paths may only be stricter than ours, never looser.
                allow_failure=all(e.allow_failure for e in spec.dependencies),
            )
            if spec.dependencies
            else None,
            job_id=p.task_id,
            # RQ counts the retries; TaskJob.retry() computes each wait from the backoff.
            retry=Retry(max=retries) if retries else None,
            rate_limit=limit,
        )
        assert isinstance(job, TaskJob)
        job.record_status_events = False
        job.fingerprint = p.fingerprint
        job.spec = {
            "name": spec.name,
            "priority": spec.priority.value,
            "dependencies": [{"id": e.parent, "allow_failure": e.allow_failure} for e in spec.dependencies],
            "run_at": spec.run_at.isoformat() if spec.run_at else None,
            "delay_ms": spec.delay_ms,
            "max_attempts": max_attempts,
            "backoff": backoff.as_dict(),
            "timeout_ms": timeout_ms,
            "schedule_id": spec.schedule_id,
        }
        return job

    def _register_dependency(self, job: TaskJob, pipe: Any, indexes: dict[str, dict[str, float]]) -> None:
        """RQ's `Job.register_dependency`, with the deferred-registry entries gathered into one ZADD
        per queue (`indexes`) instead of one registry object and command per task."""
        registry_key = DeferredJobRegistry.key_template.format(job.origin)
        indexes.setdefault(registry_key, {})[job.id] = current_timestamp()
        for parent in job._dependency_ids:
            pipe.sadd(job.dependents_key_for(parent), job.id)
        pipe.sadd(job.dependencies_key, *job._dependency_ids)

    def _hold_until(self, job: TaskJob, due: datetime, pipe: Any, indexes: dict[str, dict[str, float]]) -> None:
        """Store a timed task SCHEDULED, with a timer that releases it at `due` (TaskService.release).

        Its dependencies are registered now, so a parent that fails before `due` cancels it at once.
        """
        due_ms = math.ceil(due.timestamp() * 1000)
        job.spec["due_ms"] = due_ms
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        job.save(pipeline=pipe)
        if job.edges:
            self._register_dependency(job, pipe, indexes)
        pipe.zadd(keys.HELD, {job.id: due_ms})
        arm(self.connection, Timer("release", job.id, due_ms), pipeline=pipe)

    def _store_canceled(self, job: TaskJob, parent: str, parent_status: JobStatus | None, pipe: Any) -> None:
        error = dependency_failed_error(parent, parent_status)
        job.error = error
        job.set_status(JobStatus.CANCELED, pipeline=pipe)
        job.ended_at = job.created_at
        job.save(pipeline=pipe)
        pipe.hset(job.key, keys.FIELD_ERROR, json.dumps(error))
        CanceledJobRegistry(job.origin, connection=self.connection, serializer=JSONSerializer).add(job, pipeline=pipe)
        job.cleanup(ttl=self.result_ttl_s, pipeline=pipe)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A 10,000-task batch allocates a few hundred thousand short-lived objects; the cyclic
    collector would spend more time walking them than building the batch takes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _due(spec: TaskSpec) -> datetime | None:
    now = datetime.now(timezone.utc)
    due = spec.run_at or (now + timedelta(milliseconds=spec.delay_ms) if spec.delay_ms else None)
    return due if due is not None and due > now else None


def _where(batch: bool, index: int, field: str) -> str:
    return f"tasks.{index}.{field}" if batch else field


class _Discard:
    """Stands in for a pipeline in a dry run: takes every write and sends none."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
