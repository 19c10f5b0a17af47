"""The RQ worker classes rqflow runs: `rq worker -w workers.worker.TaskWorker high default low`.

They take RQ's workers as they are and pin what must not be left to command-line flags: the
JSON serializer, the allow-listing job class, the task registry, and a record of each failure.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from types import TracebackType
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.exceptions import AbandonedJobError, InvalidJobOperation, StopRequested
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import BaseWorker, SimpleWorker, Worker

from app import history, keys, logs
from app.defaults import MAINTENANCE_LOCK_S
from app.errors import ForbiddenJob, UnknownTaskType
from app.history import EventName
from app.jobs import events, stats
from app.jobs.dependencies import cascade
from app.jobs.job import TaskJob
from app.jobs.repair import repair
from app.jobs.retention import Retention
from app.jobs.store import WakingQueue
from app.jobs.tasks import TaskService
from app.model import ErrorType
from app.registry import load_registry
from app.settings import Settings, get_settings
from workers import entry

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 4.0

ERROR_TYPES: dict[type[BaseException], str] = {
    JobTimeoutException: ErrorType.TIMEOUT.value,
    AbandonedJobError: ErrorType.WORKER_LOST.value,
    ForbiddenJob: ErrorType.FORBIDDEN_JOB.value,
    UnknownTaskType: ErrorType.UNKNOWN_TASK_TYPE.value,
}


class TaskQueue(WakingQueue):
    """RQ's queue, but dependents are released by rqflow, and the lock that lets one worker clean the
    registries lasts `MAINTENANCE_LOCK_S`, not RQ's 899 s."""

    maintenance_lock_s = MAINTENANCE_LOCK_S

    def acquire_maintenance_lock(self) -> bool:
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=self.maintenance_lock_s))

    def move_dependents_to_ready(self, job: Job, *args: Any, **kwargs: Any) -> dict[str, list[str]]:
        """Nothing for RQ to move: a task's end releases its dependents in the same transaction
        (app.jobs.release). RQ's two-step release could leave a child waiting for a maintenance pass."""
        return {}


class TaskStartedJobRegistry(StartedJobRegistry):
    """RQ's registry of running jobs, but a dead worker's job goes to a TaskQueue, not the plain
    Queue of plain Jobs RQ's `get_queue` makes (see TaskWorkerMixin.clean_registries)."""

    def get_queue(self) -> Queue:
        return TaskQueue(self.name, connection=self.connection, job_class=self.job_class, serializer=self.serializer)


