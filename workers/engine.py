"""rqflow's own worker: `rq worker -w workers.engine.EngineWorker high default low`.

One worker process keeps `RQFLOW_CONCURRENCY` long-lived children (workers.pool) busy. Its loop
hands the tasks its children finished to one script that writes their ends and claims as many
new tasks as there are free children (app.jobs.engine), so a task costs one round trip to start
and shares one to end; with no work anywhere it blocks on the queues. It is still an RQ worker:
registered, heartbeating, visible to `rq info` and rq-dashboard, running RQ's maintenance, and
its tasks are RQ jobs in RQ's registries, which RQ's own cleanup recovers if it dies.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.command import parse_payload
from rq.executions import Execution
from rq.job import JobStatus
from rq.queue import Queue
from rq.worker import BaseWorker

from app.jobs.engine import Claimed, Ended, Engine, Running
from app.jobs.job import TaskJob
from app.model import ErrorType
from app.settings import Settings
from workers.pool import Outcome, Pool
from workers.worker import OVERDUE_S, TaskWorkerMixin

log = logging.getLogger(__name__)

REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)
"""What Redis being unreachable raises (a restart, a failover): the loop waits it out."""

LEASE_SWEEP_S = 1.0
"""How often each engine worker looks for runs whose lease lapsed (one cheap read per queue)."""

IDLE_POLL_S = 0.005
IDLE_POLL_MAX_S = 0.05
"""How often a worker with some children busy and some free looks for new work: every 5 ms while
it finds some, backing off to every 50 ms while the queues stay empty (a worker with one long
task must not hammer Redis). A worker whose children are all free blocks on the queues instead,
and one with none free only waits on its children."""

SHUTDOWN = "shutdown"


class _EngineLoop(BaseWorker):
    """The loop of an engine worker, in place of RQ's one-job-at-a-time loop."""

    settings: Settings
    pool: Pool | None = None
    _shutdown_deadline: float | None
    _cut_off: str | None
    """Both kept by TaskWorkerMixin: when a shutdown's grace ends, and the task it cut off."""
    recover_lapsed: Callable[[Queue], None]
    release_overdue: Callable[[list[str]], None]
    """TaskWorkerMixin's rescues: of a queue's runs whose lease lapsed, of overdue retries."""

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        **_: Any,
    ) -> bool:
        self.bootstrap(logging_level, date_format, log_format)
        if with_scheduler:
            # RQ's scheduler queues what is due in RQ's scheduled registries (a retry's backoff);
            # `rq worker-pool` always asks for it.
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        settings = self.settings
        lease_s = settings.heartbeat_s + settings.worker_lost_after_s
        engine = Engine(self.connection, self.queue_names(), self.name, lease_s, settings.result_ttl_s)
        self.pool = pool = Pool(settings)
        pool.start()
        self._published_at = 0.0
        """When the last heartbeat published the runs in progress (epoch s): a run that started
        by then was running then, so has an RQ execution record for its end to remove."""
        done = 0
        ended: list[Ended] = []
        """Runs that returned, whose ends the next step writes (kept until one has)."""
        bad: list[Outcome] = []
        """Runs that ended otherwise, for RQ's failure handling (kept until it has taken them)."""
        woken = False
        next_heartbeat = time.monotonic()
        next_sweep = time.monotonic() + LEASE_SWEEP_S
        idle_since = time.monotonic()
        poll_s = IDLE_POLL_S
        outage_s = 0.0
        try:
            while True:
                stopping = self._stop_requested or (max_jobs is not None and done >= max_jobs)
                try:
                    while bad:  # first: a retry it queues is there for this step to claim
                        self._end_badly(bad[0])
                        bad.pop(0)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    if time.monotonic() >= next_sweep:
                        self._recover_lapsed(engine)
                        next_sweep = time.monotonic() + LEASE_SWEEP_S
                    want = 0 if stopping else len(pool.idle)
                    if max_jobs is not None:
                        want = min(want, max(max_jobs - done - len(pool.busy), 0))
                    claimed: list[Claimed] = []
                    if ended or want:
                        claimed = engine.step(ended, want, woken)
                        found = bool(claimed or ended)
                        poll_s = IDLE_POLL_S if found else min(poll_s * 2, IDLE_POLL_MAX_S)
                        ended, woken = [], False
                    if not stopping:
                        pool.replace_spent()  # after the step: their tasks' ends are written first
                    for task, child in zip(claimed, pool.idle, strict=False):
                        self._start(task, child, pool, bad)
                    if outage_s:
                        log.warning("worker %s: Redis is back", self.name)
                        outage_s = 0.0
                except REDIS_AWAY as error:
                    # Redis is away (a restart, a failover): the children run on, and what they
                    # end waits here for it; leaving the loop would kill them and drop their ends.
                    if stopping and not pool.busy:
                        raise  # nothing left to wait for
                    if not outage_s:
                        log.warning("worker %s: Redis unavailable (%s); waiting for it", self.name, error)
                    outage_s = min(max(outage_s * 2, 0.05), 1.0)
                    done += self._tend(pool, outage_s, ended, bad)
                    continue
                if pool.busy:
                    idle_since = time.monotonic()
                elif (
                    stopping
                    or (burst and want and not claimed)
                    or (max_idle_time is not None and time.monotonic() - idle_since > max_idle_time)
                ):
                    break
                elif want and not claimed:
                    with contextlib.suppress(*REDIS_AWAY):  # the next step says
                        woken = engine.wait(timeout_s=max(min(next_heartbeat - time.monotonic(), 1.0), 0.05))
                        next_heartbeat = self._heartbeat_if_due(engine, pool, next_heartbeat)
                    continue
                free = len(pool.idle) and not stopping
                timeout = poll_s if free else max(next_heartbeat - time.monotonic(), 0.0)
                done += self._tend(pool, timeout, ended, bad)
                with contextlib.suppress(*REDIS_AWAY):  # the next step says
                    next_heartbeat = self._heartbeat_if_due(engine, pool, next_heartbeat)
            if ended:
                engine.step(ended, 0)
            for outcome in bad:
                self._end_badly(outcome)
            engine.heartbeat(self, [], busy=False)  # the counts since the last one
        finally:
            pool.close()
            self.pool = None
            self.teardown()
        return bool(done)

    def _tend(self, pool: Pool, timeout: float, ended: list[Ended], bad: list[Outcome]) -> int:
        """Cut off the runs past the shutdown's deadline, wait up to `timeout` for runs to end and
        add them to `ended` or `bad`, then kill those past their own timeout; how many ended."""
        self._cut_off_at_deadline(pool)
        outcomes = pool.wait(timeout)
        for child in pool.overdue():
            pool.kill(child, ErrorType.TIMEOUT.value)
        for outcome in outcomes:
            if outcome.result_json is None:
                bad.append(outcome)
                continue
            if log.isEnabledFor(logging.DEBUG):  # a line a task costs ~10 us: only when asked for
                log.debug("task %s completed", outcome.task.id, extra=self._about(outcome))
            ended.append(
                Ended(
                    outcome.task.id,
                    outcome.task.execution,
                    outcome.result_json,
                    outcome.started,
                    outcome.ended,
                    outcome.started <= self._published_at,
                )
            )
        return len(outcomes)

    def _heartbeat_if_due(self, engine: Engine, pool: Pool, due: float) -> float:
        """The worker's heartbeat and its running tasks' leases, once per interval; returns when
        the next is due."""
        now = time.monotonic()
        if now < due:
            return due
        published_at = time.time()
        running = [Running(c.task.origin, c.task.id, c.task.execution, c.started) for c in pool.busy if c.task]
        engine.heartbeat(self, running, busy=bool(running))
        self._published_at = published_at
        return now + self.settings.heartbeat_s

    def _recover_lapsed(self, engine: Engine) -> None:
        """Retry or fail the runs whose worker died (their lease lapsed), as RQ's maintenance would,
        but within a second instead of at its next pass."""
        lapsed, overdue = engine.due(OVERDUE_S)
        for queue in self.queues:
            if queue.name in lapsed:
                self.recover_lapsed(queue)
        if overdue:
            self.release_overdue(overdue)

    def _start(self, task: Claimed, child: Any, pool: Pool, bad: list[Outcome]) -> None:
        if task.refused:
            log.warning("refusing task %s: %s", task.id, task.refused)
            now = time.time()
            bad.append(Outcome(child, task, now, now, error_type=task.refused_as, message=task.refused))
            return
        pool.run(child, task)

    def _cut_off_at_deadline(self, pool: Pool) -> None:
        deadline = self._shutdown_deadline
        if deadline is not None and time.monotonic() >= deadline:
            for child in pool.busy:
                if child.stopping is None and child.task is not None:
                    log.warning("task %s still running at the end of the shutdown grace period", child.task.id)
                    pool.kill(child, SHUTDOWN)

    def _about(self, outcome: Outcome) -> dict[str, Any]:
        """What a log line about a run says besides its message (app.logs)."""
        task = outcome.task
        return {
            "task_id": task.id,
            "type": task.task_type,
            "attempt": task.attempt,
            "worker": self.name,
            "duration_ms": round((outcome.ended - outcome.started) * 1000, 3),
            "error": f"{outcome.error_type}: {outcome.message}" if outcome.error_type else None,
        }

    def _end_badly(self, outcome: Outcome) -> None:
        """A failed, timed-out, canceled or cut-off run, through RQ's own failure handling."""
        task = outcome.task
        log.warning("task %s attempt %s ended badly", task.id, task.attempt, extra=self._about(outcome))
        try:
            job = TaskJob.fetch(task.id, connection=self.connection)
            assert isinstance(job, TaskJob)
        except Exception:
            log.warning("task %s ended (%s) but is gone", task.id, outcome.error_type)
            return
        if job.get_status(refresh=False) is not JobStatus.STARTED or job.worker_name != self.name:
            log.info("task %s ended (%s) after it was taken from this worker", task.id, outcome.error_type)
            return
        job.ended_at = datetime.fromtimestamp(outcome.ended, tz=timezone.utc)
        queue = next(q for q in self.queues if q.name == job.origin)
        execution = Execution(task.execution, task.id, self.connection, worker_name=self.name)
        execution.created_at = datetime.fromtimestamp(outcome.started, tz=timezone.utc)
        if outcome.error_type == SHUTDOWN:
            self._cut_off = job.id  # the mixin's failure handling requeues it, retries untouched
        elif outcome.error_type == ErrorType.CANCELED.value:
            self._stopped_job_id = job.id  # RQ's failure handling makes it STOPPED, the mixin CANCELED
        else:
            job.record_error(outcome.error_type or "error", outcome.message)
        exc_string = outcome.trace or f"{outcome.error_type}: {outcome.message}"
        self.handle_job_failure(job, queue, job.started_job_registry, exc_string, execution)

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: claim nothing more; running tasks finish within the grace period (the
        mixin sets it), then are cut off and requeued. Never raises, whatever the state."""
        self._stop_requested = True

    def handle_payload(self, message: Any) -> None:
        """RQ's commands, with `stop-job` for any of the tasks this worker runs (RQ's knows one)."""
        payload = parse_payload(message)
        pool = self.pool
        if payload.get("command") == "stop-job" and pool is not None:
            child = pool.running(str(payload.get("job_id")))
            if child is not None:
                pool.kill(child, ErrorType.CANCELED.value)
            else:
                log.info("not running task %s; stop ignored", payload.get("job_id"))
            return
        super().handle_payload(message)

    def kill_horse(self, sig: Any = None) -> None:
        """No horse: children are killed one by one (Pool.kill)."""


class EngineWorker(TaskWorkerMixin, _EngineLoop):
    """Runs tasks in long-lived child processes, `RQFLOW_CONCURRENCY` at once, claiming and ending
    them in batches; a task can be stopped, timed out and isolated as with TaskWorker."""
