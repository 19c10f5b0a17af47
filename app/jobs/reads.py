"""Reading tasks: one with what it waits for, its status, its history, and lists with filters and
cursors. Nothing here changes a task (that is `app.jobs.tasks`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
from app.graph import judge
from app.history import EventName
from app.jobs import store
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
        return replace(task, waiting_for=self._waiting_for([job])[0]) if _waits(task) else task

    def dependents(self, task_id: str) -> list[Task]:
        """The tasks that depend on this one (its children), oldest first, so that a graph can be
        drawn from either end. Children since deleted are left out; so are unreadable ones."""
        with self.connection.pipeline(transaction=False) as reads:
            reads.exists(TaskJob.key_for(task_id))
            reads.smembers(TaskJob.dependents_key_for(task_id))
            exists, children = reads.execute()
        if not exists:
            raise TaskNotFound(task_id)
        found = self._readable(sorted(as_text(c) for c in children))
        return sorted(found, key=lambda t: (t.created_at, t.id))

    def family(self, root: Task, most: int) -> tuple[list[Task], set[tuple[str, str]]]:
        """The task, its ancestors and its descendants, nearest first as far as `most` tasks, and
        the edges (parent, child) that lead up from it and down from it: a level at a time, one
        round trip a level upwards and two downwards. Tasks since deleted are left out; so are
        unreadable ones."""
        found = {root.id: root}
        edges: set[tuple[str, str]] = set()
        level = [root]
        while level:
            edges.update((edge.parent, task.id) for task in level for edge in task.dependencies)
            parents = sorted({edge.parent for task in level for edge in task.dependencies} - found.keys())
            level = self._readable(parents[: most - len(found)])
            found.update((task.id, task) for task in level)
        level = [root]
        while level:
            with self.connection.pipeline(transaction=False) as reads:
                for task in level:
                    reads.smembers(TaskJob.dependents_key_for(task.id))
                children = [[as_text(c) for c in ids] for ids in reads.execute()]
            edges.update((task.id, child) for task, ids in zip(level, children, strict=True) for child in ids)
            if len(found) >= most:
                break  # the edges among the tasks found are drawn; no more tasks are
            level = self._readable(sorted({c for ids in children for c in ids} - found.keys())[: most - len(found)])
            found.update((task.id, task) for task in level)
        return list(found.values()), edges

    def _readable(self, ids: Sequence[str]) -> list[Task]:
        found = []
        for loaded in self._load(ids):
            if loaded is not None:
                try:
                    found.append(loaded[0].to_task(loaded[1]))
                except UnreadableRecord:
                    continue
        return found

    def _waiting_for(self, jobs: Sequence[TaskJob]) -> list[dict[str, Any]]:
        """What keeps each task from starting, so an operator never has to guess: one round trip
        for them all, each parent, limit and queue read once however many tasks share it."""
        asked: dict[tuple[Any, ...], int] = {}
        with self.connection.pipeline(transaction=False) as reads:

            def ask(*command: Any) -> int:
                if command not in asked:
                    reads.execute_command(*command)
                    asked[command] = len(asked)
                return asked[command]

            answers = [self._waiting(job, ask) for job in jobs]
            raw = reads.execute()
        return [answer(raw) for answer in answers]

    def _waiting(self, job: TaskJob, ask: Callable[..., int]) -> Callable[[list[Any]], dict[str, Any]]:
        """What keeps `job` from starting, from the reads it queues with `ask` (which gives each
        one's place in the results)."""
        status = job.get_status(refresh=False)
        if status is JobStatus.DEFERRED:
            parents = [ask("HGET", TaskJob.key_for(edge.parent), "status") for edge in job.edges]

            def statuses(raw: list[Any]) -> list[TaskStatus | None]:
                return [task_status(JobStatus(as_text(raw[n]))) if raw[n] else None for n in parents]

            return lambda raw: {"dependencies": list(judge(job.edges, statuses(raw)).open)}
        if status is JobStatus.RATE_LIMITED and job.rate_limit_key:
            limit = RateLimitRegistry(job.rate_limit_key, connection=self.connection)
            held, waiting = ask("ZCARD", limit.allowed_key), ask("ZCARD", limit.rate_limited_key)
            return lambda raw: {
                "limit": {
                    "key": job.rate_limit_key,
                    "concurrency": job.rate_limit_concurrency,
                    "holding_slots": raw[held],
                    "waiting": raw[waiting],
                }
            }
        if status is JobStatus.SCHEDULED and job.is_held_by_time():
            due = iso(from_ms(int(job.spec["due_ms"])))
            return lambda raw: {"time": due}
        if status is JobStatus.SCHEDULED:
            # Waiting for a retry's backoff, in RQ's scheduled registry.
            registry = ScheduledJobRegistry(job.origin, connection=self.connection, serializer=JSONSerializer)
            score = ask("ZSCORE", registry.key, job.id)
            return lambda raw: {
                "time": iso(datetime.fromtimestamp(raw[score], tz=timezone.utc)) if raw[score] is not None else None
            }
        queued = ask("LLEN", self.queues[Priority(job.origin)].key)
        return lambda raw: {"worker": {"queue": job.origin, "queued": raw[queued]}}

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
        waiting_for: bool = False,
    ) -> Page:
        """Tasks newest first. A page may hold fewer than `limit` tasks when a filter is rare; follow
        `next_cursor` until it is None to see every match exactly once, even while tasks arrive.
        With `waiting_for`, each that has not started says what it waits for, as `get` does."""
        if schedule_id:
            index = keys.schedule_runs_index(schedule_id)
            wanted_type = task_type
        else:
            index = keys.type_index(task_type) if task_type else keys.TASK_INDEX
            wanted_type = None
        upper = "(" + _decode_cursor(cursor) if cursor else "+"
        chunk_size = max(limit, 100) if status or wanted_type or id_prefix else limit
        found: list[Task] = []
        jobs: list[TaskJob] = []
        scanned = 0
        while len(found) < limit and scanned < SCAN_BUDGET:
            members = [as_text(m) for m in self.connection.zrevrangebylex(index, upper, "-", 0, chunk_size)]
            if not members:
                return self._page(found, jobs, None, waiting_for)
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
                    jobs.append(job)
                    if len(found) == limit:
                        break
            store.note_unreadable(self.connection, unreadable)
            if stale:
                # Jobs RQ expired after their result TTL; their index entries go with them.
                self.connection.zrem(index, *stale)
            if len(members) < chunk_size and len(found) < limit:
                return self._page(found, jobs, None, waiting_for)
        return self._page(found, jobs, _encode_cursor(upper[1:]), waiting_for)

    def _page(self, tasks: list[Task], jobs: list[TaskJob], cursor: str | None, waiting_for: bool) -> Page:
        if waiting_for:
            waits = [n for n, task in enumerate(tasks) if _waits(task)]
            for n, waiting in zip(waits, self._waiting_for([jobs[n] for n in waits]), strict=True):
                tasks[n] = replace(tasks[n], waiting_for=waiting)
        return Page(tasks, cursor)

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


def _waits(task: Task) -> bool:
    """Whether the task has not started, so something keeps it waiting."""
    return not task.status.is_terminal and task.status is not TaskStatus.RUNNING


def _encode_cursor(member: str) -> str:
    """A page's cursor is the index member it ends at (`<created µs>:<id>`, URL-safe as it is)."""
    return member


def _decode_cursor(cursor: str) -> str:
    if not re.fullmatch(store.INDEX_MEMBER_PATTERN, cursor):
        raise InvalidInput("cursor is not one this server issued", [FieldError("cursor", "invalid cursor")])
    return cursor
