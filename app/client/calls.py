"""What each client method sends and how its answer reads, shared by the blocking and the asyncio
client (which differ only in how they wait): each method is a `Call`, sent with retries by
whichever client runs it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import httpx
from typing_extensions import Unpack

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELED"})
LOOK_AGAIN = ("deleted", "reset")
"""Events after which a waiting client reads the task again."""


def has_ended(task: Mapping[str, Any]) -> bool:
    return task.get("status") in TERMINAL


def ends(event: Mapping[str, Any] | None) -> bool:
    """Whether an event ends its task. `stopped` does not: the server stops a running task only to
    cancel it, and `canceled` comes next (the task reads FAILED for that instant)."""
    return event is not None and has_ended(event) and event.get("event") != "stopped"


def look_again(event: Mapping[str, Any] | None) -> bool:
    """Whether a client waiting on a task reads it again: at an end, where it was deleted (get
    says 404), or where events were trimmed away (reset)."""
    return ends(event) or (event is not None and event.get("event") in LOOK_AGAIN)


def past(deadline: float | None) -> bool:
    """Whether `deadline` (a time.monotonic(); None: never) has come."""
    return deadline is not None and time.monotonic() >= deadline


MAX_JSON_BATCH = 10_000
MAX_NDJSON_BATCH = 100_000
STREAM = httpx.Timeout(10.0, read=30.0)
"""An event stream sends a comment every 15 s of quiet: 30 s of silence means it is gone."""
RETRY_AFTER_MAX_S = 30.0
"""The longest wait a Retry-After may impose between two attempts."""


class Task(TypedDict, total=False):
    """A task as the API shows it (`GET /api/tasks/{id}`); see the API's /openapi.json."""

    id: str
    type: str
    name: str
    status: str
    payload: dict[str, Any]
    dependencies: list[str]
    priority: str
    attempts: int
    max_attempts: int
    created_at: str
    updated_at: str
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    result: Any
    error: dict[str, str] | None
    worker: str | None
    schedule_id: str | None
    waiting_for: dict[str, Any] | None


class Event(TypedDict, total=False):
    """One event of the stream (`GET /api/events`), with its `id` to resume from."""

    id: str
    task: str
    event: str
    status: str
    type: str
    at: str
    attempt: int
    worker: str
    error: dict[str, str]


class ApiError(Exception):
    """The server refused: its problem+json fields (`status`, `title`, `detail`, `type`, and the
    field `errors`)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        self.type = str(problem.get("type", "about:blank"))
        self.errors: list[dict[str, str]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {self.title}: {self.detail}")


class Unreachable(Exception):
    """The server could not be reached, or kept answering that it is unavailable."""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    content: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = True
    """Safe to send again: it changes nothing, or the server recognises a repeat."""
    read: Callable[[httpx.Response], Any] = lambda response: response.json() if response.content else None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The call as httpx's `request` takes it."""
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.body,
            "content": self.content,
            "headers": self.headers,
        }


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def problem_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    return ApiError(response.status_code, body if isinstance(body, dict) else {"detail": str(body)})


def retry_after(response: httpx.Response, attempt: int) -> float:
    """How long to wait before sending again: Retry-After, else an exponential backoff."""
    given = response.headers.get("retry-after", "")
    wait = float(given) if given.replace(".", "", 1).isdigit() else backoff(attempt)
    return min(wait, RETRY_AFTER_MAX_S)


def backoff(attempt: int) -> float:
    return min(0.2 * float(2**attempt), 5.0)


@dataclass(frozen=True)
class Again:
    """Send the call again, `after_s` seconds from now."""

    after_s: float


def outcome(
    call: Call, got: httpx.Response | httpx.TransportError, attempt: int, retries: int, base_url: httpx.URL
) -> Any:
    """What an attempt (counted from 0) at `call` that `got` an answer or lost its connection
    comes to: `Again` where sending again is safe and allowed, else what `call` returns or raises
    (Unreachable for a connection lost the last time)."""
    last = attempt >= retries or not call.retry
    if isinstance(got, httpx.TransportError):
        if last:
            raise unreachable(base_url, got) from got
        return Again(backoff(attempt))
    if got.status_code in (429, 503) and not last:
        return Again(retry_after(got, attempt))
    return answer(call, got, base_url)


def answer(call: Call, response: httpx.Response, base_url: httpx.URL) -> Any:
    """What `call` returns for `response`, or the exception it raises."""
    if response.status_code == 503:
        raise Unreachable(f"{base_url} is unavailable: {problem_of(response).detail}")
    if response.is_error:
        raise problem_of(response)
    return call.read(response)


def unreachable(base_url: httpx.URL, error: httpx.TransportError) -> Unreachable:
    return Unreachable(f"{base_url} cannot be reached: {error}")


def read_timeout(deadline: float | None) -> httpx.Timeout:
    """An event stream's timeouts: a line within 30 s (a keep-alive comes every 15 s), or sooner
    when a deadline (time.monotonic) comes first."""
    if deadline is None:
        return STREAM
    return httpx.Timeout(10.0, read=min(max(deadline - time.monotonic(), 0.5), 30.0))


