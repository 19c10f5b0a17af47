"""The operations that change tasks, on top of RQ: submit, release, change, cancel, retry, delete.
Reading is `app.jobs.reads`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from enum import Enum

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import CanceledJobRegistry, DeferredJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from app import history, keys
from app.clock import to_ms
from app.defaults import CANCEL_ATTEMPTS
from app.errors import TaskConflict, UnreadableRecord
from app.history import EventName
from app.jobs import events, release, store
from app.jobs import spec as spec_fields
from app.jobs.autopipeline import AutoPipeline
from app.jobs.dependencies import WAITING, cancel_dependent, cancel_task, cascade, judge_now, rearm
from app.jobs.job import TaskJob
from app.jobs.reads import TaskReader
from app.jobs.status import task_status
from app.jobs.submission import Outcome, Submission
from app.jobs.timers import hold
from app.model import CALL_FIELDS, ErrorType, Priority, Task, TaskChanges, TaskSpec, TaskStatus
from app.registry import Registry

CHANGED_FIELDS = tuple(f.name for f in fields(TaskChanges))
"""What a change may set: each is written where the field is kept (the job's data or its spec)."""


class Cancellation(Enum):
    """Where a cancel (or a delete) left a task."""

    CANCELED = "canceled"
    STOPPING = "stopping"
    TAKEN = "taken"


class TaskService:
    """Changes tasks (`reads` reads them). Every task is an RQ job whose id is the task id."""

    def __init__(
        self,
        connection: Redis,
        registry: Registry,
        result_ttl_s: int,
        failed_ttl_s: int | None = None,
        *,
        max_unfinished: int = 0,
        max_payload_bytes: int = 0,
    ) -> None:
        """The caps (0: none) apply to what the API submits: a schedule's runs are not refused."""
        self.connection = connection
        self.registry = registry
        self.result_ttl_s = result_ttl_s
        self.reads = TaskReader(connection)
        self.queues = self.reads.queues
        self.submission = Submission(
            connection, registry, result_ttl_s, self.queues, failed_ttl_s, max_unfinished, max_payload_bytes
        )

    # -- submit --------------------------------------------------------------------------------

    def submit(self, spec: TaskSpec, actor: str | None = None) -> tuple[Task, bool]:
        """Store and enqueue one task; returns it and whether it was created (False: an idempotent
        repeat). `actor` (here and below): the name of the API key making the change, for the
        task's history."""
        outcome = self.submission.store([spec], batch=False, actor=actor)
        return outcome.tasks()[0], outcome.created

    async def submit_async(
        self, pipeline: AutoPipeline, spec: TaskSpec, actor: str | None = None
    ) -> tuple[Task, bool] | None:
        """`submit` through the API's asyncio pipeline where one script does it all; None where the
        caller must run `submit` (off its event loop)."""
        return await self.submission.submit_one(pipeline, spec, actor)

    def submit_batch(
        self,
        specs: Sequence[TaskSpec],
        dry_run: bool = False,
        meanwhile: Callable[[Outcome], None] | None = None,
        actor: str | None = None,
    ) -> tuple[list[Task], bool]:
        """A whole DAG, all or nothing; dependencies may point inside the batch in any order.
        `meanwhile`: as Submission.submit's."""
        outcome = self.store_batch(specs, dry_run, meanwhile, actor)
        return outcome.tasks(), outcome.created

    def store_batch(
        self,
        specs: Sequence[TaskSpec],
        dry_run: bool = False,
        meanwhile: Callable[[Outcome], None] | None = None,
        actor: str | None = None,
    ) -> Outcome:
        """`submit_batch`, answering with what was stored rather than the tasks themselves, for
        callers that need only ids and statuses of a large batch."""
        return self.submission.store(specs, batch=True, dry_run=dry_run, meanwhile=meanwhile, actor=actor)

    def release(self, task_id: str, at_ms: int) -> None:
        """A timed task's time has come (called by the scheduler's timer): queue it if its
        dependencies allow, leave it PENDING on the open ones, or cancel it if one failed."""
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(TaskJob.key_for(task_id))
                    job = store.fetch(self.connection, task_id)
                    waiting = job is not None and job.get_status(refresh=False) in WAITING
                    if job is None or not waiting or job.spec.get("due_ms") != at_ms:
                        pipe.unwatch()
                        if not waiting:
                            self.connection.zrem(keys.HELD, task_id)
                        return  # deleted, rescheduled or already settled: a stale timer
                    verdict = judge_now(self.connection, job.edges)
                    if verdict.blocking is not None:
                        pipe.unwatch()
                        if cancel_dependent(job, verdict.blocking.parent, verdict.blocking_status):
                            cascade(self.connection, job.id)
                        self.connection.zrem(keys.HELD, task_id)
                        return
                    pipe.multi()
                    events.lag_observed(pipe, time.time() - at_ms / 1000)
                    pipe.zrem(keys.HELD, job.id)
                    if verdict.met is None:
                        job.set_status(JobStatus.DEFERRED, pipeline=pipe)
                    else:
                        pipe.hset(job.key, "status", JobStatus.DEFERRED.value)  # for a moment: no event
                    # Where the sweep looks, should the script below not queue it after all.
                    DeferredJobRegistry(job.origin, connection=self.connection).add(job, pipeline=pipe)
                    # In the same transaction: queued now if its parents have all ended well, so one
                    # that ended since they were read above is not missed.
                    release.check(pipe, [task_id])
                    pipe.execute()
                    return
                except WatchError:
                    continue

    # -- change -------------------------------------------------------------------------------

    def update(self, task_id: str, changes: TaskChanges, actor: str | None = None) -> Task:
        """Change a task that has not started: payload, start time, priority, limits.

        A queued task is first taken out of its queue atomically (so no worker can start it while
        it changes); one a worker already took is RUNNING, and that is a 409.
        """
        job = self.reads.job(task_id)
        self._check_changeable(job)
        taken = self._take_out_of_queue(job)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job.key)
                    job = self.reads.job(task_id)
                    status = job.get_status(refresh=False)
                    if status in (JobStatus.QUEUED, JobStatus.RATE_LIMITED) and not taken:
                        pipe.unwatch()
                        return self.update(task_id, changes, actor)  # it was released meanwhile: take it
                    self._check_changeable(job)
                    job.actor = actor
                    release_now = self._apply(job, changes, status, taken, pipe)
                    changed = ", ".join(f.name for f in fields(changes) if getattr(changes, f.name) is not None)
                    history.record(pipe, job.key, EventName.UPDATED, detail=changed or None, by=actor)
                    pipe.execute()
                    break
                except WatchError:
                    continue
        if job.has_rate_limit and job.get_status(refresh=False) is JobStatus.SCHEDULED and job.rate_limit_key:
            # A task moved out of the queue to a later time gives back the slot it held.
            RateLimitRegistry(job.rate_limit_key, connection=self.connection).release_stale_and_enqueue(job.id)
        if release_now is not None:
            self.release(task_id, release_now)
        return self.reads.get(task_id)

    def _check_changeable(self, job: TaskJob) -> None:
        status = task_status(job.get_status(refresh=False))
        if job.attempts or status not in (TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.QUEUED):
            raise TaskConflict(
                f"task {job.id!r} is {status.value} and has started; only a task that has not can change"
            )

    def _take_out_of_queue(self, job: TaskJob) -> bool:
        """Remove a queued task from its queue list (or its limit's waiting set) if it is still there."""
        status = job.get_status(refresh=False)
        if status is JobStatus.RATE_LIMITED and job.rate_limit_key:
            limit = RateLimitRegistry(job.rate_limit_key, connection=self.connection)
            return bool(self.connection.zrem(limit.rate_limited_key, job.id))
        if status is JobStatus.QUEUED:
            if not self.connection.lrem(self.queues[Priority(job.origin)].key, 1, job.id):
                raise TaskConflict(f"task {job.id!r} was just taken by a worker; it has started")
            return True
        return False

    def _apply(self, job: TaskJob, changes: TaskChanges, status: JobStatus, taken: bool, pipe: Pipeline) -> int | None:
        """Queue the writes of `changes` on `pipe` (in MULTI); returns a due time to release at once."""
        kwargs = dict(job.kwargs)
        spec = dict(job.spec)
        for name in CHANGED_FIELDS:
            value = getattr(changes, name)
            if value is None:
                continue
            if name in CALL_FIELDS:
                kwargs[name] = value
            else:
                spec[name] = spec_fields.encode_one(name, value)
        # What RQ keeps of the same facts follows.
        if changes.max_attempts is not None:
            job.retries_left = changes.max_attempts - 1 or None
        if changes.timeout_ms is not None:
            job.timeout = math.ceil(changes.timeout_ms / 1000)
        old_origin = job.origin
        if changes.priority is not None:
            job.origin = changes.priority.value
        due_ms: int | None = spec.get("due_ms")
        if changes.times_given:
            due = changes.run_at or datetime.now(timezone.utc) + timedelta(milliseconds=changes.delay_ms or 0)
            # A new time replaces both ways of giving it.
            spec["run_at"] = spec_fields.encode_one("run_at", changes.run_at)
            spec["delay_ms"] = changes.delay_ms
            due_ms = to_ms(due)
        job.kwargs = kwargs
        job.spec = spec
        future = due_ms is not None and due_ms > time.time() * 1000
        pipe.multi()
        in_deferred_registry = status is JobStatus.DEFERRED or (status is JobStatus.SCHEDULED and bool(job.edges))
        if old_origin != job.origin and in_deferred_registry:
            for origin, add in ((old_origin, False), (job.origin, True)):
                registry = DeferredJobRegistry(origin, connection=self.connection, serializer=JSONSerializer)
                (registry.add if add else registry.remove)(job, pipeline=pipe)
        if changes.times_given and future:
            spec["due_ms"] = due_ms
            if status is not JobStatus.DEFERRED:
                job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
            job.save(pipeline=pipe)
            hold(self.connection, job.id, int(due_ms or 0), pipe)
            return None
        if changes.times_given:
            spec["due_ms"] = due_ms = int(time.time() * 1000)
        job.save(pipeline=pipe)
        if taken:
            self.submission.enqueue(job, pipe)
        return due_ms if changes.times_given and status is JobStatus.SCHEDULED else None

    # -- cancel, retry, delete -------------------------------------------------------------

    def cancel(self, task_id: str, actor: str | None = None) -> Cancellation:
        """Cancel a task, without waiting. CANCELED: done (dependents cascade). STOPPING: a running
        task was asked to stop, and its worker cancels it within moments. TAKEN: a worker took it
        from its queue this instant and is about to start it; ask again in a few milliseconds."""
        for _ in range(CANCEL_ATTEMPTS):
            job = self.reads.job(task_id)
            status = job.get_status(refresh=False)
            if task_status(status).is_terminal:
                raise TaskConflict(f"task {task_id!r} is already {task_status(status).value}")
            if status is JobStatus.STARTED:
                try:
                    send_stop_job_command(self.connection, task_id, serializer=JSONSerializer)
                except (InvalidJobOperation, NoSuchJobError):
                    continue  # it ended meanwhile
                # Its worker writes the end; who asked for it is said here.
                history.record(
                    self.connection, job.key, EventName.CANCEL_REQUESTED, attempt=job.attempts or None, by=actor
                )
                return Cancellation.STOPPING
            if status in (JobStatus.QUEUED, JobStatus.RATE_LIMITED):
                try:
                    self._take_out_of_queue(job)
                except TaskConflict:
                    return Cancellation.TAKEN
            job.actor = actor
            if cancel_task(job, {"type": ErrorType.CANCELED.value, "message": "canceled on request"}):
                cascade(self.connection, task_id)
                return Cancellation.CANCELED
        raise TaskConflict(f"task {task_id!r} kept changing state; try again")

    def retry(self, task_id: str, actor: str | None = None) -> Task:
        """Run a FAILED or CANCELED task again (its attempts keep counting) and put back to PENDING
        the dependents that were canceled because of it."""
        job = self.reads.job(task_id)
        status = job.get_status(refresh=False)
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise TaskConflict(
                f"only a FAILED or CANCELED task can be retried; {task_id!r} is {task_status(status).value}"
            )
        verdict = judge_now(self.connection, job.edges)
        if verdict.blocking is not None:
            raise TaskConflict(f"its dependency {verdict.blocking.parent!r} has not completed; retry that one first")
        with self.connection.pipeline() as pipe:
            pipe.multi()
            rearm(self.connection, task_id, pipe)
            job.retries_left = int(job.spec.get("max_attempts", 1)) - 1 or None
            job.error = None
            pipe.hdel(job.key, keys.FIELD_ERROR)
            for registry in (job.failed_job_registry, CanceledJobRegistry(job.origin, connection=self.connection)):
                registry.remove(job, pipeline=pipe)
            history.record(pipe, job.key, EventName.RETRY_REQUESTED, attempt=job.attempts or None, by=actor)
            job.actor = actor
            if verdict.met is None:
                job.set_status(JobStatus.DEFERRED, pipeline=pipe)
                job.save(pipeline=pipe)
                DeferredJobRegistry(job.origin, connection=self.connection).add(job, pipeline=pipe)
                # A parent that ended since the verdict above releases it here, in this transaction.
                release.check(pipe, [task_id])
            else:
                job.ended_at = None
                self.submission.enqueue(job, pipe)
            pipe.persist(job.key)
            pipe.persist(keys.history_key(task_id))
            pipe.execute()
        return self.reads.get(task_id)

    def delete(self, task_id: str, *, running_or_not: bool = False) -> Cancellation:
        """Remove a task that has ended (or never started: it is canceled first), its RQ job, results
        and history: CANCELED. A running one is asked to stop instead (STOPPING, or TAKEN as in
        `cancel`); delete it again once it has ended, or pass `running_or_not` to remove it anyway."""
        try:
            job = self.reads.job(task_id)
            job.to_task()  # decodes every part of the record the steps below read
        except UnreadableRecord:
            self._remove_unreadable(task_id)
            return Cancellation.CANCELED
        if not running_or_not and not task_status(job.get_status(refresh=False)).is_terminal:
            outcome = self.cancel(task_id)
            if outcome is not Cancellation.CANCELED:
                return outcome
            job = self.reads.job(task_id)
        member = store.index_member(job.created_at, task_id)
        with self.connection.pipeline() as pipe:
            job.delete(pipeline=pipe)
            pipe.delete(keys.history_key(task_id))
            pipe.zrem(keys.HELD, task_id)
            for index in (keys.TASK_INDEX, keys.type_index(job.kwargs.get("task_type", ""))):
                pipe.zrem(index, member)
            if job.spec.get("schedule_id"):
                pipe.zrem(keys.schedule_runs_index(job.spec["schedule_id"]), member)
            status = task_status(job.get_status(refresh=False)).value
            task_type = job.kwargs.get("task_type", "")
            events.told(pipe, [events.event("deleted", task=task_id, type=task_type, status=status)])
            pipe.execute()
        return Cancellation.CANCELED

    def _remove_unreadable(self, task_id: str) -> None:
        """Remove a record that cannot be decoded, so an operator can always clear it. Its entries in
        the list indexes and RQ's registries name a job that no longer exists, and each of those
        drops such entries as it meets them."""
        job_key = TaskJob.key_for(task_id)
        with self.connection.pipeline() as pipe:
            pipe.delete(
                job_key,
                TaskJob.dependencies_key_for(task_id),
                TaskJob.dependents_key_for(task_id),
                Result.get_key(task_id),
                keys.history_key(task_id),
            )
            pipe.zrem(keys.HELD, task_id)
            pipe.srem(keys.UNREADABLE, f"task:{task_id}")
            pipe.execute()
