"""Request bodies (pydantic, at the edge) and the JSON shapes of responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from operator import attrgetter
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)

from app.clock import iso
from app.defaults import MAX_BATCH, MAX_LIST_LIMIT, MAX_MS, SUMMARY_OVER
from app.jobs.store import INDEX_MEMBER_PATTERN
from app.model import Backoff, Edge, Priority, Task, TaskChanges, TaskError, TaskSpec, TaskStatus, assembler, reader
from app.schedules import Schedule, ScheduleSpec, TaskTemplate

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
"""RQ 3 allows only letters, digits, `_` and `-` in job ids, and job id = task id."""

TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]


def _whole_number(value: Any) -> Any:
    """JSON has one kind of number, and JSON Schema's `integer` is any number without a fraction:
    400.0 is the integer 400, 400.5 is refused. Strings and booleans stay refused (strict)."""
    return int(value) if type(value) is float and value.is_integer() else value


Whole = BeforeValidator(_whole_number)
Milliseconds = Annotated[int, Field(ge=0, le=MAX_MS, strict=True), Whole]
PositiveMilliseconds = Annotated[int, Field(ge=1, le=MAX_MS, strict=True), Whole]
MaxAttempts = Annotated[int, Field(ge=1, le=100, strict=True), Whole]
Name = Annotated[str, Field(max_length=200)]
PriorityName = Literal["high", "default", "low"]

# Other names clients of older schedulers send, for POST and PUT alike.
PAYLOAD = AliasChoices("payload", "task_data")
DURATION = AliasChoices("duration_ms", "duration")
MAX_ATTEMPTS = AliasChoices("max_attempts", "maxAttempts")
NAME = AliasChoices("name", "description")
RUN_AT = AliasChoices("run_at", "execution_time")


class BatchQuery(BaseModel):
    """`POST /api/tasks/batch`'s query, read as strictly as ListQuery: `?dry_run=ture` or
    `?dry-run=true` storing the batch for real would be worse than a 422."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(default=False, description="validate and answer what would be stored, storing nothing")


class ListQuery(BaseModel):
    """`GET /api/tasks`'s query (its parameters in the contract are made from it). A parameter it
    does not know is refused: `?stauts=FAILED` answering every task would be worse than a 422."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    type: str | None = None
    schedule_id: str | None = None
    id_prefix: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")] | None = Field(
        default=None, description="only tasks whose id starts with this"
    )
    limit: int = Field(default=100, ge=1, le=MAX_LIST_LIMIT)
    cursor: Annotated[str, Field(pattern=f"^{INDEX_MEMBER_PATTERN}$")] | None = Field(
        default=None, description="from the `Link` header of the previous page"
    )


class BackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial_ms: Milliseconds = 1000
    factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    max_ms: Milliseconds = 300_000
    jitter: Annotated[bool, Field(strict=True)] = True

    def to_backoff(self) -> Backoff:
        return Backoff(**self.model_dump())


class DependencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: TaskId
    allow_failure: Annotated[bool, Field(strict=True)] = False


def _one_start_json_value(value: int | None, info: ValidationInfo) -> int | None:
    if value is not None and info.data.get("run_at") is not None:
        raise ValueError("give run_at or delay_ms, not both")
    return value


def _utc(at: datetime | None) -> datetime | None:
    return at.astimezone(timezone.utc) if at else None


def _edges(dependencies: list[str | DependencyIn]) -> tuple[Edge, ...]:
    return tuple(Edge(d) if isinstance(d, str) else Edge(d.id, allow_failure=d.allow_failure) for d in dependencies)


TO_DOMAIN: dict[str, Callable[[Any], Any]] = {
    "dependencies": _edges,
    "priority": {p.value: p for p in Priority}.__getitem__,  # Priority(value) costs ten times more
    "run_at": _utc,
    "backoff": lambda backoff: backoff.to_backoff(),
}
"""How a request field becomes the domain's value, where it is not the same value. A field of the
same name in a request model and a domain dataclass needs no other edit to pass from one to the
other (`to_domain`)."""

Target = TypeVar("Target")


@dataclass(frozen=True)
class _Mapping:
    """How `to_domain` maps one request model onto one domain dataclass."""

    read: Callable[[Any], tuple[Any, ...]]
    """Reads the fields both have from a request, as a tuple."""
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]
    """TO_DOMAIN's conversions of those fields, by their place in the tuple."""
    build: Callable[[Sequence[Any]], Any]
    """Makes the dataclass of those fields' values, in that order."""


