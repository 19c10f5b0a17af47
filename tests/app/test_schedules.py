"""ScheduleService: pausing and changing a schedule, each in one transaction."""

from __future__ import annotations

from redis import Redis

from app.jobs.tasks import TaskService
from app.model import Priority
from app.schedules import ScheduleService, ScheduleSpec, TaskTemplate


def test_a_pause_changes_nothing_else_and_a_change_can_leave_the_pause_as_it_is(
    service: TaskService, redis: Redis
) -> None:
    schedules = ScheduleService(redis, service)
    spec = ScheduleSpec(task=TaskTemplate(type="echo"), id="nightly", cron="0 3 * * *", timezone="Europe/Paris")
    schedules.create(spec)
    paused = schedules.set_paused("nightly", True)
    assert paused.spec.paused and paused.spec.cron == "0 3 * * *" and paused.next_run_at is None
    # A change written after the pause (made from a page read before it) keeps the pause.
    changed = schedules.replace(
        "nightly", ScheduleSpec(task=TaskTemplate(type="echo", priority=Priority.HIGH), interval_s=90), keep_paused=True
    )
    assert changed.spec.paused and changed.spec.interval_s == 90 and changed.spec.task.priority is Priority.HIGH
    resumed = schedules.set_paused("nightly", False)
    assert not resumed.spec.paused and resumed.spec.interval_s == 90 and resumed.next_run_at is not None
    # Without keep_paused a definition is written as given, as PUT /api/schedules does.
    assert not schedules.replace("nightly", ScheduleSpec(task=TaskTemplate(type="echo"), interval_s=60)).spec.paused
