"""Request bodies (pydantic, at the edge) and the JSON shapes of responses."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.model import Backoff, Edge, Priority, Task, TaskSpec

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
"""RQ 3 allows only letters, digits, `_` and `-` in job ids, and job id = task id."""

TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
StrictNonNegative = Annotated[int, Field(ge=0, strict=True)]


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class BackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial_ms: StrictNonNegative = 1000
    factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    max_ms: StrictNonNegative = 300_000
    jitter: Annotated[bool, Field(strict=True)] = True


class DependencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: TaskId
    allow_failure: Annotated[bool, Field(strict=True)] = False


class TaskIn(BaseModel):
    """`POST /api/tasks`. Aliases in `validation_alias` keep clients of older schedulers working."""

    model_config = ConfigDict(extra="forbid")

    id: TaskId | None = None
    type: Annotated[str, Field(min_length=1, max_length=200)]
    payload: dict[str, Any] = Field(default_factory=dict, validation_alias=_alias("payload", "task_data"))
    duration_ms: StrictNonNegative | None = Field(default=None, validation_alias=_alias("duration_ms", "duration"))
    dependencies: list[TaskId | DependencyIn] = Field(
        default_factory=list, max_length=1000, validation_alias=_alias("dependencies", "depends_on")
    )
    priority: Literal["high", "default", "low"] = "default"
    run_at: AwareDatetime | None = Field(default=None, validation_alias=_alias("run_at", "execution_time"))
    delay_ms: StrictNonNegative | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        default=None, validation_alias=_alias("max_attempts", "maxAttempts")
    )
    backoff: BackoffIn | None = None
    timeout_ms: Annotated[int, Field(ge=1, strict=True)] | None = None
    name: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, validation_alias=_alias("name", "description")
    )

    @model_validator(mode="after")
    def _check(self) -> TaskIn:
        if self.run_at is not None and self.delay_ms is not None:
            raise ValueError("give run_at or delay_ms, not both")
        parents = [edge.parent for edge in self.edges()]
        if len(set(parents)) != len(parents):
            raise ValueError("dependencies lists an id more than once")
        if self.id is not None and self.id in parents:
            raise ValueError("a task cannot depend on itself")
        return self

    def edges(self) -> tuple[Edge, ...]:
        return tuple(
            Edge(d) if isinstance(d, str) else Edge(d.id, allow_failure=d.allow_failure) for d in self.dependencies
        )

    def to_spec(self) -> TaskSpec:
        return TaskSpec(
            type=self.type,
            id=self.id,
            payload=self.payload,
            duration_ms=self.duration_ms,
            dependencies=self.edges(),
            priority=Priority(self.priority),
            run_at=self.run_at.astimezone(timezone.utc) if self.run_at else None,
            delay_ms=self.delay_ms,
            max_attempts=self.max_attempts,
            backoff=Backoff(**self.backoff.model_dump()) if self.backoff else None,
            timeout_ms=self.timeout_ms,
            name=self.name,
        )


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_json(task: Task, detailed: bool = False) -> dict[str, Any]:
    """The task as JSON; `detailed` (one task read on its own) adds `waiting_for`."""
    body = {
        "id": task.id,
        "type": task.type,
        "name": task.name,
        "status": task.status.value,
        "payload": task.payload,
        "duration_ms": task.duration_ms,
        "dependencies": [
            {"id": e.parent, "allow_failure": True} if e.allow_failure else e.parent for e in task.dependencies
        ],
        "priority": task.priority.value,
        "run_at": _time(task.run_at),
        "delay_ms": task.delay_ms,
        "max_attempts": task.max_attempts,
        "backoff": asdict(task.backoff),
        "timeout_ms": task.timeout_ms,
        "attempts": task.attempts,
        "created_at": _time(task.created_at),
        "updated_at": _time(task.updated_at),
        "queued_at": _time(task.queued_at),
        "started_at": _time(task.started_at),
        "finished_at": _time(task.finished_at),
        "result": task.result,
        "error": asdict(task.error) if task.error else None,
        "worker": task.worker,
        "schedule_id": task.schedule_id,
    }
    if detailed:
        body["waiting_for"] = task.waiting_for
    return body
