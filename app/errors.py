"""The domain's errors. Each is raised by the core and turned into problem+json in one place
(`app.api.problems`); nothing here knows about HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One bad field: where it is (`loc`, e.g. `dependencies.0`) and what is wrong with it."""

    loc: str
    message: str


class DomainError(Exception):
    """Base of every error rqflow raises on purpose."""

    title = "Request failed"
    problem_type: str | None = None
    """The problem+json `type` slug, where the HTTP status alone would not say what went wrong."""
    retry_after_s: int | None = None
    """Set when the same request may well succeed if sent again this many seconds later."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    """Raised when a request is well-formed but a value in it does not fit; `errors` names each field."""

    title = "Invalid input"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class InvalidTask(InvalidInput):
    """Raised when a submission names things that do not fit: an unknown type, a missing
    dependency, an option this deployment does not support."""

    title = "Invalid task"


class UnknownTaskType(InvalidTask):
    """Raised when a task names a type no module registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        message = f"unknown task type {name!r}; registered types: {', '.join(known) or 'none'}"
        super().__init__(message, [FieldError("type", message)])
        self.name = name


class UnknownDependency(InvalidTask):
    """Raised when a task depends on ids that are not stored tasks (RQ would treat them as met, rq#2275)."""

    def __init__(self, missing: Sequence[tuple[int, str]]) -> None:
        ids = ", ".join(task_id for _, task_id in missing)
        super().__init__(
            f"dependencies do not exist: {ids}",
            [FieldError(f"dependencies.{i}", f"no task with id {task_id!r}") for i, task_id in missing],
        )


class TaskNotFound(DomainError):
    """Raised when no task has the given id (never submitted, deleted, or expired)."""

    title = "Task not found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class ScheduleNotFound(DomainError):
    """Raised when no schedule has the given id."""

    title = "Schedule not found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r}")
        self.schedule_id = schedule_id


class TaskConflict(DomainError):
    """Raised when an id is reused with a different body, or an operation does not fit the task's state."""

    title = "Conflict"


class SubmissionInProgress(TaskConflict):
    """Raised when another submission of some of the same ids is being written (or was cut off by
    a crash moments ago, until its claim lapses): the same request may succeed shortly."""

    retry_after_s = 1


class UnreadableRecord(DomainError):
    """Raised when a stored task or schedule cannot be decoded (written by an older version, by hand,
    or damaged): it is left out of lists, counted in `/api/stats`, and can still be deleted."""

    title = "Unreadable record"
    problem_type = "unreadable-record"

    def __init__(self, kind: str, record_id: str, reason: str) -> None:
        super().__init__(
            f"the stored {kind} {record_id!r} cannot be decoded ({reason}); "
            f"DELETE it to remove it, or repair it in Redis"
        )
        self.kind = kind
        self.record_id = record_id


class StoreUnavailable(DomainError):
    """Raised when Redis cannot be reached; the request changed nothing and may be retried."""

    title = "Store unavailable"
