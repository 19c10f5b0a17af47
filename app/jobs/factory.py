"""Turning planned tasks into RQ jobs: the job objects RQ's own methods write, and, for the two
placements a large batch is made of (pending and queued), the job hash fields without an object.

RQ builds a job and its hash in some 50 µs (`Queue.create_job`, then `Job.to_dict`), most of it
on fields that are the same for every task of one type, priority, timeout and retry count. A
`Shapes` cache builds the first job of each such shape with RQ and keeps its hash as a template;
every other task of that shape copies it and fills in only what is its own. A test holds the
result equal to RQ's own `to_dict` for every placement and option.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from itertools import chain
from operator import attrgetter
from typing import Any

from rq.job import Dependency, JobStatus, Retry
from rq.queue import Queue
from rq.rate_limit import RateLimit

from app import codec, keys
from app.defaults import SMALL_DATA
from app.jobs import spec as spec_fields
from app.jobs.job import STATUS_EVENTS, TaskJob
from app.jobs.status import task_status
from app.model import CALL_FIELDS, Edge, Task, TaskError, TaskSpec, assemble
from app.registry import TaskType

MAX_TEMPLATES = 1024

OWN_FIELDS = frozenset(
    {
        "created_at",
        "data",
        "description",
        "dependency_id",
        "dependency_ids",
        "enqueued_at",
        keys.FIELD_SPEC,
        keys.FIELD_FINGERPRINT,
    }
)
"""The job hash fields that differ between tasks of one shape."""

OWN_NAMES = ("data", "description", keys.FIELD_SPEC, keys.FIELD_FINGERPRINT)
"""The own fields every new job has besides the submission's times, in the order `Shapes.own`
gives their values..."""
PARENTS_NAME = "dependency_ids"
"""...and the one a job with parents has after them."""

READ_ALIKE_ABSENT = {"enqueue_at_front": "0", "allow_dependency_failures": "0", "retry_intervals": "[0]"}
"""Fields RQ writes with these values and reads, when absent, as what it only ever tests the same
way (None for False, which it tests for truth; None for [0], for which `get_retry_interval` gives
the same 0): a batch leaves them out, so that Redis stores and logs each of its jobs some 90
bytes and four fields shorter. RQ's own `dependency_id`, which it reads only when
`dependency_ids` is absent, is left out likewise."""


@dataclass(frozen=True)
class Planned:
    """One task of a submission, validated, with its type's defaults applied."""

    index: int
    task_id: str
    spec: TaskSpec
    task_type: TaskType
    fingerprint: str
    actor: str | None = None
    """The API key (its name) that submitted it."""

    @cached_property
    def values(self) -> dict[str, Any]:
        """The fields kept in the job hash's spec, with the type's defaults applied."""
        return spec_fields.resolved(self.spec, self.task_type)

    @property
    def max_attempts(self) -> int:
        return int(self.values["max_attempts"])

    @property
    def timeout_ms(self) -> int:
        return int(self.values["timeout_ms"])

    def kwargs(self) -> dict[str, Any]:
        """What the worker's entry point is called with."""
        kwargs: dict[str, Any] = {"task_type": self.spec.type}
        for name in CALL_FIELDS:
            value = getattr(self.spec, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def stored_spec(self, status: JobStatus) -> dict[str, Any]:
        """What rqflow keeps of the submission in the job hash (TaskJob.spec). `submitted_as`
        (where the task went when submitted) makes the first event of its history, which so
        costs no stream of its own until something else happens to the task."""
        stored = {"submitted_as": STATUS_EVENTS[status], **spec_fields.encode(self.values)}
        if self.actor:
            stored["submitted_by"] = self.actor
        return stored

    def shape(self) -> tuple[Any, ...]:
        """Everything besides OWN_FIELDS that RQ's hash of this task depends on: its type (so its
        limit and the defaults it leaves to the type), priority, timeout and attempts as asked,
        and its dependencies' failure rule. Read from the spec as sent, not as resolved: that
        costs a batch a tenth of the time, and tasks that resolve alike at worst share a shape
        under two keys."""
        spec = self.spec
        return (
            spec.type,
            spec.priority,
            spec.timeout_ms,
            spec.max_attempts,
            self.task_type.concurrency,
            failure_rule(spec.dependencies),
        )


def failure_rule(deps: tuple[Edge, ...]) -> bool | None:
    """The one failure rule RQ keeps for a job's parents (Factory.build): None without parents,
    else whether the job runs even if they fail."""
    if not deps:
        return None
    return deps[0].allow_failure if len(deps) == 1 else all(e.allow_failure for e in deps)


class Factory:
    def __init__(self, queues: dict[Any, Queue], result_ttl_s: int, failed_ttl_s: int | None = None) -> None:
        self.queues = queues
        self.result_ttl_s = result_ttl_s
        self.failed_ttl_s = failed_ttl_s or result_ttl_s
        self.templates: dict[tuple[Any, ...], list[Any]] = {}
        """Shapes.fields' templates, kept across submissions: they hold no time or id, and one
        task alone would otherwise build an RQ job to make one each time."""

    def build(self, p: Planned, created_at: datetime, status: JobStatus) -> TaskJob:
        """The task as an RQ job object, not yet saved, for RQ's own methods to write."""
        spec, task_type = p.spec, p.task_type
        retries = p.max_attempts - 1
        # RQ's RateLimit holds a slot from queued to finished, across every worker on every machine.
        limit = RateLimit(keys.rate_limit_key(spec.type), task_type.concurrency) if task_type.concurrency else None
        job = self.queues[spec.priority].create_job(
            keys.ENTRY_POINT,
            kwargs=p.kwargs(),
            # RQ's death penalty counts whole seconds; round up so no attempt is cut short.
            timeout=math.ceil(p.timeout_ms / 1000),
            result_ttl=self.result_ttl_s,
            failure_ttl=self.failed_ttl_s,
            description=f"{spec.type} {p.task_id}",
            depends_on=Dependency(
                [e.parent for e in spec.dependencies],
                # RQ knows one failure rule per job; rqflow releases dependents itself with the
                # per-edge rule (app.jobs.release). RQ's own check may only be stricter, never looser.
                allow_failure=bool(failure_rule(spec.dependencies)),
            )
            if spec.dependencies
            else None,
            job_id=p.task_id,
            # RQ counts the retries; TaskJob.retry() computes each wait from the backoff.
            retry=Retry(max=retries) if retries else None,
            rate_limit=limit,
        )
        assert isinstance(job, TaskJob)
        job.created_at = created_at
        job.record_status_events = False
        job.fingerprint = p.fingerprint
        job.spec = p.stored_spec(status)
        return job

    def task(
        self,
        p: Planned,
        status: JobStatus,
        created_at: datetime,
        queued_at: datetime | None = None,
        error: dict[str, str] | None = None,
    ) -> Task:
        """The task as just submitted (what TaskJob.to_task reads back from Redis)."""
        spec = p.spec
        shown = task_status(status)
        values = p.values
        fields = {name: getattr(spec, name) for name in CALL_FIELDS}
        fields.update(values)
        fields.update(
            id=p.task_id,
            type=spec.type,
            name=values["name"] or spec.type,
            status=shown,
            attempts=0,
            created_at=created_at,
            updated_at=queued_at or created_at,
            queued_at=queued_at,
            started_at=None,
            finished_at=created_at if shown.is_terminal else None,
            result=None,
            error=TaskError(type=error.get("type", "error"), message=error.get("message", "")) if error else None,
            worker=None,
        )
        return assemble(Task, fields)


class Shapes:
    """Job hash fields for one submission (its tasks share one creation and enqueue time)."""

    def __init__(self, factory: Factory, created_at: datetime) -> None:
        self.factory = factory
        self.created_at = created_at
        # RQ's utcformat (strftime with %f), at a fifth of the cost: a single task pays it too.
        self.created = created_at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        if len(factory.templates) > MAX_TEMPLATES:  # timeouts and attempts are the client's to vary
            factory.templates.clear()
        self.templates = factory.templates
        self._forms: dict[tuple[Any, ...], Form] = {}

    def template(self, p: Planned, status: JobStatus) -> list[Any]:
        """The fields RQ would write for `p` as a new DEFERRED or QUEUED job (queued: enqueued at
        the creation time) that every task of its shape shares, as HSET's field-value arguments;
        the same list object for each, so a writer can pack it once. Fields RQ writes empty, and
        READ_ALIKE_ABSENT, are left out: absent reads the same to RQ."""
        key = (*p.shape(), status)
        template = self.templates.get(key)
        if template is None:
            job = self.factory.build(p, self.created_at, status)
            job._status = status
            if status == JobStatus.QUEUED:
                job.enqueued_at = self.created_at
            rq_fields = {k: v for k, v in job.to_dict().items() if v != "" and READ_ALIKE_ABSENT.get(k) != str(v)}
            template = self.templates[key] = [x for k, v in rq_fields.items() if k not in OWN_FIELDS for x in (k, v)]
        return template

    def parts(self, p: Planned, status: JobStatus) -> tuple[list[Any], list[Any]]:
        """The hash RQ would write for `p` as a new DEFERRED or QUEUED job, in two: its shape's
        `template` and the fields of its own (OWN_FIELDS)."""
        form = self.form(p, status)
        values = self.own(p, status, form)
        # Without parents there is no value for PARENTS_NAME, and zip stops before it.
        own = [*self.times(status), *chain.from_iterable(zip((*OWN_NAMES, PARENTS_NAME), values, strict=False))]
        return form.template, own

    def times(self, status: JobStatus) -> list[str]:
        """The submission's times that a new job in `status` holds, as field-value pairs: its
        creation and, queued, its enqueueing (the same for every task of the submission)."""
        if status == JobStatus.QUEUED:
            return ["created_at", self.created, "enqueued_at", self.created]
        return ["created_at", self.created]

    def own(self, p: Planned, status: JobStatus, form: Form) -> tuple[Any, ...]:
        """The values of `p`'s OWN_NAMES, in that order, then its parents' ids (PARENTS_NAME) if
        it has any; `form` is its Form."""
        spec = p.spec
        values: tuple[Any, ...] = (
            job_data(p),
            f"{spec.type} {p.task_id}",
            self.spec_json(p, status, form),
            p.fingerprint,
        )
        if spec.dependencies:
            values += (codec.dumps([e.parent for e in spec.dependencies]),)
        return values

    def form(self, p: Planned, status: JobStatus) -> Form:
        """What `p` shares with every task of this submission that differs from it only in its id,
        payload, duration and parents (most of a batch)."""
        spec = p.spec
        key = (status, p.actor, spec.type, failure_rule(spec.dependencies), _NOT_DEPENDENCIES(spec))
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = Form(self.template(p, status), _spec_around_dependencies(p, status))
        return form

    def spec_json(self, p: Planned, status: JobStatus, form: Form | None = None) -> bytes:
        """`Planned.stored_spec` as JSON, made from its `form` (given, where the caller has it)."""
        around = (form or self.form(p, status)).spec
        if around is None:
            return codec.dumps(p.stored_spec(status))
        deps = p.spec.dependencies
        if not deps:
            return around[0]
        return b"".join((around[0], codec.dumps(spec_fields.encode_one("dependencies", deps)), around[1]))


@dataclass(frozen=True)
class Form:
    """The part of a job hash that tasks of one submission share when they differ only in their id,
    payload, duration and parents (Shapes.form)."""

    template: list[Any]
    """Shapes.template."""
    spec: tuple[bytes, bytes] | None
    """The stored spec's JSON before and after the dependencies (all of it before, where there are
    none); None where the JSON cannot be split so."""


def _spec_around_dependencies(p: Planned, status: JobStatus) -> tuple[bytes, bytes] | None:
    stored = p.stored_spec(status)
    if not p.spec.dependencies:
        return codec.dumps(stored), b""
    stored["dependencies"] = _SPLICE
    before, *after = codec.dumps(stored).split(_SPLICED)
    return (before, after[0]) if len(after) == 1 else None  # else the marker is also some field's value


def job_data(p: Planned) -> bytes:
    """RQ's job data (JSONSerializer.dumps of the call), through the faster encoder (RQ reads it
    back with json.loads), compressed as RQ compresses it past SMALL_DATA."""
    data = codec.dumps((keys.ENTRY_POINT, None, (), p.kwargs()))
    return data if len(data) <= SMALL_DATA else zlib.compress(data)


_NOT_DEPENDENCIES = attrgetter(*(name for name in spec_fields.STORED if name != "dependencies"))
"""The stored fields of a spec besides its dependencies (Shapes.form)."""

_SPLICE = "\x00rqflow:dependencies\x00"
_SPLICED = codec.dumps(_SPLICE)
