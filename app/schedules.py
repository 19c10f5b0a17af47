"""Recurring tasks: schedules declared as data, fired by one-shot timers on rq-scheduler.

Each fire makes one ordinary task with `schedule_id` and the id `<schedule id>-<fire time>`,
created only if absent, so several schedulers firing the same timer still make one run. A
schedule keeps `next_run_at` as the truth: a timer whose time is not the schedule's next run
(left behind by an edit, a pause or a deletion) fires nothing.

Missed fires (no scheduler was running): when a scheduler returns, the overdue fire runs once,
and the next one is the first due after that moment; the fires in between are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from redis import Redis
from redis.client import Pipeline

from app import codec, cron, keys
from app.clock import Clock, from_ms, now, to_ms
from app.errors import BadCron, BadTimezone, FieldError, InvalidInput, ScheduleNotFound, TaskConflict, UnreadableRecord
from app.jobs import events, store
from app.jobs.tasks import TaskService
from app.jobs.timers import Timer, arm
from app.model import Backoff, Priority, TaskSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskTemplate:
    """The task every run of a schedule is made from (no id, no dependencies, no start time)."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    duration_ms: int | None = None
    priority: Priority = Priority.DEFAULT
    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    name: str | None = None

    def to_spec(self, task_id: str | None, schedule_id: str | None) -> TaskSpec:
        # Every template field is a TaskSpec field of the same name: one added to both needs no edit here.
        return TaskSpec(id=task_id, schedule_id=schedule_id, **{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class ScheduleSpec:
    task: TaskTemplate
    id: str | None = None
    cron: str | None = None
    timezone: str = "UTC"
    interval_s: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None
    paused: bool = False

    def fingerprint(self) -> str:
        return hashlib.sha256(_dump_spec(self).encode()).hexdigest()


@dataclass(frozen=True)
class Schedule:
    id: str
    spec: ScheduleSpec
    runs: int
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None
    next_run_ms: int | None
    """The next fire exactly as stored, which timers are compared with."""
    last_error: str | None

    @property
    def next_run_at(self) -> datetime | None:
        return from_ms(self.next_run_ms) if self.next_run_ms is not None else None


def next_fire(spec: ScheduleSpec, after: datetime, anchor: datetime, runs: int) -> datetime | None:
    """The schedule's first fire strictly after `after`, or None when it has no more.

    `anchor` is when an interval schedule without `start_at` started counting (its creation).
    """
    if spec.max_runs is not None and runs >= spec.max_runs:
        return None
    start = spec.start_at
    if spec.cron:
        floor = max(after, start - timedelta(microseconds=1)) if start else after
        fire = cron.next_fire(cron.parse(spec.cron), cron.zone(spec.timezone), floor)
    else:
        assert spec.interval_s
        origin = start or anchor + timedelta(seconds=spec.interval_s)
        if after < origin:
            fire = origin
        else:
            steps = math.floor((after - origin).total_seconds() / spec.interval_s) + 1
            fire = origin + timedelta(seconds=steps * spec.interval_s)
    if spec.end_at and fire > spec.end_at:
        return None
    return fire


def run_id(schedule_id: str, at: datetime) -> str:
    """The id of the run a fire makes: the same for every scheduler that fires it."""
    at = at.astimezone(timezone.utc)
    return f"{schedule_id}-{at:%Y%m%dT%H%M%S}{at.microsecond // 1000:03d}Z"


class ScheduleService:
    def __init__(self, connection: Redis, tasks: TaskService, clock: Clock = now) -> None:
        self.connection = connection
        self.tasks = tasks
        self.clock = clock
        """Where next fires are computed from; tests pass their own instead of waiting for wall time."""

    def validate(self, spec: ScheduleSpec) -> None:
        """Raise InvalidInput naming each field that does not fit."""
        errors = []
        try:
            self.tasks.registry.get_type(spec.task.type)
        except InvalidInput:
            errors.append(FieldError("task.type", f"unknown task type {spec.task.type!r}"))
        if spec.cron is not None:
            try:
                cron.parse(spec.cron)
            except BadCron as error:
                errors.append(FieldError("cron", str(error)))
        try:
            cron.zone(spec.timezone)
        except BadTimezone as error:
            errors.append(FieldError("timezone", str(error)))
        if errors:
            raise InvalidInput("; ".join(f"{e.loc}: {e.message}" for e in errors), errors)

    def create(self, spec: ScheduleSpec) -> tuple[Schedule, bool]:
        self.validate(spec)
        schedule_id = spec.id or uuid4().hex
        spec = replace(spec, id=schedule_id)
        key = keys.schedule_key(schedule_id)
        created = False

        def write(pipe: Pipeline) -> None:
            nonlocal created
            created = not pipe.exists(key)
            if not created:
                pipe.unwatch()
                return
            created_at = self.clock()
            pipe.multi()
            self._store(pipe, spec, runs=0, created=created_at)
            pipe.zadd(keys.SCHEDULE_INDEX, {schedule_id: to_ms(created_at)})

        self.connection.transaction(write, key)
        schedule = self.get(schedule_id)
        if not created and schedule.spec.fingerprint() != spec.fingerprint():
            raise TaskConflict(f"a different schedule with id {schedule_id!r} already exists")
        return schedule, created

    def replace(self, schedule_id: str, spec: ScheduleSpec, *, keep_paused: bool = False) -> Schedule:
        """A new definition (pause and resume included); runs so far are kept. `keep_paused`:
        paused or not as the schedule is when the write commits (a pause made meanwhile stays)."""
        self.validate(spec)
        spec = replace(spec, id=schedule_id)
        return self._rewrite(
            schedule_id, lambda current: replace(spec, paused=current.paused) if keep_paused and current else spec
        )

    def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        """Pause or resume, changing nothing else, whatever else changes the schedule meanwhile."""

        def paused_as_asked(current: ScheduleSpec | None) -> ScheduleSpec:
            if current is None:
                raise UnreadableRecord("schedule", schedule_id, "its definition does not read; replace it")
            return replace(current, id=schedule_id, paused=paused)

        return self._rewrite(schedule_id, paused_as_asked)

    def _rewrite(self, schedule_id: str, revise: Callable[[ScheduleSpec | None], ScheduleSpec]) -> Schedule:
        """Write `revise(the definition stored)` (None for one that does not read) in one WATCH
        transaction, keeping the runs so far."""

        def write(pipe: Pipeline) -> None:
            raw = pipe.hgetall(keys.schedule_key(schedule_id))  # read under the transaction's WATCH
            if not raw:
                raise ScheduleNotFound(schedule_id)
            stored: ScheduleSpec | None
            try:
                current = _schedule(schedule_id, raw)
            except UnreadableRecord:
                # A new definition is how a damaged one is mended; what can be kept of it is.
                stored = None
                runs, created = _salvage(raw, self.clock())
            else:
                stored, runs, created = current.spec, current.runs, current.created_at
            spec = revise(stored)
            pipe.multi()
            self._store(pipe, spec, runs=runs, created=created)
            pipe.srem(keys.UNREADABLE, f"schedule:{schedule_id}")

        self.connection.transaction(write, keys.schedule_key(schedule_id))
        return self.get(schedule_id)

    def _store(self, pipe: Pipeline, spec: ScheduleSpec, *, runs: int, created: datetime) -> None:
        """Queue the write of a definition, and the timer of its next fire, on `pipe` (in MULTI)."""
        assert spec.id
        updated = self.clock()
        upcoming = None if spec.paused else next_fire(spec, updated, anchor=created, runs=runs)
        fields = _fields(spec, runs=runs, created=created, updated=updated, upcoming=upcoming)
        pipe.hset(keys.schedule_key(spec.id), mapping=fields)
        if upcoming:
            arm(self.connection, Timer("schedule", spec.id, to_ms(upcoming)), pipeline=pipe)

    def delete(self, schedule_id: str) -> None:
        """Stop future runs; runs already made stay, with their `schedule_id`."""
        with self.connection.pipeline() as pipe:
            pipe.delete(keys.schedule_key(schedule_id))
            pipe.zrem(keys.SCHEDULE_INDEX, schedule_id)
            pipe.srem(keys.UNREADABLE, f"schedule:{schedule_id}")
            deleted, *_ = pipe.execute()
        if not deleted:
            raise ScheduleNotFound(schedule_id)

    def get(self, schedule_id: str) -> Schedule:
        raw = self.connection.hgetall(keys.schedule_key(schedule_id))
        if not raw:
            raise ScheduleNotFound(schedule_id)
        return _schedule(schedule_id, raw)

    def list_schedules(self) -> list[Schedule]:
        # The filter only narrows redis-py's typing (ZREVRANGE without scores answers members).
        ids = [
            codec.text(i) for i in self.connection.zrevrange(keys.SCHEDULE_INDEX, 0, -1) if isinstance(i, bytes | str)
        ]
        with self.connection.pipeline(transaction=False) as reads:
            for schedule_id in ids:
                reads.hgetall(keys.schedule_key(schedule_id))
            raws = reads.execute()
        schedules, unreadable = [], []
        for schedule_id, raw in zip(ids, raws, strict=True):
            if not raw:
                continue
            try:
                schedules.append(_schedule(schedule_id, raw))
            except UnreadableRecord as record:
                unreadable.append(record)
        store.note_unreadable(self.connection, unreadable)
        return schedules

    def fire(self, schedule_id: str, at_ms: int) -> None:
        """Make the run due at `at_ms` (if the schedule still wants it), then arm the next fire."""
        try:
            schedule = self.get(schedule_id)
        except ScheduleNotFound:
            return
        if schedule.spec.paused or schedule.next_run_at is None or schedule.next_run_ms != at_ms:
            return
        at = schedule.next_run_at
        error = None
        try:
            self.tasks.submit(schedule.spec.task.to_spec(run_id(schedule_id, at), schedule_id))
        except TaskConflict:
            pass  # another scheduler made this run, from a definition edited in between
        except InvalidInput as invalid:
            error = invalid.detail
            log.error("schedule %s could not make its run at %s: %s", schedule_id, at, error)
        self._advance(schedule_id, at_ms, error)

    def _advance(self, schedule_id: str, at_ms: int, error: str | None) -> None:
        key = keys.schedule_key(schedule_id)

        def write(pipe: Pipeline) -> None:
            raw = pipe.hgetall(key)
            schedule = _schedule(schedule_id, raw) if raw else None
            if schedule is None or schedule.next_run_at is None or schedule.next_run_ms != at_ms:
                pipe.unwatch()
                return  # deleted, or another scheduler advanced it: this fire is counted once
            runs = schedule.runs + (0 if error else 1)
            # A late fire (no scheduler was running) runs once; the next is after now.
            after = max(schedule.next_run_at, self.clock())
            upcoming = next_fire(schedule.spec, after, anchor=schedule.created_at, runs=runs)
            pipe.multi()
            fired = events.event("schedule_fired", schedule=schedule_id, task=run_id(schedule_id, schedule.next_run_at))
            events.told(pipe, [fired | ({"error": error} if error else {})])
            events.lag_observed(pipe, fired["at"] / 1000 - at_ms / 1000)
            next_run_ms = to_ms(upcoming) if upcoming else ""
            pipe.hset(
                key, mapping={"runs": runs, "last_run_ms": at_ms, "next_run_ms": next_run_ms, "last_error": error or ""}
            )
            if upcoming:
                arm(self.connection, Timer("schedule", schedule_id, to_ms(upcoming)), pipeline=pipe)

        self.connection.transaction(write, key)


def _from_ms(raw: bytes | str | None) -> datetime | None:
    text = codec.text(raw) if raw else ""
    return from_ms(int(text)) if text else None


def _salvage(raw: dict[Any, Any], now: datetime) -> tuple[int, datetime]:
    """Run count and creation time of a damaged schedule hash, where they still read (`now` for
    a creation time that does not)."""
    fields = {codec.text(k): codec.text(v) for k, v in raw.items()}
    runs = int(fields["runs"]) if fields.get("runs", "").isdigit() else 0
    created = fields.get("created_ms", "")
    return runs, from_ms(int(created)) if created.isdigit() and len(created) <= 15 else now


def _dump_spec(spec: ScheduleSpec) -> str:
    body = asdict(spec)
    body["task"]["priority"] = spec.task.priority.value
    for name in ("start_at", "end_at"):
        value = getattr(spec, name)
        body[name] = value.isoformat() if value else None
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _load_spec(raw: str) -> ScheduleSpec:
    body = codec.loads(raw)
    task = body.pop("task")
    task["priority"] = Priority(task["priority"])
    task["backoff"] = Backoff(**task["backoff"]) if task.get("backoff") else None
    for name in ("start_at", "end_at"):
        body[name] = datetime.fromisoformat(body[name]) if body.get(name) else None
    return ScheduleSpec(task=TaskTemplate(**task), **body)


def _fields(
    spec: ScheduleSpec, *, runs: int, created: datetime, updated: datetime, upcoming: datetime | None
) -> dict[Any, Any]:
    return {
        "spec": _dump_spec(spec),
        "runs": runs,
        "created_ms": to_ms(created),
        "updated_ms": to_ms(updated),
        "next_run_ms": to_ms(upcoming) if upcoming else "",
    }


def _schedule(schedule_id: str, raw: dict[Any, Any]) -> Schedule:
    """The schedule stored as `raw` (HGETALL); UnreadableRecord if any part of it does not decode."""
    try:
        return _decode(schedule_id, raw)
    except codec.DECODE_ERRORS as error:
        raise UnreadableRecord("schedule", schedule_id, f"{type(error).__name__}: {error}") from None


def _decode(schedule_id: str, raw: dict[Any, Any]) -> Schedule:
    fields = {codec.text(k): v for k, v in raw.items()}
    created = _from_ms(fields.get("created_ms")) or now()
    return Schedule(
        id=schedule_id,
        spec=_load_spec(codec.text(fields["spec"])),
        runs=int(fields.get("runs") or 0),
        created_at=created,
        updated_at=_from_ms(fields.get("updated_ms")) or created,
        last_run_at=_from_ms(fields.get("last_run_ms")),
        next_run_ms=int(codec.text(fields["next_run_ms"])) if fields.get("next_run_ms") else None,
        last_error=codec.text(fields["last_error"]) if fields.get("last_error") else None,
    )
