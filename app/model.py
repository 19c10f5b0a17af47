"""The task as rqflow users see it, and how it maps onto RQ's job."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import datetime
from enum import Enum
from operator import attrgetter
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from app import codec

Frozen = TypeVar("Frozen")


@dataclass(frozen=True)
class _Layout:
    names: frozenset[str]
    required: frozenset[str]
    fixed: tuple[tuple[str, Any], ...]
    """The fields with a default value, and it."""
    made: tuple[tuple[str, Callable[[], Any]], ...]
    """The fields with a default factory, and it."""


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type) -> _Layout:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        declared = fields(cls)  # a dataclass, as documented
        if hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__} checks its fields in __post_init__: call it instead")
        layout = _LAYOUTS[cls] = _Layout(
            frozenset(f.name for f in declared),
            frozenset(f.name for f in declared if f.default is MISSING and f.default_factory is MISSING),
            tuple((f.name, f.default) for f in declared if f.default is not MISSING),
            tuple((f.name, f.default_factory) for f in declared if f.default_factory is not MISSING),
        )
    return layout


def _checked(cls: type, layout: _Layout, given: Iterable[str]) -> None:
    given = set(given)
    if not (given <= layout.names and layout.required <= given):
        unknown, missing = sorted(given - layout.names), sorted(layout.required - given)
        raise TypeError(f"{cls.__name__}: unknown fields {unknown}, missing fields {missing}")


def assemble(cls: type[Frozen], values: dict[str, Any]) -> Frozen:
    """`cls(**values)` for a frozen dataclass without `__post_init__`, at a tenth of the cost.

    The `__init__` generated for a frozen dataclass sets every field through `object.__setattr__`
    (2 us for Task's 22 fields), and a batch builds 10,000 specs and tasks. The instance is the
    same: frozen, equal and hashed by its fields. An unknown or missing field is a TypeError, as
    with the constructor; fields not given take their defaults."""
    layout = _layout(cls)
    given = values.keys()
    if not (given <= layout.names and layout.required <= given):
        _checked(cls, layout, given)
    obj = object.__new__(cls)
    state = obj.__dict__
    if len(given) < len(layout.names):
        for name, value in layout.fixed:
            if name not in given:
                state[name] = value
        for name, factory in layout.made:
            if name not in given:
                state[name] = factory()
    state.update(values)
    return obj


def assembler(cls: type[Frozen], names: tuple[str, ...]) -> Callable[[Sequence[Any]], Frozen]:
    """`assemble` for values that always come for the same fields, `names`, in that order: the
    fields are checked once, here, and each instance costs half of `assemble`'s."""
    layout = _layout(cls)
    _checked(cls, layout, names)
    fixed = tuple((name, value) for name, value in layout.fixed if name not in names)
    made = tuple((name, factory) for name, factory in layout.made if name not in names)

    def build(values: Sequence[Any]) -> Frozen:
        if len(values) != len(names):
            raise ValueError(f"{cls.__name__}: {len(values)} values for the {len(names)} fields {names}")
        obj = object.__new__(cls)
        state = obj.__dict__
        # One item at a time: a fresh instance's dict takes them faster than through update().
        for name, value in zip(names, values):  # noqa: B905  # lengths checked above
            state[name] = value
        for name, value in fixed:
            state[name] = value
        for name, factory in made:
            state[name] = factory()
        return obj

    return build


def reader(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """What reads the attributes `names` of an object, as a tuple (attrgetter gives a lone one as
    it is, not in a tuple)."""
    if len(names) == 1:
        name = names[0]
        return lambda value: (getattr(value, name),)
    return attrgetter(*names)


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    """Waiting on dependencies."""
    SCHEDULED = "SCHEDULED"
    """Waiting for its time: the first run or a retry's backoff."""
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED})
"""The ended statuses: nothing happens to such a task unless someone retries it."""


class Priority(str, Enum):
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between attempts: initial_ms * factor**n, capped at max_ms."""

    initial_ms: int = 1000
    factor: float = 2.0
    max_ms: int = 300_000
    jitter: bool = True

    def as_dict(self) -> dict[str, Any]:
        """What a task's spec stores (dataclasses.asdict is ten times slower, which shows in batches)."""
        return {"initial_ms": self.initial_ms, "factor": self.factor, "max_ms": self.max_ms, "jitter": self.jitter}

    def delay_ms(self, retry: int, rng: random.Random | None = None) -> float:
        """How long to wait before retry number `retry` (1 = the first retry).

        Jitter draws the wait from [50%, 100%] of its nominal value so that tasks that failed
        together do not all come back together.
        """
        ms = min(self.initial_ms * self.factor ** (retry - 1), self.max_ms)
        if self.jitter:
            ms *= (rng or random).uniform(0.5, 1.0)
        return float(ms)


class ErrorType(str, Enum):
    """The `error.type` of a task that rqflow itself failed or canceled (a handler's exception
    gives its own class name instead)."""

    DEPENDENCY_FAILED = "dependency_failed"
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    FORBIDDEN_JOB = "forbidden_job"
    UNKNOWN_TASK_TYPE = "unknown_task_type"


