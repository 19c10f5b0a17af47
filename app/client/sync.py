"""The blocking client (see app.client)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
from typing_extensions import Unpack

from app.client import calls
from app.client.calls import DEFAULT_URL, ApiError, Call, Event, Task, Unreachable


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = calls.auth_headers(key)
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def run(self, call: Call) -> Any:
        """Send `call`, again on 429, 503 or a lost connection where that is safe."""
        for attempt in itertools.count():
            got: httpx.Response | httpx.TransportError
            try:
                got = self.http.request(**call.kwargs)
            except httpx.TransportError as error:
                got = error
            then = calls.outcome(call, got, attempt, self.retries, self.http.base_url)
            if not isinstance(then, calls.Again):
                return then
            time.sleep(then.after_s)

    # -- tasks --------------------------------------------------------------------------------------

    def submit(self, task_type: str, payload: dict[str, Any] | None = None, **fields: Unpack[calls.TaskFields]) -> Task:
        """Submit one task; safe to repeat (it always has an id)."""
        body = calls.task_body(task_type, payload, **fields)
        task: Task = self.run(calls.submit(body))
        return task

    def submit_batch(self, tasks: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
        """Submit a batch (a DAG): all or nothing up to 100,000 tasks, parents first in requests of
        100,000 beyond. Returns each task's id and status."""
        stored: list[dict[str, str]] = []
        for call in calls.batches([dict(t) for t in tasks]):
            stored += self.run(call)["tasks"]
        return stored

    def get(self, task_id: str) -> Task:
        task: Task = self.run(calls.get(task_id))
        return task

    def list_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        schedule_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        page_size: int = 500,
    ) -> Iterator[Task]:
        """Tasks, newest first, page after page; at most `limit` in all."""
        params = calls.list_params(status, type, schedule_id, id_prefix, min(page_size, limit or page_size))
        cursor, seen = None, 0
        while True:
            tasks, cursor = self.run(calls.page(params, cursor))
            for task in tasks:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield task
            if not cursor:
                return

    def cancel(self, task_id: str) -> Task:
        task: Task = self.run(calls.cancel(task_id))
        return task

    def retry(self, task_id: str) -> Task:
        task: Task = self.run(calls.retry(task_id))
        return task

    def delete(self, task_id: str) -> None:
        self.run(calls.delete(task_id))

    def history(self, task_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.run(calls.history(task_id))
        return found

    # -- schedules ----------------------------------------------------------------------------------

    def schedules(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.run(calls.schedules())
        return found

    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.run(calls.create_schedule(body))
        return created

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.run(calls.get_schedule(schedule_id))
        return found

    def pause_schedule(self, schedule_id: str, paused: bool = True) -> dict[str, Any]:
        body = calls.paused(self.get_schedule(schedule_id), paused)
        changed: dict[str, Any] = self.run(calls.replace_schedule(schedule_id, body))
        return changed

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self.pause_schedule(schedule_id, paused=False)

    def delete_schedule(self, schedule_id: str) -> None:
        self.run(calls.delete_schedule(schedule_id))

    # -- following ----------------------------------------------------------------------------------

    def events(
        self,
        *,
        task: str | None = None,
        type: str | None = None,
        status: str | None = None,
        last_event_id: str | None = None,
    ) -> Iterator[Event]:
        """Events as they happen (endless), resuming where a dropped connection stopped."""
        params = calls.event_params(task, type, status)
        attempt = 0
        while True:
            try:
                with self._open_events(params, calls.STREAM, last_event_id) as response:
                    attempt = 0
                    frames = calls.Frames()
                    for line in response.iter_lines():
                        event = frames.feed(line)
                        if event is not None and event.get("event") != "reset":
                            last_event_id = event.get("id") or last_event_id
                            yield event  # type: ignore[misc]
            except httpx.TransportError as error:
                if attempt >= self.retries:
                    raise Unreachable(f"{self.http.base_url}: the event stream broke off: {error}") from error
                time.sleep(calls.backoff(attempt))
                attempt += 1

    def wait(self, task_id: str, timeout: float | None = None, poll_s: float = 0.5) -> Task:
        """The task once it has ended (COMPLETED, FAILED or CANCELED), following the event stream,
        or polling where the stream cannot be had. TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with ExitStack() as opened:
            # Only the opening decides that there is no stream: a refusal of the task's own reads
            # is the caller's answer, which polling would only ask for again.
            try:
                events = opened.enter_context(self.follow(task=task_id, deadline=deadline))
            except (ApiError, httpx.TransportError):
                pass  # no stream here (an older server, a proxy that buffers): ask until it has ended
            else:
                try:
                    return self._wait_on_events(task_id, events, deadline)
                except httpx.TransportError:
                    # Cut off, or quiet up to the deadline (a keep-alive comes only every 15 s,
                    # so the read timed out there): polling asks once more and keeps to it.
                    pass
        while True:
            task = self.get(task_id)
            if calls.has_ended(task):
                return task
            if calls.past(deadline):
                raise TimeoutError(f"task {task_id} has not ended within {timeout} s")
            time.sleep(poll_s)

    def _wait_on_events(self, task_id: str, events: Iterator[Event | None], deadline: float | None) -> Task:
        task = self.get(task_id)  # read once the stream follows: an end between the two is seen
        if calls.has_ended(task):
            return task
        for event in events:
            if calls.look_again(event):
                task = self.get(task_id)
                if calls.has_ended(task):
                    return task
            if calls.past(deadline):
                raise TimeoutError(f"task {task_id} has not ended in time")
        raise httpx.ReadError("the event stream ended")

    @contextmanager
    def follow(
        self,
        *,
        task: str | None = None,
        type: str | None = None,
        status: str | None = None,
        deadline: float | None = None,
    ) -> Iterator[Iterator[Event | None]]:
        """An event stream, open and following from the moment this returns: what happens after is
        in it. It yields None for each keep-alive too (every 15 s of quiet), so a reader can look
        at its clock, and `{"event": "reset"}` where events were trimmed away before it read them
        (look the tasks up again). A line comes within 30 s, or the read times out (sooner at
        `deadline`, a time.monotonic())."""
        params = calls.event_params(task, type, status)
        with self._open_events(params, calls.read_timeout(deadline)) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith(": connected"):
                    break

            def read() -> Iterator[Event | None]:
                frames = calls.Frames()
                for line in lines:
                    event = frames.feed(line)
                    if event is not None:
                        yield event  # type: ignore[misc]
                    elif line.startswith(": keep-alive"):
                        yield None

            yield read()

    @contextmanager
    def _open_events(
        self, params: dict[str, str], timeout: httpx.Timeout, last_event_id: str | None = None
    ) -> Iterator[httpx.Response]:
        """`GET /api/events`, open; ApiError if the server refuses it."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", "/api/events", params=params, headers=headers, timeout=timeout) as response:
            if response.is_error:
                response.read()
                raise calls.problem_of(response)
            yield response

    def health(self) -> dict[str, Any]:
        found: dict[str, Any] = self.run(calls.health())
        return found
