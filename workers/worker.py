"""The RQ worker classes rqflow runs: `rq worker -w workers.worker.TaskWorker high default low`.

They take RQ's workers as they are and pin what must not be left to command-line flags: the
JSON serializer, the allow-listing job class, the task registry, and a record of each failure.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.worker import SimpleWorker, Worker

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