@dataclass(frozen=True)
class TaskError:
    type: str
    message: str


@dataclass(frozen=True)
class Edge:
    """One dependency: the parent's id, and whether the child runs even if that parent fails."""

    parent: str
    allow_failure: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """A submission, normalized: aliases resolved, defaults not yet applied from the task type."""

    type: str
    id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    duration_ms: int | None = None
    dependencies: tuple[Edge, ...] = ()
    priority: Priority = Priority.DEFAULT
    run_at: datetime | None = None
    delay_ms: int | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    name: str | None = None
    schedule_id: str | None = None

    def fingerprint(self) -> str:
        """Stable hash of what was asked, so a repeat with the same body is recognised as one: every
        field in declaration order, so a field added to TaskSpec is part of it with no other edit."""
        read, converted = _fingerprinted(type(self))
        body = list(read(self))
        for i in converted:
            value = body[i]
            if type(value) not in _AS_IS:
                body[i] = _plain(value)
        return hashlib.sha256(codec.dumps(body, sort_keys=True)).hexdigest()


CALL_FIELDS = ("payload", "duration_ms")
"""TaskSpec fields the handler is called with, besides its type: RQ keeps them in the job's data.
Every other field is kept in rqflow's part of the job hash (app.jobs.spec)."""

TYPE_DEFAULTS = ("max_attempts", "backoff", "timeout_ms")
"""TaskSpec fields that, left out, take the value of the task type's field of the same name."""


_AS_IS = frozenset({str, int, float, bool, dict, list, type(None)})
"""Types `_plain` hands back untouched, checked first: a batch of 10,000 tasks fingerprints each
field of each, and `is_dataclass` alone cost more than the hashing."""


_FINGERPRINTED: dict[type, tuple[Callable[[Any], tuple[Any, ...]], tuple[int, ...]]] = {}


def _fingerprinted(cls: type) -> tuple[Callable[[Any], tuple[Any, ...]], tuple[int, ...]]:
    """What reads a spec's fields for its fingerprint, and the positions of those whose declared
    type is not JSON as it is (they may need `_plain`): the others are skipped without a look."""
    known = _FINGERPRINTED.get(cls)
    if known is None:
        hints = get_type_hints(cls)
        converted = []
        for i, f in enumerate(fields(cls)):
            hint = hints[f.name]
            kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
            if not all((get_origin(kind) or kind) in _AS_IS for kind in kinds):
                converted.append(i)
        known = _FINGERPRINTED[cls] = (_fields_of(cls), tuple(converted))
    return known


_FIELDS_OF: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _fields_of(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """What reads a dataclass's field values, in declaration order, as a tuple."""
    read = _FIELDS_OF.get(cls)
    if read is None:
        read = _FIELDS_OF[cls] = reader([f.name for f in fields(cls)])
    return read


def _plain(value: Any) -> Any:
    """A field's value as the JSON the fingerprint hashes: enums by value, times in ISO 8601, small
    dataclasses (Edge, Backoff) as the list of their fields."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    convert = _PLAIN.get(kind)
    if convert is None:
        convert = _PLAIN[kind] = _plain_of(kind)
    return convert(value)


_PLAIN: dict[type, Callable[[Any], Any]] = {}
"""`_plain`'s conversion for each type met, worked out once: a batch of 10,000 tasks converts
each of their edges."""


def _plain_of(kind: type) -> Callable[[Any], Any]:
    if issubclass(kind, Enum):
        return attrgetter("_value_")  # `value` is a property, ten times slower
    if issubclass(kind, datetime):
        return datetime.isoformat
    if issubclass(kind, tuple):
        return lambda value: [v if type(v) in _AS_IS else _plain(v) for v in value]
    if is_dataclass(kind):
        read = _fields_of(kind)
        return lambda value: [v if type(v) in _AS_IS else _plain(v) for v in read(value)]
    return lambda value: value


@dataclass(frozen=True)
class TaskChanges:
    """What `PUT /api/tasks/{id}` changes; None leaves a field as it is."""

    payload: dict[str, Any] | None = None
    duration_ms: int | None = None
    priority: Priority | None = None
    run_at: datetime | None = None
    delay_ms: int | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    name: str | None = None

    @property
    def times_given(self) -> bool:
        return self.run_at is not None or self.delay_ms is not None


@dataclass(frozen=True)
class Task:
    """A task as stored: the submission with its type's defaults applied, plus its progress."""

    id: str
    type: str
    name: str
    payload: dict[str, Any]
    duration_ms: int | None
    dependencies: tuple[Edge, ...]
    priority: Priority
    run_at: datetime | None
    delay_ms: int | None
    max_attempts: int
    backoff: Backoff
    timeout_ms: int
    status: TaskStatus
    attempts: int
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: TaskError | None
    worker: str | None
    schedule_id: str | None = None
    waiting_for: dict[str, Any] | None = None
    """What a task that has not started waits for (dependencies, a concurrency limit, its time,
    a free worker); filled in only when one task is read."""
