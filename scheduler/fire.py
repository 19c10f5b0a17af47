"""What the standard `rqscheduler` command fires rqflow's timers with:

    rqscheduler --url "$RQFLOW_REDIS_URL" --interval 0.25 \\
        --job-class scheduler.fire.TimerJob --queue-class scheduler.fire.FireQueue

rq-scheduler moves a due job to "its queue" by calling `queue.enqueue_job(job)`; FireQueue is
that queue: instead of pushing the timer anywhere, it waits for the timer's exact moment (rq-scheduler
only knows whole seconds) and fires it. Firing is idempotent, so two schedulers firing the same
timer after a lapsed lock (rq-scheduler#312) still make one run.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from rq.job import Job
from rq.queue import Queue

from app import logs
from app.defaults import TIMER_MAX_EARLY_S
from app.errors import DomainError
from app.jobs.store import connect
from app.jobs.tasks import TaskService
from app.jobs.timers import Timer, TimerJob
from app.registry import load_registry
from app.schedules import ScheduleService
from app.settings import get_settings

__all__ = ["FireQueue", "TimerJob", "fire"]

log = logging.getLogger(__name__)

# rqscheduler imports this module (its --job-class) right after setting up its own log handler:
# from here on, its lines go out as every rqflow process's do (app.logs).
logs.configure(get_settings().log_level, get_settings().log_format)


@lru_cache(maxsize=1)
def services() -> tuple[TaskService, ScheduleService]:
    """Built once per scheduler process from its settings (this module is its entry point)."""
    settings = get_settings()
    connection = connect(settings)
    tasks = TaskService(
        connection,
        load_registry(settings.task_modules, settings.type_limits),
        settings.result_ttl_s,
        settings.failed_ttl_s,
    )
    return tasks, ScheduleService(connection, tasks)


def fire(timer: Timer, tasks: TaskService, schedules: ScheduleService) -> None:
    # The schedules' clock: the wall's in production, the test's own in tests.
    wait = timer.at - schedules.clock().timestamp()
    if 0 < wait <= TIMER_MAX_EARLY_S:
        time.sleep(wait)
    if timer.kind == "release":
        tasks.release(timer.ref, timer.at_ms)
    elif timer.kind == "schedule":
        schedules.fire(timer.ref, timer.at_ms)
    else:
        log.warning("ignoring timer %s of unknown kind", timer.id)


class FireQueue(Queue):
    """The queue rq-scheduler hands timers to; it fires them instead of queueing them."""

    def enqueue_job(self, job: Job, pipeline: Any = None, at_front: bool = False, unique: bool = False) -> Job:
        try:
            timer = Timer.from_job(job)
        except (KeyError, ValueError, TypeError):
            log.warning("dropping job %s from the timer set: it is not an rqflow timer", job.id)
            return job
        # Redis going away propagates: rq-scheduler then exits without removing the timer, the
        # process manager restarts it, and the timer fires again. A domain error (a damaged record,
        # a definition that can no longer fire) would only come back each time: it is logged and
        # the timer dropped.
        try:
            fire(timer, *services())
        except DomainError as error:
            log.error("timer %s cannot fire: %s", job.id, error)
        self.connection.delete(job.key)
        return job