_MAPPINGS: dict[tuple[type[BaseModel], type[Any]], _Mapping] = {}


def to_domain(body: BaseModel, target: type[Target]) -> Target:
    """The domain dataclass `target` from the fields it shares with the request `body` (None stays
    None: a field not given). How is worked out once per pair of classes: a batch converts 10,000
    bodies."""
    mapping = _MAPPINGS.get((type(body), target))
    if mapping is None:
        declared = fields(target)  # type: ignore[arg-type]  # every target is a dataclass
        names = tuple(f.name for f in declared if f.name in type(body).model_fields)
        mapping = _MAPPINGS[(type(body), target)] = _Mapping(
            reader(names),
            tuple((names.index(name), convert) for name, convert in TO_DOMAIN.items() if name in names),
            assembler(target, names),
        )
    values = list(mapping.read(body))
    for i, convert in mapping.conversions:
        value = values[i]
        if value is not None:
            values[i] = convert(value)
    built: Target = mapping.build(values)
    return built


class TaskTemplateIn(BaseModel):
    """What every task body has; on its own, the task a schedule makes at each fire (a task body
    without id, dependencies or start time). Aliases keep clients of older schedulers working."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, Field(min_length=1, max_length=200)]
    payload: dict[str, Any] = Field(default_factory=dict, validation_alias=PAYLOAD)
    duration_ms: Milliseconds | None = Field(default=None, validation_alias=DURATION)
    priority: PriorityName = "default"
    max_attempts: MaxAttempts | None = Field(default=None, validation_alias=MAX_ATTEMPTS)
    backoff: BackoffIn | None = None
    timeout_ms: PositiveMilliseconds | None = None
    name: Name | None = Field(default=None, validation_alias=NAME)

    def to_template(self) -> TaskTemplate:
        return to_domain(self, TaskTemplate)


class TaskIn(TaskTemplateIn):
    """`POST /api/tasks` (and each member of a batch)."""

    model_config = ConfigDict(extra="forbid")

    id: TaskId | None = None
    dependencies: list[TaskId | DependencyIn] = Field(
        default_factory=list, max_length=1000, validation_alias=AliasChoices("dependencies", "depends_on")
    )
    run_at: AwareDatetime | None = Field(default=None, validation_alias=RUN_AT)
    delay_ms: Milliseconds | None = None

    @field_validator("dependencies")
    @classmethod
    def _distinct_parents(cls, value: list[str | DependencyIn], info: ValidationInfo) -> list[str | DependencyIn]:
        if not value:
            return value
        parents = [d if isinstance(d, str) else d.id for d in value]
        if len(parents) > 1 and len(set(parents)) != len(parents):
            raise ValueError("lists an id more than once")
        if info.data.get("id") is not None and info.data["id"] in parents:
            raise ValueError("a task cannot depend on itself")
        return value

    @field_validator("delay_ms")
    @classmethod
    def _one_start_json_value(cls, value: int | None, info: ValidationInfo) -> int | None:
        return _one_start_json_value(value, info)

    def to_spec(self) -> TaskSpec:
        return to_domain(self, TaskSpec)


class TaskUpdateIn(BaseModel):
    """`PUT /api/tasks/{id}`: the fields given change; type, id and dependencies cannot."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] | None = Field(default=None, validation_alias=PAYLOAD)
    duration_ms: Milliseconds | None = Field(default=None, validation_alias=DURATION)
    priority: PriorityName | None = None
    run_at: AwareDatetime | None = Field(default=None, validation_alias=RUN_AT)
    delay_ms: Milliseconds | None = None
    max_attempts: MaxAttempts | None = Field(default=None, validation_alias=MAX_ATTEMPTS)
    backoff: BackoffIn | None = None
    timeout_ms: PositiveMilliseconds | None = None
    name: Name | None = Field(default=None, validation_alias=NAME)

    @field_validator("delay_ms")
    @classmethod
    def _one_start_json_value(cls, value: int | None, info: ValidationInfo) -> int | None:
        return _one_start_json_value(value, info)

    def to_changes(self) -> TaskChanges:
        return to_domain(self, TaskChanges)


SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"
"""Shorter than a task id: each run's id is `<schedule id>-<fire time>`."""


class ScheduleIn(BaseModel):
    """`POST /api/schedules` and `PUT /api/schedules/{id}`: `cron` or `interval_s`, and a task template."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=SCHEDULE_ID_PATTERN)] | None = None
    cron: Annotated[str, Field(min_length=1, max_length=200, json_schema_extra={"format": "cron"})] | None = None
    interval_s: Annotated[int, Field(ge=1, le=366 * 86400, strict=True), Whole] | None = Field(
        default=None, validate_default=True
    )
    timezone: Annotated[str, Field(min_length=1, max_length=100, json_schema_extra={"format": "time-zone"})] = Field(
        default="UTC", validate_default=True
    )
    task: TaskTemplateIn
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    max_runs: Annotated[int, Field(ge=1, strict=True), Whole] | None = None
    paused: Annotated[bool, Field(strict=True)] = False

    @field_validator("interval_s")
    @classmethod
    def _cron_or_interval(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "cron" not in info.data:
            return value  # cron itself was invalid and is reported already
        if (info.data["cron"] is None) == (value is None):
            raise ValueError("give exactly one of cron and interval_s")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_for_cron(cls, value: str, info: ValidationInfo) -> str:
        if value != "UTC" and info.data.get("interval_s") is not None:
            raise ValueError("timezone applies to cron schedules only")
        return value

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start_at")
        if value is not None and start is not None and value <= start:
            raise ValueError("end_at must be after start_at")
        return value

    def to_spec(self, schedule_id: str | None = None) -> ScheduleSpec:
        return ScheduleSpec(
            task=self.task.to_template(),
            id=schedule_id or self.id,
            cron=" ".join(self.cron.split()) if self.cron else None,
            timezone=self.timezone,
            interval_s=self.interval_s,
            start_at=_utc(self.start_at),
            end_at=_utc(self.end_at),
            max_runs=self.max_runs,
            paused=self.paused,
        )


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    spec = schedule.spec
    template = spec.task
    return {
        "id": schedule.id,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "interval_s": spec.interval_s,
        # Every field of the template, as it is declared: a field added to it shows with no edit here.
        "task": {f.name: _json_value(getattr(template, f.name)) for f in fields(template)},
        "start_at": _json_value(spec.start_at),
        "end_at": _json_value(spec.end_at),
        "max_runs": spec.max_runs,
        "paused": spec.paused,
        "runs": schedule.runs,
        "last_run_at": _json_value(schedule.last_run_at),
        "next_run_at": _json_value(schedule.next_run_at),
        "last_error": schedule.last_error,
        "created_at": _json_value(schedule.created_at),
        "updated_at": _json_value(schedule.updated_at),
    }


_SHOWN_AS: dict[type, Callable[[Any], Any]] = {
    datetime: iso,
    Priority: attrgetter("value"),
    TaskStatus: attrgetter("value"),
    Backoff: Backoff.as_dict,
    TaskError: lambda error: {"type": error.type, "message": error.message},
}
"""How values that are not plain JSON are shown, by exact type (a dict lookup: lists of tasks are
shown a thousand at a time)."""


def _json_value(value: Any) -> Any:
    show = _SHOWN_AS.get(type(value))
    return value if show is None else show(value)


def _dependencies_json(edges: tuple[Edge, ...]) -> list[Any]:
    """Dependencies as they are given: an id, or an object when the edge allows failure."""
    return [{"id": e.parent, "allow_failure": True} if e.allow_failure else e.parent for e in edges]


_TASK_FIELDS = tuple(
    (f.name, _dependencies_json if f.name == "dependencies" else None) for f in fields(Task) if f.name != "waiting_for"
)
"""Every field of Task shown, with its own way of being shown where its type does not say it."""


def task_json(task: Task, detailed: bool = False) -> dict[str, Any]:
    """The task as JSON, every field as Task declares it; `detailed` (one task read on its own)
    adds `waiting_for`."""
    body = {}
    stored = task.__dict__  # a frozen dataclass keeps its fields there; no getattr per field
    for name, own in _TASK_FIELDS:
        value = stored[name]
        show = own or _SHOWN_AS.get(type(value))
        body[name] = value if show is None else show(value)
    if detailed:
        body["waiting_for"] = task.waiting_for
    return body


# -- Responses: their shapes for the published contract (app.api.openapi). A test holds each to
# what the functions above and the routes produce, field for field, so the two cannot drift.


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackoffOut(_Out):
    initial_ms: int
    factor: float
    max_ms: int
    jitter: bool


class DependencyOut(_Out):
    """A dependency that runs its child even if it fails (others are shown as the parent's id)."""

    id: str
    allow_failure: Literal[True]


class ErrorOut(_Out):
    type: str
    message: str


_SHOWN_TYPES: dict[Any, Any] = {
    tuple[Edge, ...]: list[str | DependencyOut],
    Backoff: BackoffOut,
    TaskError | None: ErrorOut | None,
    Priority: PriorityName,
}
"""How a Task field's type is shown where task_json shows it otherwise than as it is."""


def _task_out() -> type[_Out]:
    """The answer's model, field for field the Task dataclass (as `task_json` shows each): a
    field added to Task is in the contract with no edit here. `waiting_for` is only there when
    one task is read on its own."""
    hints = get_type_hints(Task)
    described = {
        "schedule_id": "the schedule whose run this is",
        "waiting_for": "only where one task is read on its own",
    }
    shown: dict[str, Any] = {}
    for f in fields(Task):
        kind = _SHOWN_TYPES.get(hints[f.name], hints[f.name])
        default = None if f.name == "waiting_for" else ...
        shown[f.name] = (kind, Field(default, description=described.get(f.name)))
    model: type[_Out] = create_model("TaskFields", __base__=_Out, **shown)
    return model


class TaskOut(_task_out()):  # type: ignore[misc]  # a base made from Task's fields
    """A task, as every answer shows it (`task_json`)."""


class TaskStatusOut(_Out):
    id: str
    status: TaskStatus


class BatchOut(_Out):
    dry_run: bool
    tasks: list[TaskOut | TaskStatusOut] = Field(
        description="every task, or only id and status with Prefer: return=minimal (a batch of more than "
        f"{SUMMARY_OVER:,} tasks is answered with a BatchSummaryOut unless one of the two is asked for)"
    )


class BatchSummaryOut(_Out):
    model_config = ConfigDict(
        json_schema_extra={
            "description": f"The answer to a batch of more than {SUMMARY_OVER:,} tasks, and to any NDJSON "
            "batch, unless the client asks for the tasks: `Prefer: return=representation` (every task) "
            "or `return=minimal` (the id and status of each)."
        }
    )

    dry_run: bool
    created: bool
    count: int
    statuses: dict[str, int]


class EventOut(_Out):
    event: str
    at: datetime
    attempt: int | None
    worker: str | None
    error: ErrorOut | None
    detail: str | None
    by: str | None = Field(description="the name of the API key whose request made the change")


class ScheduleOut(_Out):
    id: str
    cron: str | None
    timezone: str
    interval_s: int | None
    task: dict[str, Any]
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    paused: bool
    runs: int
    last_run_at: datetime | None
    next_run_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class TypeOut(_Out):
    name: str
    description: str | None
    max_attempts: int
    timeout_ms: int
    backoff: BackoffOut
    concurrency: int | None


class BatchIn(BaseModel):
    """`POST /api/tasks/batch` with a JSON body (the route validates its members in one pass)."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)


class FieldErrorOut(_Out):
    field: str
    message: str


class ProblemOut(_Out):
    """RFC 9457 problem details, the body of every error."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldErrorOut] | None = None