class TaskWorkerMixin(BaseWorker):
    """What every rqflow worker class adds to RQ's (typed against RQ's base class, which it always
    precedes in a worker class's bases)."""

    def __init__(self, queues: Any, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        settings = settings or get_settings()
        logs.configure(settings.log_level, settings.log_format)
        registry = load_registry(settings.task_modules, settings.type_limits)
        entry.install(registry, settings)
        # Whatever the command line said: rqflow jobs are JSON and only TaskJob may run them, and
        # a dead worker's task is noticed in seconds, not RQ's default 10 to 15 minutes.
        kwargs.update(
            job_class=TaskJob,
            queue_class=TaskQueue,
            serializer=JSONSerializer,
            job_monitoring_interval=settings.heartbeat_s,
            maintenance_interval=settings.maintenance_s,
            worker_ttl=max(settings.worker_lost_after_s + 15, 30),
        )
        kwargs.pop("default_worker_ttl", None)
        names = [
            q.name if isinstance(q, Queue) else q for q in ([queues] if isinstance(queues, str | Queue) else queues)
        ]
        super().__init__(names, *args, **kwargs)
        self.push_exc_handler(record_error)
        self.settings = settings
        self.tasks = TaskService(self.connection, registry, settings.result_ttl_s, settings.failed_ttl_s)
        self.retention = Retention(self.connection, keys.QUEUES, registry, settings.keep_finished)
        self._shutdown_deadline: float | None = None
        self._cut_off: str | None = None

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        # RQ sets its loggers to its command line's --logging-level, INFO when not given, which
        # would hide RQ's DEBUG lines from RQFLOW_LOG_LEVEL=DEBUG. The more verbose of the two holds.
        wanted = logging.getLevelName(self.settings.log_level)
        for name in ("rq.worker", "rq.job"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or wanted < logger.level:
                logger.setLevel(wanted)

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """RQ's loop quits on any error it did not expect, Redis going away among them (rq#2015,
        rq#1968). Unless a stop was asked for (or the run was bounded), start it again, with
        backoff, once Redis answers: a worker rides out a Redis restart on its own."""
        delay = 1.0
        while True:
            try:
                worked = bool(super().work(burst, *args, **kwargs))
            except (RedisConnectionError, RedisTimeoutError) as error:
                log.warning("worker %s: Redis unavailable (%s)", self.name, error)
            else:
                bounded = burst or kwargs.get("max_jobs") or kwargs.get("max_idle_time")
                # RQ raises StopRequested (and leaves _stop_requested unset) when stopped while idle.
                if bounded or self._shutdown_deadline is not None:
                    return worked
                log.warning("worker %s: its loop ended unexpectedly; starting it again", self.name)
            if self._shutdown_deadline is not None:
                return False  # asked to stop (the engine's stop raises nothing): no reconnecting
            try:
                time.sleep(delay)
            except StopRequested:
                return False
            # Capped low: a retry costs Redis one connection attempt, and a worker that waited
            # 30 s after Redis came back (RQ's habit) left the queues unserved that long.
            delay = min(delay * 2, RECONNECT_MAX_S)
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                self.register_death()  # so that its next birth is not refused

    def register_birth(self) -> None:
        super().register_birth()
        # RQ writes the birth in a transaction of its own; the event follows it at once.
        events.told(self.connection, [events.event("worker_started", worker=self.name, queues=self.queue_names())])

    def register_death(self) -> None:
        super().register_death()
        events.told(self.connection, [events.event("worker_stopped", worker=self.name)])

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ keeps a running task's heartbeat for the monitoring interval plus 60 s; rqflow's margin is
        `worker_lost_after_s`, so a task whose worker died is found that much sooner."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(interval, job.timeout - working_time)
        return int(max(interval, 1)) + self.settings.worker_lost_after_s

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: take no new task, let the running one finish for `shutdown_grace_s`."""
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.settings.shutdown_grace_s
        super().request_stop(signum, frame)

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        if self._shutdown_deadline is not None and time.monotonic() >= self._shutdown_deadline:
            log.warning("task %s still running at the end of the shutdown grace period: requeueing it", job.id)
            self._cut_off = job.id
            self.kill_horse(signal.SIGKILL)
            return
        super().maintain_heartbeats(job, execution)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        if self._cut_off != job.id:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        # Cut off by a shutdown, not failed: back to the front of its queue, its retries untouched.
        self._cut_off = None
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            history.record(
                pipe,
                job.key,
                EventName.REQUEUED,
                attempt=getattr(job, "attempts", None),
                worker=self.name,
                detail="cut off by the worker's shutdown",
            )
            queue._enqueue_job(job, pipeline=pipe, at_front=True)
            pipe.execute()

    def execute_job(self, job: Job, queue: Queue) -> None:
        # A task canceled in the instant between a worker's pop and its start must not run.
        if job.get_status(refresh=False) is JobStatus.CANCELED:
            log.info("task %s was canceled before it started; not running it", job.id)
            return
        super().execute_job(job, queue)

    def _enqueue_dependents_safely(self, queue: Queue, job: Job) -> None:
        """After a task's failure: the dependents it lets run were released with its end
        (app.jobs.release); cancel the ones it never will (RQ would leave them deferred forever, rq#1093)."""
        if job.get_status(refresh=False) is JobStatus.STOPPED and isinstance(job, TaskJob):
            # rqflow stops a running task only to cancel it (RQ's stop command makes it STOPPED).
            job.record_error(ErrorType.CANCELED.value, "canceled on request while running")
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

    def recover_lapsed(self, queue: Queue) -> None:
        """Retry or fail the runs in `queue` whose lease lapsed (their worker died), with RQ's
        cleanup of its started registry; one process at a time, under a lock of a few seconds
        released when done. (Under RQ's maintenance lock, held a minute, one worker killed in the
        middle held back every rescue that long.)"""
        lock = keys.lease_sweep_lock(queue.name)
        if not self.connection.set(lock, self.name, nx=True, px=LEASE_LOCK_MS):
            return
        try:
            registry = TaskStartedJobRegistry(
                queue.name, connection=self.connection, job_class=self.job_class, serializer=self.serializer
            )
            registry.cleanup(exception_handlers=self._exc_handlers)
        finally:
            self.connection.delete(lock)

    def release_overdue(self, queue_names: list[str]) -> None:
        """Move onto their queues the retries whose backoff ended more than OVERDUE_S ago (the
        caller found some), with RQ's own scheduler code. RQ's scheduler does it every second, but
        only in the one worker holding its lock, and a worker killed while holding it keeps every
        other out for the lock's TTL: its interval plus 60 s (rq.scheduler.RQScheduler.acquire_locks)."""
        lock = keys.lease_sweep_lock("scheduled")
        if not self.connection.set(lock, self.name, nx=True, px=LEASE_LOCK_MS):
            return
        try:
            log.warning(
                "retries overdue by more than %s s in %s: moving them (RQ's scheduler down?)", OVERDUE_S, queue_names
            )
            scheduler = RQScheduler(queue_names, connection=self.connection, serializer=self.serializer)
            scheduler.prepare_registries(queue_names)
            scheduler.enqueue_scheduled_jobs()
        finally:
            self.connection.delete(lock)

    def clean_registries(self) -> None:
        """RQ's maintenance (which fails the jobs of dead workers), then settle every pending task
        whose parents have all ended, whichever process ended them.

        RQ's own pass (`BaseWorker.clean_registries`, `rq.registry.clean_registries`) is repeated here
        for one reason: its StartedJobRegistry hands a dead worker's job to `get_queue()`, a plain
        Queue of plain Jobs, whose release of that job's dependents would ignore rqflow's per-edge
        rule and a child's start time. TaskStartedJobRegistry hands it to a TaskQueue instead."""
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                same: dict[str, Any] = {
                    "connection": queue.connection,
                    "job_class": queue.job_class,
                    "serializer": queue.serializer,
                }
                try:
                    FinishedJobRegistry(queue.name, **same).cleanup()
                    self.recover_lapsed(queue)
                    FailedJobRegistry(queue.name, **same).cleanup()
                    DeferredJobRegistry(queue.name, **same).cleanup()
                    ReadyJobRegistry(queue.name, **same).cleanup()
                    for limit in RateLimitRegistry.all(queue.connection):
                        limit.cleanup()
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    # Whatever happened (Redis going away mid-pass above all): a lock left
                    # behind would stop every worker's maintenance for MAINTENANCE_LOCK_S.
                    queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ declares it as None
        connection = self.connection
        lock_s = max(int(self.maintenance_interval) - 1, 1)
        if connection.set(keys.SWEEP_LOCK, self.name, nx=True, ex=lock_s):
            repair(self.tasks, [q.name for q in self.queues])
            stats.sample_memory(connection)
            done = self.retention.run(budget_s=min(RETENTION_BUDGET_S, lock_s / 2))
            if done.trimmed or done.pruned:
                log.info("retention: removed %d ended tasks, %d index entries of gone ones", done.trimmed, done.pruned)


LEASE_LOCK_MS = 5000

RETENTION_BUDGET_S = 2.0
"""Time one maintenance pass spends on retention at most; a backlog goes on in the next pass."""

OVERDUE_S = 5
"""A retry this late is taken to have no RQ scheduler moving it (see release_overdue)."""
"""How long one process may hold a queue's lapsed-lease rescue (app.keys.lease_sweep_lock)."""


def record_error(
    job: Any, exc_type: type[BaseException], exc_value: BaseException, traceback: TracebackType | None
) -> bool:
    """Keep the failed attempt's error on the task as `{type, message}`; let RQ's handlers run on."""
    if isinstance(job, TaskJob):
        try:
            job.record_error(*describe_error(exc_value))
        except Exception:
            log.exception("could not record the error of task %s", job.id)
    return True


def describe_error(error: BaseException) -> tuple[str, str]:
    """A failed attempt's error as rqflow keeps it: its type (rqflow's name for the errors it
    knows, else the exception's class) and a message of at most 2,000 characters."""
    error_type = next((name for cls, name in ERROR_TYPES.items() if isinstance(error, cls)), type(error).__name__)
    message = str(error) or str(error.__cause__ or "") or type(error).__name__
    if isinstance(error, AbandonedJobError):
        message = "the worker running it died or stopped answering"
    return error_type, message[:2000]


class TaskWorker(TaskWorkerMixin, Worker):
    """Forks a work-horse per task: a crash or timeout kills only that task, and a running task can be stopped."""


class TaskSimpleWorker(TaskWorkerMixin, SimpleWorker):
    """Runs tasks in the worker process itself: faster, but a task cannot be stopped or isolated."""
