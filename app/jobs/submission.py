"""Putting tasks into Redis: one or a whole DAG, all or nothing, in one MULTI/EXEC.

The new ids are claimed first, so two submissions of one id cannot both create it; parents
outside the batch are WATCHed from the checks to the write, so none can vanish or fail unseen in
between. Each task is written in the state its parents allow: canceled at once (a parent already
failed), held for its time, pending on parents, or queued.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from itertools import chain
from operator import attrgetter
from typing import Any
from uuid import uuid4

from hiredis import pack_command
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, WatchError
from rq.defaults import RQ_KEY_PREFIX
from rq.job import JobStatus
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry
from rq.registry import CanceledJobRegistry, DeferredJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from app import codec, keys
from app.clock import to_ms
from app.defaults import CLAIM_TTL_MS
from app.errors import (
    DependencyCycle,
    FieldError,
    InvalidTask,
    Overloaded,
    PayloadTooLarge,
    SubmissionInProgress,
    TaskConflict,
    UnknownTaskType,
)
from app.graph import dependency_failed_error, edge_met, topological_order
from app.jobs import events, store
from app.jobs.autopipeline import AutoPipeline
from app.jobs.bulk import FastTransaction
from app.jobs.dependencies import parent_statuses
from app.jobs.factory import Factory, Planned, Shapes
from app.jobs.job import TaskJob
from app.jobs.status import task_status
from app.jobs.timers import hold
from app.jobs.writer import JobWriter, add_dependencies
from app.model import Priority, Task, TaskSpec, TaskStatus, assembler
from app.registry import Registry

_planned = assembler(Planned, ("index", "task_id", "spec", "task_type", "fingerprint", "actor"))
"""Planned(...) without its frozen __init__, which costs a batch of 10,000 tasks some 10 ms."""

_BY_INDEX = attrgetter("index")
"""Planned tasks in request order (the sort key)."""

Placement = tuple[JobStatus, datetime, datetime | None, dict[str, str] | None]
"""Where a submitted task went: its status, creation time, enqueue time and error (Factory.task)."""


STORED, CLAIMED, FULL = 1, 2, 3

_DEFERRED = {priority: DeferredJobRegistry.key_template.format(priority.value) for priority in Priority}
"""RQ's deferred registry of each priority's queue."""


def _lua_list(names: list[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


_QUEUED = _lua_list([Queue.redis_queue_namespace_prefix + q for q in keys.QUEUES])
_WAITING = _lua_list(
    [
        *(DeferredJobRegistry.key_template.format(q) for q in keys.QUEUES),
        *(ScheduledJobRegistry.key_template.format(q) for q in keys.QUEUES),
        keys.HELD,
    ]
)

UNFINISHED = f"""
-- Tasks stored and not yet finished: queued (in a queue or a limit's waiting line), pending,
-- or waiting for their time (a start time or a retry's backoff). A few counters, no walk.
local function unfinished()
    local n = 0
    for _, queue in ipairs({_QUEUED}) do n = n + redis.call('LLEN', queue) end
    for _, registry in ipairs({_WAITING}) do n = n + redis.call('ZCARD', registry) end
    for _, limit in ipairs(redis.call('SMEMBERS', '{RateLimitRegistry.rl_keys_key}')) do
        n = n + redis.call('ZCARD', '{RQ_KEY_PREFIX}:rl:' .. limit .. ':rate_limited')
    end
    return n
end

-- Whether `adding` tasks more would take the unfinished ones past `cap` (0: no cap). Every
-- stored task is in the task index, so while it holds few enough, one read answers instead of
-- the dozen of `unfinished`.
local function past_cap(cap, adding)
    if cap <= 0 or redis.call('ZCARD', '{keys.TASK_INDEX}') + adding <= cap then return false end
    return unfinished() + adding > cap
end
"""
"""Lua functions for the scripts that store tasks: what RQFLOW_MAX_UNFINISHED caps, and the check."""

# KEYS: the claims set, then the job key of each new id. ARGV: now (ms), claim expiry (ms), the
# cap on unfinished tasks (0: none), then the new ids. Claims nothing and returns STORED if any id
# is stored, CLAIMED if any is claimed by a submission in flight, FULL if the new tasks would take
# the unfinished ones past the cap; else claims them all and returns 0. Each step is one command
# per 4,000 ids (Lua's `unpack` stops at 8,000 values), so 10,000 ids cost Redis a few milliseconds.
RESERVE = (
    UNFINISHED
    + """
local step = 4000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 2, #KEYS, step do
    if redis.call('EXISTS', unpack(KEYS, i, math.min(i + step - 1, #KEYS))) > 0 then return 1 end  -- STORED
end
for i = 4, #ARGV, step do
    local scores = redis.call('ZMSCORE', KEYS[1], unpack(ARGV, i, math.min(i + step - 1, #ARGV)))
    for _, score in ipairs(scores) do
        if score then return 2 end  -- CLAIMED
    end
end
if past_cap(tonumber(ARGV[3]), #ARGV - 3) then return 3 end  -- FULL
for i = 4, #ARGV, step / 2 do
    local members = {}
    for j = i, math.min(i + step / 2 - 1, #ARGV) do
        members[#members + 1] = ARGV[2]
        members[#members + 1] = ARGV[j]
    end
    redis.call('ZADD', KEYS[1], unpack(members))
end
return 0
"""
)


# One task with nothing to read first (no dependencies, no concurrency limit): the check of its id
# and all of its writes in one script, one round trip instead of the reservation's and the
# transaction's. KEYS: the claims set, the job key. ARGV: now (ms), the id, the cap on unfinished
# tasks (0: none), then the writes, each as its number of words followed by the words.
# Returns STORED, CLAIMED, FULL, or 0 once written.
WRITE_ONE = (
    UNFINISHED
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end  -- STORED
local claimed = redis.call('ZSCORE', KEYS[1], ARGV[2])
if claimed and tonumber(claimed) > tonumber(ARGV[1]) then return 2 end  -- CLAIMED
if past_cap(tonumber(ARGV[3]), 1) then return 3 end  -- FULL
local i = 4
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
end
return 0
"""
)


class Submission:
    def __init__(
        self,
        connection: Redis,
        registry: Registry,
        result_ttl_s: int,
        queues: dict[Any, Queue],
        failed_ttl_s: int | None = None,
        max_unfinished: int = 0,
        max_payload_bytes: int = 0,
    ) -> None:
        """`max_unfinished`: RQFLOW_MAX_UNFINISHED (0: no cap); `max_payload_bytes`:
        RQFLOW_MAX_PAYLOAD_BYTES, one task's payload as JSON (0: no cap)."""
        self.connection = connection
        self.registry = registry
        self.result_ttl_s = result_ttl_s
        self.queues = queues
        self.factory = Factory(queues, result_ttl_s, failed_ttl_s)
        self.max_unfinished = max_unfinished
        self.max_payload_bytes = max_payload_bytes
        self._reserve = connection.register_script(RESERVE)
        self._write_one = connection.register_script(WRITE_ONE)

    def store(
        self,
        specs: Sequence[TaskSpec],
        *,
        batch: bool,
        dry_run: bool = False,
        meanwhile: Callable[[Outcome], None] | None = None,
        actor: str | None = None,
    ) -> Outcome:
        """Store every task or none; answers with an Outcome, which builds the tasks (in request
        order) only if asked: a summary of 10,000 tasks needs their statuses, not 10,000 Task
        objects, and says whether they were created (False: the same submission came again).
        `batch` only changes how errors name fields.

        `meanwhile`, if given, is called with the outcome as it will be returned while Redis runs
        the transaction, so that a caller can encode its answer in that time instead of after it;
        again if the transaction is retried, and not at all where there is no such wait (a repeat,
        a dry run, or tasks whose place a limit decides inside Redis).

        The new ids are reserved first by one atomic script (WATCHing thousands of keys costs Redis
        quadratic time); parents outside the batch are WATCHed until the write commits.
        """
        plan, outside = self._plan(specs, batch, actor)
        ids = [p.task_id for p in plan]
        new_keys = [TaskJob.key_for(task_id) for task_id in ids]
        if len(plan) == 1 and not dry_run and _one_script(plan[0]):
            written_one = self._submit_one(plan[0])
            if written_one is not None:
                return written_one
        reservation = None
        if dry_run:
            if self.connection.exists(*new_keys):
                return self._repeat(plan)
        else:
            now_ms = int(time.time() * 1000)
            reservation = _Reservation(
                [keys.CLAIMS, *new_keys], [now_ms, now_ms + CLAIM_TTL_MS, self.max_unfinished, *ids]
            )
            if outside:
                # The parents' statuses are read before the writes are made; the ids are claimed
                # before those reads. Without such parents, the claim goes out ahead of the writes
                # in their transaction (`_write`), and Redis runs it while they are made.
                reservation.taken = self._reserve(keys=reservation.keys, args=reservation.args)
                if reservation.taken != 0:
                    return self._refused(reservation.taken, plan)
        written = False
        try:
            with gc_paused():
                outcome = self._write(plan, outside, batch, dry_run, meanwhile, reservation)
            written = True
        except _Refusal:
            assert reservation is not None and reservation.taken is not None
            return self._refused(reservation.taken, plan)
        finally:
            if reservation is not None and reservation.taken == 0 and not written:
                self.connection.zrem(keys.CLAIMS, *ids)  # a successful write drops them itself
        limited = [
            p.task_id
            for p, placement in outcome.placed
            if p.task_type.concurrency and task_status(placement[0]) is TaskStatus.QUEUED
        ]
        if limited and not dry_run:
            # Whether a limited task got a slot (and so a queued_at) was decided inside Redis.
            outcome.known.update(
                (job.id, job.to_task(latest)) for job, latest in filter(None, store.load(self.connection, limited))
            )
        return outcome

    def _refused(self, taken: int, plan: list[Planned]) -> Outcome:
        """What to answer when RESERVE claimed nothing (it answered `taken`)."""
        if taken == STORED:
            return self._repeat(plan)
        if taken == CLAIMED:
            raise _in_progress("some of these ids")
        raise self._full(len(plan))

    def _submit_one(self, p: Planned) -> Outcome | None:
        """One task in one round trip (WRITE_ONE); None if its writes need more than plain
        commands (a script of their own), and the general path must take it."""
        one = self._prepare_one(p)
        if one is None:
            return None
        taken = self._write_one(keys=one.keys, args=one.words)
        if taken == STORED:
            return self._repeat([p])
        one.check(taken)
        return Outcome(self.factory, [p], True, one.placed)

    async def submit_one(
        self, pipeline: AutoPipeline, spec: TaskSpec, actor: str | None = None
    ) -> tuple[Task, bool] | None:
        """`submit` of one task through an asyncio pipeline, for the API's event loop: no thread
        hop and no blocked loop while Redis runs the script. None where the general path must take
        it (dependencies, a limit, or an id already stored, whose repeat needs reads)."""
        if spec.dependencies:
            return None  # before planning it: the general path plans it again
        p = self._plan([spec], batch=False, actor=actor)[0][0]
        one = self._prepare_one(p) if _one_script(p) else None
        if one is None:
            return None
        command = ("EVALSHA", self._write_one.sha, len(one.keys), *one.keys, *one.words)
        packed = pack_command(command)
        try:
            taken = await pipeline.call(packed)
        except NoScriptError:  # Redis restarted, or its scripts were flushed
            await pipeline.client.script_load(WRITE_ONE)
            taken = await pipeline.call(packed)
        except RedisConnectionError:
            # A connection Redis dropped (a restart) fails its first use; the pipeline does not
            # retry, not knowing what is safe to send twice. This script is: if the first one
            # stored the task, the second answers STORED, and the stored task is the answer.
            taken = await pipeline.call(packed)
        if taken == STORED:
            return None
        one.check(taken)
        (task,) = Outcome(self.factory, [p], True, one.placed).tasks()
        return task, True

    def _full(self, count: int) -> Overloaded:
        what = "this task" if count == 1 else f"these {count} tasks"
        return Overloaded(
            f"the tasks not yet finished are at the limit of {self.max_unfinished} (RQFLOW_MAX_UNFINISHED) "
            f"and {what} would pass it; nothing was stored, send again once workers have caught up"
        )

    def _prepare_one(self, p: Planned, created_at: datetime | None = None) -> _OneWrite | None:
        created_at = created_at or datetime.now(timezone.utc)
        if _due(p.spec, created_at) is None:
            commands, placed = self._queued_one(p, created_at)
        else:
            recorder = _Recorder(self.connection)
            placed = self._write_all([p], {}, recorder, dry_run=False, created_at=created_at)
            commands = [args for args, _ in recorder.command_stack]
        writes: list[Any] = []
        for args in commands:
            if args[0] in ("EVAL", "EVALSHA"):
                return None
            writes += [len(args), *args]
        words = [int(time.time() * 1000), p.task_id, self.max_unfinished, *writes]
        return _OneWrite(self, placed, [keys.CLAIMS, TaskJob.key_for(p.task_id)], words)

    def _queued_one(
        self, p: Planned, created_at: datetime
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Planned, Placement]]]:
        """The commands `_write_all` queues for one task queued at once (no parents, limit or
        time), written out directly: the recording pipeline, the batch's bookkeeping and redis-py's
        command methods cost a single submission more than all the rest of its Python (a test
        holds the two equal)."""
        spec = p.spec
        template, own = Shapes(self.factory, created_at).parts(p, JobStatus.QUEUED)
        member: dict[str, float] = {store.index_member(created_at, p.task_id): 0}
        indexes = {keys.TASK_INDEX: member, keys.type_index(spec.type): member}
        if spec.schedule_id:
            indexes[keys.schedule_runs_index(spec.schedule_id)] = member
        recorded = _Commands()
        recorded.execute_command("HSET", TaskJob.key_for(p.task_id), *template, *own)
        _bookkeeping(
            recorded,
            indexes,
            {self.queues[spec.priority].name: [p.task_id]},
            [p.task_id],
            [events.submitted(int(created_at.timestamp() * 1000), p.task_id, TaskStatus.QUEUED, spec.type)],
            {events.submitted_field(spec.type): 1},
        )
        return recorded.commands, [(p, (JobStatus.QUEUED, created_at, created_at, None))]

    def _write(
        self,
        plan: list[Planned],
        outside: list[str],
        batch: bool,
        dry_run: bool,
        meanwhile: Callable[[Outcome], None] | None = None,
        reservation: _Reservation | None = None,
    ) -> Outcome:
        """Raises _Refusal if `reservation`, not yet sent, claims nothing: it is sent ahead of the
        writes, and answered before their EXEC."""
        with FastTransaction.on(self.connection) as pipe:
            while True:
                try:
                    if outside:
                        pipe.watch(*(TaskJob.key_for(parent) for parent in outside))
                    statuses = dict(zip(outside, parent_statuses(self.connection, outside), strict=True))
                    if statuses:
                        self._check_parents_exist(plan, statuses, batch)
                    if reservation is not None and reservation.taken is None:
                        pipe.ahead("EVAL", RESERVE, len(reservation.keys), *reservation.keys, *reservation.args)
                    try:
                        placed = self._write_all(plan, statuses, pipe, dry_run)
                    except BaseException:
                        _settle(reservation, pipe)
                        raise
                    if reservation is not None and reservation.taken is None:
                        reservation.taken = pipe.ahead_reply()
                        if reservation.taken != 0:
                            raise _Refusal()
                    outcome = Outcome(self.factory, sorted(plan, key=_BY_INDEX), not dry_run, placed)
                    if dry_run:
                        pipe.reset()
                    elif meanwhile is None or any(p.task_type.concurrency for p in plan):
                        pipe.execute()
                    else:
                        # Redis runs the writes meanwhile.
                        pipe.execute(while_waiting=partial(meanwhile, outcome))
                    return outcome
                except WatchError:
                    continue

    def _plan(
        self, specs: Sequence[TaskSpec], batch: bool, actor: str | None = None
    ) -> tuple[list[Planned], list[str]]:
        """Validate names and ids, and order the tasks parents first (or name the cycle); `actor`
        is the API key (its name) submitting them. Also the parents outside the batch, sorted."""
        errors: list[FieldError] = []
        too_large: list[FieldError] = []
        planned: dict[str, Planned] = {}
        for index, spec in enumerate(specs):
            task_id = spec.id or uuid4().hex
            try:
                task_type = self.registry.get_type(spec.type)
            except UnknownTaskType as unknown:
                errors.append(FieldError(_where(batch, index, "type"), f"task {task_id!r}: {unknown.detail}"))
                continue
            if task_id in planned:
                errors.append(
                    FieldError(_where(batch, index, "id"), f"task id {task_id!r} appears more than once in the batch")
                )
                continue
            if self.max_payload_bytes and len(codec.dumps(spec.payload)) > self.max_payload_bytes:
                too_large.append(
                    FieldError(
                        _where(batch, index, "payload"),
                        f"task {task_id!r}: the payload is larger than {self.max_payload_bytes} bytes "
                        f"of JSON (RQFLOW_MAX_PAYLOAD_BYTES)",
                    )
                )
            planned[task_id] = _planned((index, task_id, spec, task_type, spec.fingerprint(), actor))
        if errors:
            raise InvalidTask("; ".join(e.message for e in errors), errors)
        if too_large:
            raise PayloadTooLarge("; ".join(e.message for e in too_large[:20]), too_large)
        outside: set[str] = set()
        in_order = True
        for p in planned.values():
            for edge in p.spec.dependencies:
                parent = planned.get(edge.parent)
                if parent is None:
                    outside.add(edge.parent)
                elif parent.index >= p.index:  # after it, or itself: a cycle to name, maybe
                    in_order = False
        if in_order:  # as most batches come: parents first already, and so no cycle
            return list(planned.values()), sorted(outside)
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
        return [planned[i] for i in order], sorted(outside)

    def _check_parents_exist(self, plan: list[Planned], statuses: dict[str, TaskStatus | None], batch: bool) -> None:
        missing = [
            FieldError(_where(batch, p.index, f"dependencies.{n}"), f"task {p.task_id!r}: no task with id {e.parent!r}")
            for p in plan
            for n, e in enumerate(p.spec.dependencies)
            if e.parent in statuses and statuses[e.parent] is None
        ]
        if missing:
            raise InvalidTask("; ".join(e.message for e in missing), missing)

    def _repeat(self, plan: list[Planned]) -> Outcome:
        loaded = store.load(self.connection, [p.task_id for p in plan])
        differing = [
            p.task_id
            for p, found in zip(plan, loaded, strict=True)
            if not found or found[0].fingerprint != p.fingerprint
        ]
        if differing:
            listed = ", ".join(differing[:20])
            raise TaskConflict(f"tasks with these ids exist with other contents (or not all exist): {listed}")
        known = {found[0].id: found[0].to_task(found[1]) for found in loaded if found}
        return Outcome(self.factory, sorted(plan, key=_BY_INDEX), False, [], known)

    def _write_all(
        self,
        plan: list[Planned],
        outside: dict[str, TaskStatus | None],
        pipe: Pipeline,
        dry_run: bool,
        created_at: datetime | None = None,
    ) -> list[tuple[Planned, Placement]]:
        """Queue every write on `pipe` (after MULTI), parents before children; returns where
        each task went."""
        created_at = created_at or datetime.now(timezone.utc)
        shapes = Shapes(self.factory, created_at)
        canceled: set[str] = set()
        placed: list[tuple[Planned, Placement]] = []
        index_prefix = store.index_member(created_at, "")  # the tasks of a batch share their creation time
        everything: dict[str, float] = {}
        indexes: dict[str, dict[str, float]] = {keys.TASK_INDEX: everything}
        by_type: dict[str, dict[str, float]] = {}
        pushes: dict[str, list[str]] = {}
        told: list[dict[str, Any]] = [{}] * len(plan)
        submitted: Counter[str] = Counter()
        doomed: Counter[str] = Counter()
        at_ms = int(created_at.timestamp() * 1000)
        registered_at = created_at.timestamp()
        if not dry_run:
            pipe.multi()
        # A dry run makes every write into a no-op and so returns exactly what would be stored.
        target: Any = _Discard() if dry_run else pipe
        writer = JobWriter(target, shapes, packed=isinstance(target, FastTransaction))
        for p in plan:
            spec = p.spec
            blocked, waiting = _verdict(p, outside, canceled) if spec.dependencies else (None, False)
            due = _due(spec, created_at) if spec.run_at or spec.delay_ms else None
            queued_at = None
            error = None
            if blocked:
                canceled.add(p.task_id)
                status = JobStatus.CANCELED
                error = self._store_canceled(self.factory.build(p, created_at, status), *blocked, target)
                doomed[spec.type] += 1  # by a parent that had failed: it ends here
            elif due is not None:
                status = JobStatus.SCHEDULED
                self._hold_until(p, self.factory.build(p, created_at, status), due, target, indexes)
            elif waiting:
                status = JobStatus.DEFERRED
                self._defer(p, indexes, registered_at)
                writer.add(p, status)
            elif p.task_type.concurrency:
                job = self.factory.build(p, created_at, JobStatus.QUEUED)
                self.enqueue(job, target)
                status, queued_at = job.get_status(refresh=False), job.enqueued_at
            else:
                # RQ's Queue._enqueue_job, with the ids pushed in one RPUSH per queue, in
                # dependency order, after every job is written.
                status, queued_at = JobStatus.QUEUED, created_at
                writer.add(p, status)
                pushes.setdefault(self.queues[spec.priority].name, []).append(p.task_id)
            placed.append((p, (status, created_at, queued_at, error)))
            told[p.index] = events.submitted(at_ms, p.task_id, task_status(status), spec.type)
            submitted[spec.type] += 1
            member = index_prefix + p.task_id
            everything[member] = 0
            of_type = by_type.get(spec.type)
            if of_type is None:
                of_type = by_type[spec.type] = indexes.setdefault(keys.type_index(spec.type), {})
            of_type[member] = 0
            if spec.schedule_id:
                indexes.setdefault(keys.schedule_runs_index(spec.schedule_id), {})[member] = 0
        counts = {events.submitted_field(t): n for t, n in submitted.items()}
        counts.update((events.finished_field(t, TaskStatus.CANCELED), n) for t, n in doomed.items())
        _bookkeeping(target, indexes, pushes, [p.task_id for p in plan], told, counts)
        return placed

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

    @staticmethod
    def _defer(p: Planned, indexes: dict[str, dict[str, float]], registered_at: float) -> None:
        """RQ's `Job.register_dependency`, with the deferred-registry entries gathered into one ZADD
        per queue (`indexes`) instead of one registry object and command per task; the caller
        writes the dependency sets."""
        indexes.setdefault(_DEFERRED[p.spec.priority], {})[p.task_id] = registered_at

    def _hold_until(
        self, p: Planned, job: TaskJob, due: datetime, pipe: Any, indexes: dict[str, dict[str, float]]
    ) -> None:
        """Store a timed task SCHEDULED, with a timer that releases it at `due` (TaskService.release).

        Its dependencies are registered now, so a parent that fails before `due` cancels it at once.
        """
        job.spec["due_ms"] = due_ms = to_ms(due)
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        job.save(pipeline=pipe)
        if p.spec.dependencies:
            self._defer(p, indexes, job.created_at.timestamp())
            add_dependencies(pipe, p.task_id, [e.parent for e in p.spec.dependencies])
        hold(self.connection, job.id, due_ms, pipe)

    def _store_canceled(self, job: TaskJob, parent: str, parent_status: TaskStatus | None, pipe: Any) -> dict[str, str]:
        error = dependency_failed_error(parent, parent_status)
        job.error = error
        job.set_status(JobStatus.CANCELED, pipeline=pipe)
        job.ended_at = job.created_at
        job.save(pipeline=pipe)
        pipe.hset(job.key, keys.FIELD_ERROR, json.dumps(error))
        CanceledJobRegistry(job.origin, connection=self.connection, serializer=JSONSerializer).add(job, pipeline=pipe)
        job.cleanup(ttl=self.result_ttl_s, pipeline=pipe)
        return error


def _bookkeeping(
    target: Any,
    indexes: dict[str, dict[str, float]],
    pushes: dict[str, list[str]],
    ids: list[str],
    told: list[dict[str, Any]],
    counts: dict[str, int],
) -> None:
    """Queue on `target` what a submission writes besides its jobs: the index entries, the pushes
    onto each queue (with its doorbell), the end of the ids' claims, the events in request order
    and the counts."""
    for index, members in indexes.items():
        target.execute_command("ZADD", index, *chain.from_iterable(zip(members.values(), members, strict=True)))
    for queue_name, queued in pushes.items():
        queue_key = Queue.redis_queue_namespace_prefix + queue_name
        target.execute_command("SADD", Queue.redis_queues_keys, queue_key)
        target.execute_command("RPUSH", queue_key, *queued)
        target.execute_command("ZADD", keys.wake_key(queue_name), 0, "w")
    target.execute_command("ZREM", keys.CLAIMS, *ids)
    events.told(target, told)
    events.counted(target, counts)


_gc_pauses = 0
_gc_was_enabled = False
_gc_resting_since = 0.0
_gc_lock = threading.Lock()

GC_REST_MAX_S = 10.0
"""The longest the cyclic collector rests while batches overlap without a gap: then the next one
to start runs it once (cyclic garbage of every other request waits for it meanwhile)."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """A 10,000-task batch allocates a few hundred thousand short-lived objects; the cyclic
    collector would spend more time walking them than building the batch takes. Reference
    counting still frees them. Nests, and is shared by the threads of one process; past
    GC_REST_MAX_S of rest it collects once, however many batches keep it resting."""
    global _gc_pauses, _gc_was_enabled, _gc_resting_since
    overdue = False
    with _gc_lock:
        now = time.monotonic()
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
            _gc_resting_since = now
        elif now - _gc_resting_since > GC_REST_MAX_S:
            overdue, _gc_resting_since = True, now
        _gc_pauses += 1
    try:
        if overdue and _gc_was_enabled:
            gc.collect()
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _settle(reservation: _Reservation | None, pipe: FastTransaction) -> None:
    """Read whether the claims sent ahead of the writes were taken, where the writes failed after
    they went out, so that the caller releases claims of its own at once. A claim whose answer
    cannot be read lapses on its own (CLAIM_TTL_MS)."""
    if reservation is None or reservation.taken is not None or not pipe.multi_sent or pipe.ahead_of_multi is None:
        return
    with suppress(RedisError):
        reservation.taken = pipe.ahead_reply()


def _verdict(
    p: Planned, outside: dict[str, TaskStatus | None], canceled: set[str]
) -> tuple[tuple[str, TaskStatus | None] | None, bool]:
    """(the parent that dooms the task and its status, or None; whether it waits on a parent)."""
    waiting = False
    for edge in p.spec.dependencies:
        if edge.parent in canceled:
            return (edge.parent, TaskStatus.CANCELED), waiting
        if edge.parent not in outside:
            waiting = True  # a parent in this batch has not run yet
            continue
        met = edge_met(outside[edge.parent], edge.allow_failure)
        if met is False:
            return (edge.parent, outside[edge.parent]), waiting
        waiting = waiting or met is None
    return None, waiting


def _due(spec: TaskSpec, now: datetime) -> datetime | None:
    due = spec.run_at or (now + timedelta(milliseconds=spec.delay_ms) if spec.delay_ms else None)
    return due if due is not None and due > now else None


def _where(batch: bool, index: int, field: str) -> str:
    return f"tasks.{index}.{field}" if batch else field


def _in_progress(ids: str) -> SubmissionInProgress:
    return SubmissionInProgress(
        f"another submission of {ids} is being written (or was cut off by a crash "
        f"less than {CLAIM_TTL_MS // 1000} s ago); send this one again shortly"
    )


def _one_script(p: Planned) -> bool:
    """Whether WRITE_ONE can store `p` alone: nothing to read first (no parents to check, no
    concurrency limit to go through RQ's own script)."""
    return not p.spec.dependencies and not p.task_type.concurrency


@dataclass
class Outcome:
    """What a submission stored: the tasks, built only when asked for, or just their statuses."""

    factory: Factory
    order: list[Planned]
    """The tasks in request order."""
    created: bool
    """False: the same submission came again (or a dry run), and nothing was written."""
    placed: list[tuple[Planned, Placement]]
    """Where each new task went, as written."""
    known: dict[str, Task] = field(default_factory=dict)
    """Tasks as read back from Redis (a repeat's, or those whose place a limit decided), or
    already built; they take precedence over `placed`."""

    def tasks(self) -> list[Task]:
        known, factory = self.known, self.factory
        placements = {p.task_id: placement for p, placement in self.placed}
        for p in self.order:
            if p.task_id not in known:
                known[p.task_id] = factory.task(p, *placements[p.task_id])
        return [known[p.task_id] for p in self.order]

    def statuses(self) -> list[tuple[str, TaskStatus]]:
        """Each task's id and status, in request order."""
        known = self.known
        placements = {p.task_id: placement[0] for p, placement in self.placed}
        return [
            (p.task_id, known[p.task_id].status if p.task_id in known else task_status(placements[p.task_id]))
            for p in self.order
        ]


@dataclass
class _Reservation:
    """RESERVE's keys and arguments for the ids of one submission, and its answer once read."""

    keys: list[str]
    args: list[Any]
    taken: int | None = None


class _Refusal(Exception):
    """RESERVE, sent ahead of the writes, claimed nothing (its answer is in the _Reservation)."""


@dataclass(frozen=True)
class _OneWrite:
    """One task's check and writes, ready for WRITE_ONE, and what to answer once it ran."""

    submission: Submission
    placed: list[tuple[Planned, Placement]]
    keys: list[str]
    words: list[Any]

    def check(self, taken: Any) -> None:
        """Why WRITE_ONE did not store the task, if it did not (any outcome but STORED)."""
        if taken == CLAIMED:
            raise _in_progress("this id")
        if taken == FULL:
            raise self.submission._full(1)


class _Recorder(Pipeline):
    """Stands in for the transaction of one task (Submission._submit_one): keeps the commands,
    as redis-py builds them, for one script to run, and sends nothing."""

    def __init__(self, connection: Redis) -> None:
        super().__init__(connection.connection_pool, connection.response_callbacks, False, None)

    def multi(self) -> None:
        """The script is the transaction."""


class _Commands:
    """Keeps the commands given to `execute_command`, as events.told and events.counted give them."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)


class _Discard:
    """Stands in for a pipeline in a dry run: takes every write and sends none."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
