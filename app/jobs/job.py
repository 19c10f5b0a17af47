"""The RQ job class every rqflow process uses: JSON only, one allow-listed entry point, and the
fields rqflow adds to RQ's job hash (attempts, last error, the task's own spec)."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.client import Pipeline
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.results import Result
from rq.utils import import_attribute

from app import codec, history, keys
from app.defaults import FINISHED_BUCKET_TTL_S
from app.errors import BadJSON, ForbiddenJob, UnreadableRecord
from app.graph import edges_from_spec
from app.history import EventName
from app.jobs import release
from app.jobs import spec as spec_fields
from app.jobs.status import task_status
from app.model import CALL_FIELDS, Backoff, Edge, Task, TaskError, TaskStatus

STATUS_EVENTS = {
    JobStatus.QUEUED: EventName.QUEUED,
    JobStatus.DEFERRED: EventName.PENDING,
    JobStatus.SCHEDULED: EventName.SCHEDULED,
    JobStatus.FINISHED: EventName.COMPLETED,
    JobStatus.FAILED: EventName.FAILED,
    JobStatus.STOPPED: EventName.STOPPED,
    JobStatus.CANCELED: EventName.CANCELED,
}
"""RQ status changes that are events in a task's history (STARTED is recorded where it happens)."""

RESULT_FIELD = "result"
"""RQ's job hash field for a return value (its serializer's bytes), read by `Job.restore`."""

RELEASING = frozenset({JobStatus.FINISHED, JobStatus.FAILED})
"""Ends that may let dependents run (FAILED: through edges that allow failure). A STOPPED task was
canceled on request and becomes CANCELED, which lets none run."""


def forbidden(job_id: str, func_name: str | None, instance: Any) -> str | None:
    """Why a job naming this function (and instance) may not run; None when it may: only
    rqflow's entry point, never on an instance."""
    if func_name != keys.ENTRY_POINT or instance is not None:
        return f"job {job_id} names {func_name!r}; only {keys.ENTRY_POINT} may run"
    return None


