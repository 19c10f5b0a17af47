"""The RQ worker classes rqflow runs: `rq worker -w workers.worker.TaskWorker high default low`.

They take RQ's workers as they are and pin what must not be left to command-line flags: the
JSON serializer, the allow-listing job class, the task registry, and a record of each failure.
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.worker import SimpleWorker, Worker

from app import keys
from app.dag import cascade, sweep
from app.errors import UnknownTaskType
from app.job import ForbiddenJob, TaskJob
from app.registry import load_registry
from app.settings import Settings, get_settings
from workers import entry

log = logging.getLogger(__name__)

ERROR_TYPES: dict[type[BaseException], str] = {
    JobTimeoutException: "timeout",
    ForbiddenJob: "forbidden_job",
    UnknownTaskType: "unknown_task_type",
}


class TaskWorkerMixin:
    """What every rqflow worker class adds to RQ's."""

    def __init__(self, queues: Any, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        settings = settings or get_settings()
        entry.install(load_registry(settings.task_modules, settings.type_limits), settings)
        # Whatever the command line said: rqflow jobs are JSON and only TaskJob may run them.
        kwargs["job_class"] = TaskJob
        kwargs["serializer"] = JSONSerializer
        names = [
            q.name if isinstance(q, Queue) else q for q in ([queues] if isinstance(queues, str | Queue) else queues)
        ]
        super().__init__(names, *args, **kwargs)  # type: ignore[call-arg]
        self.push_exc_handler(record_error)  # type: ignore[attr-defined]

    def execute_job(self, job: Job, queue: Queue) -> None:
        # A task canceled in the instant between a worker's pop and its start must not run.
        if job.get_status(refresh=False) is JobStatus.CANCELED:
            log.info("task %s was canceled before it started; not running it", job.id)
            return
        super().execute_job(job, queue)  # type: ignore[misc]

    def _enqueue_dependents_safely(self, queue: Queue, job: Job) -> None:
        """RQ enqueues the dependents a parent's end lets run; before that, cancel the ones it
        never will (RQ would leave them deferred forever, rq#1093)."""
        if job.get_status(refresh=False) is JobStatus.STOPPED and isinstance(job, TaskJob):
            # rqflow stops a running task only to cancel it (RQ's stop command makes it STOPPED).
            job.error = {"type": "canceled", "message": "canceled on request while running"}
            job.connection.hset(job.key, keys.FIELD_ERROR, json.dumps(job.error))
            try:
                job.cancel()
            except InvalidJobOperation:
                log.warning("could not mark stopped task %s canceled", job.id)
        if job.get_status(refresh=False) in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            try:
                cascade(job.connection, job.id)
            except Exception:
                # The maintenance sweep settles whatever this left pending.
                log.exception("could not cancel the dependents of task %s", job.id)
        super()._enqueue_dependents_safely(queue, job)  # type: ignore[misc]

    def clean_registries(self) -> None:
        """RQ's maintenance (which fails the jobs of dead workers), then settle every pending task
        whose parents have all ended, whichever process ended them."""
        super().clean_registries()  # type: ignore[misc]
        connection = self.connection  # type: ignore[attr-defined]
        lock_s = max(int(self.maintenance_interval) - 1, 1)  # type: ignore[attr-defined]
        if connection.set(keys.SWEEP_LOCK, self.name, nx=True, ex=lock_s):  # type: ignore[attr-defined]
            sweep(connection, [q.name for q in self.queues])  # type: ignore[attr-defined]


def record_error(
    job: Any, exc_type: type[BaseException], exc_value: BaseException, traceback: TracebackType | None
) -> bool:
    """Keep the failed attempt's error on the task as `{type, message}`; let RQ's handlers run on."""
    if isinstance(job, TaskJob):
        error_type = next((name for cls, name in ERROR_TYPES.items() if isinstance(exc_value, cls)), exc_type.__name__)
        try:
            message = str(exc_value) or str(exc_value.__cause__ or "") or exc_type.__name__
            job.record_error(error_type, message[:2000])
        except Exception:
            log.exception("could not record the error of task %s", job.id)
    return True


class TaskWorker(TaskWorkerMixin, Worker):
    """Forks a work-horse per task: a crash or timeout kills only that task, and a running task can be stopped."""


class TaskSimpleWorker(TaskWorkerMixin, SimpleWorker):
    """Runs tasks in the worker process itself: faster, but a task cannot be stopped or isolated."""