def _when(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class TaskFields(TypedDict, total=False):
    """What a submission may say besides its type and payload (the API's task fields)."""

    id: str
    dependencies: Iterable[str | dict[str, Any]]
    priority: str
    run_at: datetime | str
    delay_ms: int
    max_attempts: int
    timeout_ms: int
    duration_ms: int
    backoff: dict[str, Any]
    name: str


def task_body(task_type: str, payload: dict[str, Any] | None = None, **fields: Unpack[TaskFields]) -> dict[str, Any]:
    """A task as the API takes it, always with an id (one is made when none is given) so that
    sending it again is safe."""
    given: dict[str, Any] = dict(fields)
    body: dict[str, Any] = {"id": given.pop("id", None) or uuid.uuid4().hex, "type": task_type}
    if payload is not None:
        body["payload"] = payload
    if "dependencies" in given:
        given["dependencies"] = list(given["dependencies"])
    if "run_at" in given:
        given["run_at"] = _when(given["run_at"])
    body.update((k, v) for k, v in given.items() if v is not None and v != [])
    return body


def submit(body: dict[str, Any]) -> Call:
    return Call("POST", "/api/tasks", body=body)


def batches(tasks: list[dict[str, Any]]) -> Iterator[Call]:
    """A batch as the API allows it: one JSON request up to 10,000 tasks, NDJSON (streamed) up to
    100,000, and beyond that requests of 100,000 in dependency order, parents first (a task may
    depend on one stored by an earlier request)."""
    for task in tasks:
        task.setdefault("id", uuid.uuid4().hex)
    if len(tasks) <= MAX_JSON_BATCH:
        yield Call("POST", "/api/tasks/batch", body={"tasks": tasks}, headers={"Prefer": "return=minimal"})
        return
    ordered = _parents_first(tasks)
    for start in range(0, len(ordered), MAX_NDJSON_BATCH):
        chunk = ordered[start : start + MAX_NDJSON_BATCH]
        yield Call(
            "POST",
            "/api/tasks/batch",
            content=_ndjson(chunk),
            headers={"Content-Type": "application/x-ndjson", "Prefer": "return=minimal"},
        )


def _ndjson(tasks: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(task, separators=(",", ":")).encode() for task in tasks)


def _parents_first(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {task["id"]: task for task in tasks}
    done: set[str] = set()
    ordered: list[dict[str, Any]] = []
    for task in tasks:
        stack = [(task, False)]
        while stack:
            current, expanded = stack.pop()
            if current["id"] in done:
                continue
            if expanded:
                done.add(current["id"])
                ordered.append(current)
                continue
            stack.append((current, True))
            for dep in current.get("dependencies") or []:
                parent = by_id.get(dep["id"] if isinstance(dep, dict) else dep)
                if parent is not None and parent["id"] not in done:
                    stack.append((parent, False))
    return ordered


def get(task_id: str) -> Call:
    return Call("GET", f"/api/tasks/{task_id}")


def page(params: dict[str, Any], cursor: str | None) -> Call:
    return Call("GET", "/api/tasks", params={**params, **({"cursor": cursor} if cursor else {})}, read=_page)


def _page(response: httpx.Response) -> tuple[list[Task], str | None]:
    nxt = response.links.get("next", {}).get("url")
    cursor = httpx.URL(nxt).params.get("cursor") if nxt else None
    return response.json(), cursor


def list_params(
    status: str | None, task_type: str | None, schedule_id: str | None, id_prefix: str | None, limit: int | None
) -> dict[str, Any]:
    given = {"status": status, "type": task_type, "schedule_id": schedule_id, "id_prefix": id_prefix, "limit": limit}
    return {k: v for k, v in given.items() if v is not None}


def cancel(task_id: str) -> Call:
    return Call("POST", f"/api/tasks/{task_id}/cancel")


def retry(task_id: str) -> Call:
    return Call("POST", f"/api/tasks/{task_id}/retry")


def delete(task_id: str) -> Call:
    return Call("DELETE", f"/api/tasks/{task_id}")


def history(task_id: str) -> Call:
    return Call("GET", f"/api/tasks/{task_id}/history")


def schedules() -> Call:
    return Call("GET", "/api/schedules")


def create_schedule(body: dict[str, Any]) -> Call:
    return Call("POST", "/api/schedules", body=body, retry="id" in body)


def get_schedule(schedule_id: str) -> Call:
    return Call("GET", f"/api/schedules/{schedule_id}")


def replace_schedule(schedule_id: str, body: dict[str, Any]) -> Call:
    return Call("PUT", f"/api/schedules/{schedule_id}", body=body)


def delete_schedule(schedule_id: str) -> Call:
    return Call("DELETE", f"/api/schedules/{schedule_id}")


def health() -> Call:
    return Call("GET", "/health")


def paused(schedule: dict[str, Any], value: bool) -> dict[str, Any]:
    """A schedule's definition (as GET shows it) with `paused` set, as PUT takes it."""
    names = ("cron", "timezone", "interval_s", "task", "start_at", "end_at", "max_runs")
    body = {name: schedule[name] for name in names if schedule.get(name) is not None}
    if body.get("interval_s"):
        body.pop("timezone", None)
    return {**body, "paused": value}


def event_params(task: str | None, task_type: str | None, status: str | None) -> dict[str, str]:
    return {k: v for k, v in {"task": task, "type": task_type, "status": status}.items() if v}


class Frames:
    """Server-Sent Events, one line at a time in, one event at a time out."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def feed(self, line: str) -> Event | dict[str, Any] | None:
        if line == "":
            fields, self.fields = self.fields, {}
            if "data" not in fields:
                return None
            data = json.loads(fields["data"])
            if fields.get("event") == "reset":
                return {"event": "reset", **data}
            return {"id": fields.get("id", ""), **data}
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self.fields[name] = self.fields.get(name, "") + ("\n" if name in self.fields else "") + value
        return None
