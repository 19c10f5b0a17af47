"""One-shot timers on rq-scheduler: "release task X at T", "fire schedule Y at T".

rq-scheduler keeps due times in whole seconds and fires at most once per poll. A timer is stored
with score floor(T) and a member that sorts by the exact T in milliseconds, so within one poll
the timers come out in time order and the firing side can wait for each one's exact moment:
nothing fires early, and an idle system fires within one poll interval.

Timers are only wake-ups: whoever fires one re-checks the task or schedule it names, so a timer
left behind by an edit or a deletion is harmless, and firing one twice (two schedulers) is too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app import keys


class TimerJob(Job):
    """The job class rq-scheduler loads timers with (`rqscheduler -j`): JSON only, and it ignores
    any queue class a job names, so nothing in Redis can make the scheduler import code."""

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        super().__init__(id=id, connection=connection)
        self.serializer = JSONSerializer

    def restore(self, raw_data: Any) -> Any:
        super().restore(raw_data)
        self.meta.pop("queue_class_name", None)


@dataclass(frozen=True)
class Timer:
    kind: str
    """`release` (a timed task is due) or `schedule` (a schedule fires)."""
    ref: str
    at_ms: int

    @property
    def id(self) -> str:
        return f"t{self.at_ms:013d}-{self.kind}-{self.ref}"

    @property
    def at(self) -> float:
        return self.at_ms / 1000

    @classmethod
    def from_job(cls, job: Job) -> Timer:
        kwargs = job.kwargs
        return cls(kind=str(kwargs["kind"]), ref=str(kwargs["ref"]), at_ms=int(kwargs["at_ms"]))


def hold(connection: Redis, task_id: str, due_ms: int, pipeline: Pipeline) -> None:
    """Keep a timed task until `due_ms`: listed as held (the reconciler's check that its timer was
    not lost) and with the timer that releases it (TaskService.release)."""
    pipeline.zadd(keys.HELD, {task_id: due_ms})
    arm(connection, Timer("release", task_id, due_ms), pipeline=pipeline)


def arm(connection: Redis, timer: Timer, pipeline: Pipeline | None = None) -> None:
    """Store the timer where the `rqscheduler` process will fire it (idempotent)."""
    job = TimerJob.create(
        keys.TIMER_FUNC,
        kwargs={"kind": timer.kind, "ref": timer.ref, "at_ms": timer.at_ms},
        connection=connection,
        id=timer.id,
        origin=keys.TIMER_QUEUE,
        description=f"timer: {timer.kind} {timer.ref}",
        status=JobStatus.SCHEDULED,
    )
    target = pipeline if pipeline is not None else connection.pipeline()
    job.save(pipeline=target)
    target.zadd(keys.TIMERS, {timer.id: math.floor(timer.at)})
    if pipeline is None:
        target.execute()
