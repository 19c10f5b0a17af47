"""The asyncio client (see app.client): the blocking client's methods, awaited."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from typing_extensions import Unpack

from app.client import calls
from app.client.calls import DEFAULT_URL, ApiError, Call, Event, Task, Unreachable


class AsyncClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = calls.auth_headers(key)
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, call: Call) -> Any:
        for attempt in itertools.count():
            got: httpx.Response | httpx.TransportError
            try:
                got = await self.http.request(**call.kwargs)
            except httpx.TransportError as error:
                got = error
            then = calls.outcome(call, got, attempt, self.retries, self.http.base_url)
            if not isinstance(then, calls.Again):
                return then
            await asyncio.sleep(then.after_s)

    async def submit(
        self, task_type: str, payload: dict[str, Any] | None = None, **fields: Unpack[calls.TaskFields]
    ) -> Task:
        """Submit one task; safe to repeat (it always has an id)."""
        body = calls.task_body(task_type, payload, **fields)
        task: Task = await self.run(calls.submit(body))
        return task

    async def submit_batch(self, tasks: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
        stored: list[dict[str, str]] = []
        for call in calls.batches([dict(t) for t in tasks]):
            stored += (await self.run(call))["tasks"]
        return stored

    async def get(self, task_id: str) -> Task:
        task: Task = await self.run(calls.get(task_id))
        return task

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        schedule_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[Task]:
        params = calls.list_params(status, type, schedule_id, id_prefix, min(page_size, limit or page_size))
        cursor, seen = None, 0
        while True:
            tasks, cursor = await self.run(calls.page(params, cursor))
            for task in tasks:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield task
            if not cursor:
                return

    async def cancel(self, task_id: str) -> Task:
        task: Task = await self.run(calls.cancel(task_id))
        return task

    async def retry(self, task_id: str) -> Task:
        task: Task = await self.run(calls.retry(task_id))
        return task

    async def delete(self, task_id: str) -> None:
        await self.run(calls.delete(task_id))

    async def history(self, task_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.run(calls.history(task_id))
        return found

    async def schedules(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.run(calls.schedules())
        return found

    async def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self.run(calls.create_schedule(body))
        return created

    async def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.run(calls.get_schedule(schedule_id))
        return found

    async def pause_schedule(self, schedule_id: str, paused: bool = True) -> dict[str, Any]:
        body = calls.paused(await self.get_schedule(schedule_id), paused)
        changed: dict[str, Any] = await self.run(calls.replace_schedule(schedule_id, body))
        return changed

    async def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self.pause_schedule(schedule_id, paused=False)

    async def delete_schedule(self, schedule_id: str) -> None:
        await self.run(calls.delete_schedule(schedule_id))

    async def events(
        self,
        *,
        task: str | None = None,
        type: str | None = None,
        status: str | None = None,
        last_event_id: str | None = None,
    ) -> AsyncIterator[Event]:
        params = calls.event_params(task, type, status)
        attempt = 0
        while True:
            try:
                async with self._open_events(params, calls.STREAM, last_event_id) as response:
                    attempt = 0
                    frames = calls.Frames()
                    async for line in response.aiter_lines():
                        event = frames.feed(line)
                        if event is not None and event.get("event") != "reset":
                            last_event_id = event.get("id") or last_event_id
                            yield event  # type: ignore[misc]
            except httpx.TransportError as error:
                if attempt >= self.retries:
                    raise Unreachable(f"{self.http.base_url}: the event stream broke off: {error}") from error
                await asyncio.sleep(calls.backoff(attempt))
                attempt += 1

    async def wait(self, task_id: str, timeout: float | None = None, poll_s: float = 0.5) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        async with AsyncExitStack() as opened:
            # As in Client.wait: only the opening decides that there is no stream.
            try:
                events = await opened.enter_async_context(self.follow(task=task_id, deadline=deadline))
            except (ApiError, httpx.TransportError):
                pass
            else:
                try:
                    return await self._wait_on_events(task_id, events, deadline)
                except httpx.TransportError:
                    pass
        while True:
            task = await self.get(task_id)
            if calls.has_ended(task):
                return task
            if calls.past(deadline):
                raise TimeoutError(f"task {task_id} has not ended within {timeout} s")
            await asyncio.sleep(poll_s)

    async def _wait_on_events(self, task_id: str, events: AsyncIterator[Event | None], deadline: float | None) -> Task:
        task = await self.get(task_id)
        if calls.has_ended(task):
            return task
        async for event in events:
            if calls.look_again(event):
                task = await self.get(task_id)
                if calls.has_ended(task):
                    return task
            if calls.past(deadline):
                raise TimeoutError(f"task {task_id} has not ended in time")
        raise httpx.ReadError("the event stream ended")

    @asynccontextmanager
    async def follow(
        self,
        *,
        task: str | None = None,
        type: str | None = None,
        status: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[AsyncIterator[Event | None]]:
        """As Client.follow, read with `async for`."""
        params = calls.event_params(task, type, status)
        async with self._open_events(params, calls.read_timeout(deadline)) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith(": connected"):
                    break

            async def read() -> AsyncIterator[Event | None]:
                frames = calls.Frames()
                async for line in lines:
                    event = frames.feed(line)
                    if event is not None:
                        yield event  # type: ignore[misc]
                    elif line.startswith(": keep-alive"):
                        yield None

            yield read()

    @asynccontextmanager
    async def _open_events(
        self, params: dict[str, str], timeout: httpx.Timeout, last_event_id: str | None = None
    ) -> AsyncIterator[httpx.Response]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with self.http.stream("GET", "/api/events", params=params, headers=headers, timeout=timeout) as response:
            if response.is_error:
                await response.aread()
                raise calls.problem_of(response)
            yield response

    async def health(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.run(calls.health())
        return found
