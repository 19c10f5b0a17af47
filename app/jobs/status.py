"""RQ's job statuses as rqflow's task statuses: the one table that maps the two."""

from __future__ import annotations

from rq.job import JobStatus

from app.model import TaskStatus

TASK_STATUS: dict[JobStatus, TaskStatus] = {
    JobStatus.CREATED: TaskStatus.QUEUED,
    JobStatus.QUEUED: TaskStatus.QUEUED,
    JobStatus.READY_TO_ENQUEUE: TaskStatus.QUEUED,
    # Waiting for a concurrency slot: queued behind its type's limit.
    JobStatus.RATE_LIMITED: TaskStatus.QUEUED,
    JobStatus.DEFERRED: TaskStatus.PENDING,
    JobStatus.SCHEDULED: TaskStatus.SCHEDULED,
    JobStatus.STARTED: TaskStatus.RUNNING,
    JobStatus.FINISHED: TaskStatus.COMPLETED,
    JobStatus.FAILED: TaskStatus.FAILED,
    JobStatus.STOPPED: TaskStatus.FAILED,
    JobStatus.CANCELED: TaskStatus.CANCELED,
}


def task_status(status: JobStatus) -> TaskStatus:
    return TASK_STATUS[status]
