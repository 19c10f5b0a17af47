"""The one place errors meet HTTP: every failure leaves as RFC 9457 problem+json."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app import codec
from app.api.responses import JsonResponse
from app.errors import (
    BadJSON,
    DomainError,
    FieldError,
    InvalidInput,
    InvalidTask,
    MalformedBody,
    Overloaded,
    PayloadTooLarge,
    ScheduleNotFound,
    SubmissionInProgress,
    TaskConflict,
    TaskNotFound,
    UnreadableRecord,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """How a domain error leaves over HTTP."""

    status: int
    title: str
    type: str | None = None
    """The problem+json `type` slug, where the status alone would not say what went wrong."""
    retry_after_s: int | None = None
    """Set when the same request may well succeed if sent again this many seconds later."""


PROBLEMS: dict[type[DomainError], Problem] = {
    MalformedBody: Problem(400, "Malformed request body"),
    InvalidTask: Problem(422, "Invalid task"),
    InvalidInput: Problem(422, "Invalid input"),
    TaskNotFound: Problem(404, "Task not found"),
    ScheduleNotFound: Problem(404, "Schedule not found"),
    SubmissionInProgress: Problem(409, "Conflict", retry_after_s=1),
    PayloadTooLarge: Problem(413, "Payload too large"),
    Overloaded: Problem(503, "Too many unfinished tasks", type="too-many-unfinished", retry_after_s=5),
    TaskConflict: Problem(409, "Conflict"),
    # The server holds data it cannot present: its fault, not the client's, and said as such.
    UnreadableRecord: Problem(500, "Unreadable record", type="unreadable-record"),
}
"""Domain error -> how it leaves; the first class in an error's MRO that is listed wins. The only
place domain errors meet HTTP."""

FALLBACK = Problem(400, "Request failed")


class ProblemResponse(JsonResponse):
    media_type = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    problem_type: str | None = None,
    errors: list[dict[str, str]] | None = None,
    **extra: Any,
) -> ProblemResponse:
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:rqflow:problem:{problem_type or phrase.lower().replace(' ', '-')}",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return ProblemResponse(body, status_code=status)


def _field_errors(errors: tuple[FieldError, ...]) -> list[dict[str, str]]:
    return [{"field": e.loc, "message": e.message} for e in errors]


def _shape(exc: DomainError) -> Problem:
    return next((PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS), FALLBACK)


def status_of(exc: DomainError) -> int:
    """The HTTP status a domain error is answered with (the console shows it on a page)."""
    return _shape(exc).status


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    shape = _shape(exc)
    errors = _field_errors(exc.errors) if isinstance(exc, InvalidInput) else None
    response = problem(shape.status, exc.detail, title=shape.title, problem_type=shape.type, errors=errors)
    if shape.retry_after_s is not None:
        response.headers["Retry-After"] = str(shape.retry_after_s)
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    errors = [{"field": ".".join(str(part) for part in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, detail, title="Invalid input", errors=errors)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else f"{request.method} {request.url.path}"
    response = problem(exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    response = problem(503, "the task store (Redis) cannot be reached; nothing was changed, retry later")
    response.headers["Retry-After"] = "1"
    return response


async def redis_refused(request: Request, exc: Exception) -> Response:
    """Redis refused a command: at its maxmemory (under noeviction every write is refused; within
    a script the refusal arrives as the script's error), or a fault of ours."""
    if not isinstance(exc, OutOfMemoryError) and "OOM command not allowed" not in str(exc):
        return await unexpected(request, exc)
    log.error("Redis is at its maxmemory during %s %s: %s", request.method, request.url.path, exc)
    response = problem(
        503,
        "the task store (Redis) is full (its maxmemory); nothing was changed, retry later",
        problem_type="store-full",
    )
    response.headers["Retry-After"] = "30"
    return response


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem(500, "an unexpected error occurred; it has been logged")


HANDLERS = {
    DomainError: domain_error,
    ValidationError: validation_error,
    HTTPException: http_error,
    RedisConnectionError: redis_down,
    RedisTimeoutError: redis_down,
    ResponseError: redis_refused,
    Exception: unexpected,
}


def parse_json(raw: bytes) -> Any:
    """The body as strict JSON (`codec.loads_request`), or MalformedBody saying why not."""
    if not raw.strip():
        raise MalformedBody("the request body is empty; send a JSON object")
    try:
        return codec.loads_request(raw)
    except BadJSON as error:
        raise MalformedBody(f"the request body is not valid JSON: {error}") from None