class TaskJob(Job):
    """An RQ job that can only ever call `keys.ENTRY_POINT`.

    A job written straight into Redis (or tampered with there) may name any callable, instance or
    callback; RQ would import and call it. Here every such name is checked against the allow-list
    before anything is imported, and data is never unpickled: the serializer is JSON whatever the
    caller asks for.
    """

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        # RQ would check the serializer against a runtime Protocol on every job (a quarter of
        # the cost of building one); JSON is fixed here, so set it after.
        super().__init__(id=id, connection=connection)
        self.serializer = codec.JSONSerializer
        self.attempts = 0
        self.error: dict[str, str] | None = None
        self.spec: dict[str, Any] = {}
        self.fingerprint: str | None = None
        self.actor: str | None = None
        """The API key (its name) whose request is changing the task, for its history."""
        self.record_status_events = True
        """Off while a task is being submitted: its "submitted" event says where it went."""
        self.unreadable: str | None = None
        """Why a field of the stored record could not be decoded; `to_task` then refuses to show it.
        Restoring stays lenient, so that maintenance and deletion still work on such a job."""

    # -- the allow-list ------------------------------------------------------------------------

    @property
    def func(self) -> Any:
        refusal = forbidden(self.id, self.func_name, self.instance)
        if refusal:
            raise ForbiddenJob(refusal)
        return import_attribute(keys.ENTRY_POINT)

    # rqflow registers no callbacks, so any callback name in a job hash was put there by someone else.
    @property
    def success_callback(self) -> Any:
        return self._refuse_callback(self._success_callback_name)

    @property
    def failure_callback(self) -> Any:
        return self._refuse_callback(self._failure_callback_name)

    @property
    def stopped_callback(self) -> Any:
        return self._refuse_callback(self._stopped_callback_name)

    def _refuse_callback(self, name: str | None) -> None:
        if name:
            raise ForbiddenJob(f"job {self.id} names callback {name!r}; rqflow runs no callbacks")

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        """rqflow sets no webhooks; a tampered job must not make workers call arbitrary URLs."""

    @classmethod
    def dependencies_key_for(cls, job_id: str) -> str:
        """RQ's `dependencies_key` (an instance property there), for a job not built as an object.
        RQ 3.0 spells it with two colons (`rq:job::<id>:dependencies`); tests/app/jobs/test_rq_layout.py
        holds it to RQ's own."""
        return f"{cls.redis_job_namespace_prefix}:{job_id}:dependencies"

    # -- rqflow's fields -----------------------------------------------------------------------

    def restore(self, raw_data: Any) -> Any:
        super().restore(raw_data)
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw_data.items()}
        self.unreadable = None
        try:
            self.attempts = int(fields.get(keys.FIELD_ATTEMPTS) or 0)
        except ValueError:
            self.attempts, self.unreadable = 0, "its attempt count is not a number"
        self.error = self._json_field(fields, keys.FIELD_ERROR)
        self.spec = self._json_field(fields, keys.FIELD_SPEC) or {}
        fingerprint = fields.get(keys.FIELD_FINGERPRINT)
        self.fingerprint = fingerprint.decode() if isinstance(fingerprint, bytes) else fingerprint
        # RQ's field for a return value, where the worker engine keeps it (app.jobs.engine); RQ
        # puts a placeholder string in place of one that does not decode, here it is unreadable.
        self._result = self._json_field(fields, RESULT_FIELD)

    def _json_field(self, fields: dict[str, Any], name: str) -> Any:
        raw = fields.get(name)
        if not raw:
            return None
        try:
            return codec.loads(raw)
        except BadJSON as error:
            self.unreadable = f"its field {name}: {error}"
            return None

    def return_value(self, refresh: bool = False) -> Any:
        """RQ's, reading the `result` field where the worker engine keeps a return value (RQ 3's
        own reads only its result stream)."""
        if refresh:
            self.refresh()
        return self._result if self._result is not None else super().return_value(refresh=refresh)

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        # Attempts and error are written by HINCRBY/HSET where they happen, never from a copy here.
        obj: dict[str, Any] = super().to_dict(include_meta=include_meta, include_result=include_result)
        if self.spec:
            obj[keys.FIELD_SPEC] = codec.dumps(self.spec)
        if self.fingerprint:
            obj[keys.FIELD_FINGERPRINT] = self.fingerprint
        return obj

    def is_held_by_time(self) -> bool:
        """True while the task's start time (run_at / delay_ms) is still ahead."""
        due_ms = self.spec.get("due_ms")
        return due_ms is not None and int(due_ms) > time.time() * 1000

    @property
    def edges(self) -> tuple[Edge, ...]:
        return edges_from_spec(self.spec.get("dependencies", ()))

    def dependencies_are_met(self, *args: Any, **kwargs: Any) -> bool:
        """Never, as far as RQ's own release paths go (its cleanup of a dead worker's job, a cancel
        with `enqueue_dependents`): rqflow releases dependents itself, with its per-edge rule and a
        child's start time, in the transaction that ends the parent (app.jobs.release)."""
        return False

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        super().prepare_for_execution(worker_name, pipeline)
        # Counted in the same transaction that marks the job started, so every start counts once.
        pipeline.hincrby(self.key, keys.FIELD_ATTEMPTS, 1)
        self.attempts += 1
        history.record(pipeline, self.key, EventName.STARTED, attempt=self.attempts, worker=worker_name)

    def set_status(self, status: JobStatus, pipeline: Pipeline | None = None) -> None:
        """RQ's status change, plus the matching event in the task's history, in the same pipeline."""
        super().set_status(status, pipeline=pipeline)
        target = pipeline if pipeline is not None else self.connection
        if status in RELEASING:
            # In the transaction that writes the end, so no child can miss it (app.jobs.release).
            release.after_end(target, self.id)
        event = STATUS_EVENTS.get(status)
        if event is None or not self.record_status_events:
            return
        ended = event in history.TERMINAL_EVENTS
        history.record(
            target,
            self.key,
            event,
            attempt=self.attempts or None,
            worker=self.worker_name if ended else None,
            error=self.error if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) else None,
            by=self.actor,
        )
        if ended:
            bucket = keys.finished_bucket(time.time())
            target.incr(bucket)
            target.expire(bucket, FINISHED_BUCKET_TTL_S)

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        """Re-queue after a failed attempt, waiting as the task's backoff says.

        Replaces RQ's `Job.retry`, whose waits are whole seconds from a list fixed at submission;
        here each wait is computed when the attempt fails (so jitter really spreads retries) and
        the task never comes back earlier than its backoff.
        """
        assert self.retries_left
        self.retries_left -= 1
        backoff: Backoff = spec_fields.decode_one(self.spec, "backoff")
        wait_ms = backoff.delay_ms(max(self.attempts, 1))
        history.record(
            pipeline,
            self.key,
            EventName.RETRYING,
            attempt=self.attempts,
            worker=self.worker_name,
            error=self.error,
            detail=f"next attempt in {wait_ms / 1000:.3f} s",
        )
        if wait_ms <= 0:
            queue._enqueue_job(self, pipeline=pipeline, at_front=self.enqueue_at_front_on_retry)
            return
        self.set_status(JobStatus.SCHEDULED, pipeline=pipeline)
        self.schedule(queue, datetime.now(timezone.utc) + timedelta(milliseconds=wait_ms), pipeline)

    def schedule(self, queue: Queue, due: datetime, pipeline: Pipeline) -> None:
        """Put the job in RQ's scheduled registry so it is enqueued at `due`, never before.

        RQ truncates due times to whole seconds and enqueues once the (truncated) clock reaches
        them, so a job could start up to a second early; rounding `due` up to the next whole second
        closes that gap at the cost of starting up to a second late.
        """
        whole_second = datetime.fromtimestamp(math.ceil(due.timestamp()), tz=timezone.utc)
        queue.schedule_job(self, whole_second, pipeline=pipeline)

    def record_error(self, error_type: str, message: str) -> None:
        self.error = {"type": error_type, "message": message}
        self.connection.hset(self.key, keys.FIELD_ERROR, codec.dumps(self.error))

    def to_task(self, latest: Result | None = None) -> Task:
        """The task this job carries, as users see it; `latest` is the job's newest RQ result.

        Raises UnreadableRecord when any part of the stored record does not decode (written by an
        older version or by hand): a task is shown whole or not at all."""
        if self.unreadable:
            raise UnreadableRecord("task", self.id, self.unreadable)
        try:
            return self._to_task(latest)
        except DeserializationError as error:
            raise UnreadableRecord("task", self.id, f"its job data: {error.__cause__ or error}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise UnreadableRecord("task", self.id, f"{type(error).__name__}: {error}") from None

    def _to_task(self, latest: Result | None) -> Task:
        status = task_status(self.get_status(refresh=False))
        kwargs = self.kwargs
        task_type = kwargs.get("task_type", "")
        values = spec_fields.decode(self.spec)
        call: dict[str, Any] = {name: kwargs.get(name) for name in CALL_FIELDS}
        times = [t for t in (self.created_at, self.enqueued_at, self.started_at, self.ended_at) if t]
        return Task(
            id=self.id,
            type=task_type,
            **call,
            **{**values, "name": values["name"] or task_type},
            status=status,
            attempts=self.attempts,
            created_at=self.created_at,
            updated_at=max(times),
            queued_at=self.enqueued_at,
            started_at=self.started_at,
            finished_at=self.ended_at if status.is_terminal else None,
            result=self._result
            if self._result is not None
            else latest.return_value
            if latest and latest.type == Result.Type.SUCCESSFUL
            else None,
            error=self._task_error(status, latest),
            worker=self.worker_name,
        )

    def _task_error(self, status: TaskStatus, latest: Result | None) -> TaskError | None:
        if self.error:
            return TaskError(type=self.error.get("type", "error"), message=self.error.get("message", ""))
        if status is TaskStatus.FAILED and latest is not None and latest.exc_string:
            # Failures no handler saw (e.g. RQ's cleanup of a dead worker) only leave RQ's text.
            last_line = latest.exc_string.strip().splitlines()[-1]
            error_type, _, message = last_line.partition(": ")
            return TaskError(type=error_type.rsplit(".", 1)[-1] or "error", message=message or last_line)
        return None
