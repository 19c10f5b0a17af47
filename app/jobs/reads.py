"""Reading tasks: one with what it waits for, its status, its history, and lists with filters and
cursors. Nothing here changes a task (that is `app.jobs.tasks`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import as_text

from app import history, keys
from app.clock import from_ms, iso
from app.defaults import SCAN_BUDGET
from app.errors import FieldError, InvalidInput, TaskNotFound, UnreadableRecord
from app.history import EventName
from app.jobs import store
from app.jobs.dependencies import judge_now
from app.jobs.job import TaskJob
from app.jobs.status import task_status
from app.model import Priority, Task, TaskStatus


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    next_cursor: str | None


class TaskReader:
    """Reads tasks; every method is one or a few round trips and changes nothing."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self.queues = store.queues(connection)

    def job(self, task_id: str) -> TaskJob:
        """The task's job; TaskNotFound when there is none."""
        job = store.fetch(self.connection, task_id)
        if job is None:
            raise TaskNotFound(task_id)
        return job

    def history(self, task_id: str) -> list[history.Event]:
        with self.connection.pipeline(transaction=False) as reads:
            reads.hgetall(TaskJob.key_for(task_id))
            reads.xrange(keys.history_key(task_id))
            fields, entries = reads.execute()
        # A record written before the history moved into the job hash keeps its stream.
        events = history.events(entries) + history.decode(fields.get(keys.FIELD_HISTORY.encode()))
        if not fields:
            if not events:
                raise TaskNotFound(task_id)
            return events  # the task's record expired just before its old stream did
        job = store.restored(self.connection, task_id, fields)
        submitted_as = job.spec.get("submitted_as")
        if submitted_as and job.created_at:
            # Kept in the task's own hash rather than a stream per task (see Planned.stored_spec).
            by = job.spec.get("submitted_by")
            events.insert(
                0, history.Event(EventName.SUBMITTED.value, job.created_at, None, None, None, submitted_as, by)
            )
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

    def dependents(self, task_id: str) -> list[Task]:
        """The tasks that depend on this one (its children), oldest first, so that a graph can be
        drawn from either end. Children since deleted are left out; so are unreadable ones."""
        with self.connection.pipeline(transaction=False) as reads:
            reads.exists(TaskJob.key_for(task_id))
            reads.smembers(TaskJob.dependents_key_for(task_id))
            exists, children = reads.execute()
        if not exists:
            raise TaskNotFound(task_id)
        found = []
        for loaded in self._load(sorted(as_text(c) for c in children)):
            if loaded is not None:
                try:
                    found.append(loaded[0].to_task(loaded[1]))
                except UnreadableRecord:
                    continue
        return sorted(found, key=lambda t: (t.created_at, t.id))

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
        id_prefix: str | None = None,
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
        chunk_size = max(limit, 100) if status or wanted_type or id_prefix else limit
        found: list[Task] = []
        scanned = 0
        while len(found) < limit and scanned < SCAN_BUDGET:
            members = [as_text(m) for m in self.connection.zrevrangebylex(index, upper, "-", 0, chunk_size)]
            if not members:
                return Page(found, None)
            ids = [m.split(":", 1)[1] for m in members]
            wanted = self._matching(ids, status, id_prefix)
            loaded = self._load([i for i, ok in zip(ids, wanted, strict=True) if ok])
            loaded_by_id = {job.id: (job, latest) for job, latest in filter(None, loaded)}
            stale, unreadable = [], []
            for member, task_id, ok in zip(members, ids, wanted, strict=True):
                upper = "(" + member
                scanned += 1
                if ok is None:
                    stale.append(member)
                elif ok and task_id in loaded_by_id:
                    job, latest = loaded_by_id[task_id]
                    try:
                        task = job.to_task(latest)
                    except UnreadableRecord as record:
                        unreadable.append(record)
                        continue
                    if wanted_type and task.type != wanted_type:
                        continue
                    found.append(task)
                    if len(found) == limit:
                        break
            store.note_unreadable(self.connection, unreadable)
            if stale:
                # Jobs RQ expired after their result TTL; their index entries go with them.
                self.connection.zrem(index, *stale)
            if len(members) < chunk_size and len(found) < limit:
                return Page(found, None)
        return Page(found, _encode_cursor(upper[1:]))

    def _matching(self, ids: Sequence[str], status: TaskStatus | None, id_prefix: str | None) -> list[bool | None]:
        """For each id: True to list it, False to skip it, None when the job no longer exists (an id
        without the prefix is skipped unread)."""
        candidates = [i for i in ids if not id_prefix or i.startswith(id_prefix)]
        with self.connection.pipeline(transaction=False) as reads:
            for task_id in candidates:
                reads.hget(TaskJob.key_for(task_id), "status")
            raw = dict(zip(candidates, reads.execute(), strict=True))
        found: list[bool | None] = []
        for task_id in ids:
            if task_id not in raw:
                found.append(False)
            elif raw[task_id] is None:
                found.append(None)
            else:
                found.append(status is None or task_status(JobStatus(as_text(raw[task_id]))) is status)
        return found

    def _load(self, ids: Sequence[str]) -> list[store.Loaded | None]:
        return store.load(self.connection, ids)


def _encode_cursor(member: str) -> str:
    """A page's cursor is the index member it ends at (`<created µs>:<id>`, URL-safe as it is)."""
    return member


def _decode_cursor(cursor: str) -> str:
    if not re.fullmatch(store.INDEX_MEMBER_PATTERN, cursor):
        raise InvalidInput("cursor is not one this server issued", [FieldError("cursor", "invalid cursor")])
    return cursor
