"""The operations on tasks, on top of RQ: submit, read, list."""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import CanceledJobRegistry, DeferredJobRegistry, ScheduledJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import as_text

from app import history, keys
from app.clock import from_ms, iso, to_ms
from app.errors import FieldError, InvalidInput, TaskConflict, TaskNotFound, UnreadableRecord
from app.jobs import release, store
from app.jobs.dependencies import WAITING, cancel_dependent, cancel_task, cascade, judge_now, rearm
from app.jobs.job import TaskJob
from app.jobs.status import task_status
from app.jobs.submission import Submission
from app.jobs.timers import hold
from app.model import Priority, Task, TaskChanges, TaskSpec, TaskStatus
from app.registry import Registry

MAX_LIST_LIMIT = 1000
SCAN_BUDGET = 5000
"""Most index entries one filtered list request examines; past it the page ends early with a
cursor, so a rare status never turns a request into a scan of every task."""


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    next_cursor: str | None


class TaskService:
    """Submits and reads tasks. Every task is an RQ job whose id is the task id."""

    def __init__(self, connection: Redis, registry: Registry, result_ttl_s: int) -> None:
        self.connection = connection
        self.registry = registry
        self.result_ttl_s = result_ttl_s
        self.queues = store.queues(connection)
        self.submission = Submission(connection, registry, result_ttl_s, self.queues)

    # -- submit --------------------------------------------------------------------------------

    def submit(self, spec: TaskSpec) -> tuple[Task, bool]:
        """Store and enqueue one task; returns it and whether it was created (False: an idempotent repeat)."""
        tasks, created = self.submission.submit([spec], batch=False)
        return tasks[0], created

    def submit_batch(self, specs: Sequence[TaskSpec], dry_run: bool = False) -> tuple[list[Task], bool]:
        """A whole DAG, all or nothing; dependencies may point inside the batch in any order."""
        return self.submission.submit(specs, batch=True, dry_run=dry_run)

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
                    if verdict.met is False and verdict.blocking is not None:
                        pipe.unwatch()
                        if cancel_dependent(job, verdict.blocking.parent, verdict.blocking_status):
                            cascade(self.connection, job.id)
                        self.connection.zrem(keys.HELD, task_id)
                        return
                    pipe.multi()
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

    def update(self, task_id: str, changes: TaskChanges) -> Task:
        """Change a task that has not started: payload, start time, priority, limits.

        A queued task is first taken out of its queue atomically (so no worker can start it while
        it changes); one a worker already took is RUNNING, and that is a 409.
        """
        job = self._job(task_id)
        self._check_changeable(job)
        taken = self._take_out_of_queue(job)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job.key)
                    job = self._job(task_id)
                    status = job.get_status(refresh=False)
                    if status in (JobStatus.QUEUED, JobStatus.RATE_LIMITED) and not taken:
                        pipe.unwatch()
                        return self.update(task_id, changes)  # it was released meanwhile: take it
                    self._check_changeable(job)
                    release_now = self._apply(job, changes, status, taken, pipe)
                    pipe.execute()
                    break
                except WatchError:
                    continue
        if job.has_rate_limit and job.get_status(refresh=False) is JobStatus.SCHEDULED and job.rate_limit_key:
            # A task moved out of the queue to a later time gives back the slot it held.
            RateLimitRegistry(job.rate_limit_key, connection=self.connection).release_stale_and_enqueue(job.id)
        if release_now is not None:
            self.release(task_id, release_now)
        return self.get(task_id)

    def _job(self, task_id: str) -> TaskJob:
        job = store.fetch(self.connection, task_id)
        if job is None:
            raise TaskNotFound(task_id)
        return job

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
        if changes.payload is not None:
            kwargs["payload"] = changes.payload
        if changes.duration_ms is not None:
            kwargs["duration_ms"] = changes.duration_ms
        if changes.name is not None:
            spec["name"] = changes.name
        if changes.max_attempts is not None:
            spec["max_attempts"] = changes.max_attempts
            job.retries_left = changes.max_attempts - 1 or None
        if changes.backoff is not None:
            spec["backoff"] = changes.backoff.as_dict()
        if changes.timeout_ms is not None:
            spec["timeout_ms"] = changes.timeout_ms
            job.timeout = math.ceil(changes.timeout_ms / 1000)
        old_origin = job.origin
        if changes.priority is not None:
            spec["priority"] = changes.priority.value
            job.origin = changes.priority.value
        due_ms: int | None = spec.get("due_ms")
        if changes.times_given:
            due = changes.run_at or datetime.now(timezone.utc) + timedelta(milliseconds=changes.delay_ms or 0)
            spec["run_at"] = changes.run_at.isoformat() if changes.run_at else None
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

    def cancel(self, task_id: str) -> tuple[Task, bool]:
        """Cancel a task; returns it and whether it is CANCELED already (False: a running task was
        asked to stop, and its worker cancels it within moments). Dependents cascade."""
        for _ in range(200):
            job = self._job(task_id)
            status = job.get_status(refresh=False)
            if task_status(status).is_terminal:
                raise TaskConflict(f"task {task_id!r} is already {task_status(status).value}")
            if status is JobStatus.STARTED:
                try:
                    send_stop_job_command(self.connection, task_id, serializer=JSONSerializer)
                except (InvalidJobOperation, NoSuchJobError):
                    continue  # it ended meanwhile
                return self.get(task_id), False
            if status in (JobStatus.QUEUED, JobStatus.RATE_LIMITED):
                try:
                    self._take_out_of_queue(job)
                except TaskConflict:
                    time.sleep(0.005)  # a worker just took it: it is about to be STARTED
                    continue
            if cancel_task(job, {"type": "canceled", "message": "canceled on request"}):
                cascade(self.connection, task_id)
                return self.get(task_id), True
        raise TaskConflict(f"task {task_id!r} kept changing state; try again")

    def retry(self, task_id: str) -> Task:
        """Run a FAILED or CANCELED task again (its attempts keep counting) and put back to PENDING
        the dependents that were canceled because of it."""
        job = self._job(task_id)
        status = job.get_status(refresh=False)
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise TaskConflict(
                f"only a FAILED or CANCELED task can be retried; {task_id!r} is {task_status(status).value}"
            )
        verdict = judge_now(self.connection, job.edges)
        if verdict.met is False and verdict.blocking is not None:
            raise TaskConflict(f"its dependency {verdict.blocking.parent!r} has not completed; retry that one first")
        with self.connection.pipeline() as pipe:
            pipe.multi()
            rearm(self.connection, task_id, pipe)
            job.retries_left = int(job.spec.get("max_attempts", 1)) - 1 or None
            job.error = None
            pipe.hdel(job.key, keys.FIELD_ERROR)
            for registry in (job.failed_job_registry, CanceledJobRegistry(job.origin, connection=self.connection)):
                registry.remove(job, pipeline=pipe)
            history.record(pipe, task_id, "retry_requested", attempt=job.attempts or None)
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
        return self.get(task_id)

    def delete(self, task_id: str) -> None:
        """Cancel the task if it has not ended, then remove it, its RQ job, results and history."""
        try:
            job = self._job(task_id)
            job.to_task()  # decodes every part of the record the steps below read
        except UnreadableRecord:
            return self._remove_unreadable(task_id)
        if not task_status(job.get_status(refresh=False)).is_terminal:
            self.cancel(task_id)
            deadline = time.monotonic() + 10
            while not self.get_status(task_id).is_terminal and time.monotonic() < deadline:
                time.sleep(0.05)  # a running task stops within moments; then its record can go
            job = self._job(task_id)
        member = store.index_member(job.created_at, task_id)
        with self.connection.pipeline() as pipe:
            job.delete(pipeline=pipe)
            pipe.delete(keys.history_key(task_id))
            pipe.zrem(keys.HELD, task_id)
            for index in (keys.TASK_INDEX, keys.type_index(job.kwargs.get("task_type", ""))):
                pipe.zrem(index, member)
            if job.spec.get("schedule_id"):
                pipe.zrem(keys.schedule_runs_index(job.spec["schedule_id"]), member)
            pipe.execute()

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

    def history(self, task_id: str) -> list[history.Event]:
        with self.connection.pipeline(transaction=False) as reads:
            reads.hgetall(TaskJob.key_for(task_id))
            reads.xrange(keys.history_key(task_id))
            fields, entries = reads.execute()
        events = history.events(entries)
        if not fields:
            if not events:
                raise TaskNotFound(task_id)
            return events  # the task's record expired just before its history did
        job = store.restored(self.connection, task_id, fields)
        submitted_as = job.spec.get("submitted_as")
        if submitted_as and job.created_at:
            # Kept in the task's own hash rather than a stream per task (see Planned.stored_spec).
            events.insert(0, history.Event("submitted", job.created_at, None, None, None, submitted_as))
        return events

    # -- read ----------------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        """The task, with `waiting_for` filled in when it has not started."""
        loaded = self._load([task_id])[0]
        if loaded is None:
            raise TaskNotFound(task_id)
        job, latest = loaded
        task = job.to_task(latest)
        if task.status.is_terminal or task.status is TaskStatus.RUNNING:
            return task
        return replace(task, waiting_for=self._waiting_for(job))

    def _waiting_for(self, job: TaskJob) -> dict[str, Any] | None:
        """What keeps a task from starting, so an operator never has to guess."""
        status = job.get_status(refresh=False)
        if status is JobStatus.DEFERRED:
            return {"dependencies": list(judge_now(self.connection, job.edges).open)}
        if status is JobStatus.RATE_LIMITED and job.rate_limit_key:
            limit = RateLimitRegistry(job.rate_limit_key, connection=self.connection)
            return {
                "limit": {
                    "key": job.rate_limit_key,
                    "concurrency": job.rate_limit_concurrency,
                    "holding_slots": limit.get_allowed_job_count(),
                    "waiting": limit.get_rate_limited_job_count(),
                }
            }
        if status is JobStatus.SCHEDULED and job.is_held_by_time():
            return {"time": iso(from_ms(int(job.spec["due_ms"])))}
        if status is JobStatus.SCHEDULED:
            # Waiting for a retry's backoff, in RQ's scheduled registry.
            registry = ScheduledJobRegistry(job.origin, connection=self.connection, serializer=JSONSerializer)
            score = self.connection.zscore(registry.key, job.id)
            due = datetime.fromtimestamp(score, tz=timezone.utc) if score is not None else None
            return {"time": iso(due) if due else None}
        return {"worker": {"queue": job.origin, "queued": self.queues[Priority(job.origin)].count}}

    def get_status(self, task_id: str) -> TaskStatus:
        raw = self.connection.hget(TaskJob.key_for(task_id), "status")
        if raw is None:
            raise TaskNotFound(task_id)
        return task_status(JobStatus(as_text(raw)))

    def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        schedule_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Tasks newest first. A page may hold fewer than `limit` tasks when a filter is rare; follow
        `next_cursor` until it is None to see every match exactly once, even while tasks arrive."""
        if schedule_id:
            index = keys.schedule_runs_index(schedule_id)
            wanted_type = task_type
        else:
            index = keys.type_index(task_type) if task_type else keys.TASK_INDEX
            wanted_type = None
        upper = "(" + _decode_cursor(cursor) if cursor else "+"
        chunk_size = max(limit, 100) if status or wanted_type else limit
        found: list[Task] = []
        scanned = 0
        while len(found) < limit and scanned < SCAN_BUDGET:
            members = [as_text(m) for m in self.connection.zrevrangebylex(index, upper, "-", 0, chunk_size)]
            if not members:
                return Page(found, None)
            ids = [m.split(":", 1)[1] for m in members]
            wanted = self._matching(ids, status)
            loaded = self._load([i for i, ok in zip(ids, wanted, strict=True) if ok])
            loaded_by_id = {job.id: (job, latest) for job, latest in filter(None, loaded)}
            stale = []
            for member, task_id, ok in zip(members, ids, wanted, strict=True):
                upper = "(" + member
                scanned += 1
                if ok is None:
                    stale.append(member)
                elif ok and task_id in loaded_by_id:
                    job, latest = loaded_by_id[task_id]
                    try:
                        task = job.to_task(latest)
                    except UnreadableRecord as unreadable:
                        store.note_unreadable(self.connection, unreadable)
                        continue
                    if wanted_type and task.type != wanted_type:
                        continue
                    found.append(task)
                    if len(found) == limit:
                        break
            if stale:
                # Jobs RQ expired after their result TTL; their index entries go with them.
                self.connection.zrem(index, *stale)
            if len(members) < chunk_size and len(found) < limit:
                return Page(found, None)
        return Page(found, _encode_cursor(upper[1:]))

    def _matching(self, ids: Sequence[str], status: TaskStatus | None) -> list[bool | None]:
        """For each id: True to list it, False to skip it, None when the job no longer exists."""
        with self.connection.pipeline(transaction=False) as reads:
            for task_id in ids:
                reads.hget(TaskJob.key_for(task_id), "status")
            raw = reads.execute()
        return [None if r is None else (status is None or task_status(JobStatus(as_text(r))) is status) for r in raw]

    def _load(self, ids: Sequence[str]) -> list[store.Loaded | None]:
        return store.load(self.connection, ids)


def _encode_cursor(member: str) -> str:
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        member = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        member = ""
    if ":" not in member or not member.split(":", 1)[0].isdigit():
        raise InvalidInput("cursor is not one this server issued", [FieldError("cursor", "invalid cursor")])
    return member
