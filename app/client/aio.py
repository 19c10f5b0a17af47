"""The asyncio client (see app.client): the blocking client's methods, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
from typing_extensions import Unpack

from app.client import calls
from app.client.calls import ApiError, Call, Event, Task, Unreachable
from app.client.sync import DEFAULT_URL, LOOK_AGAIN


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
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, call: Call) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries or not call.retry
            try:
                response = await self.http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    content=call.content,
                    headers=call.headers,
                )
            except httpx.TransportError as error:
                if last:
                    raise calls.unreachable(self.http.base_url, error) from error
                await asyncio.sleep(calls.backoff(attempt))
                continue
            if response.status_code in (429, 503) and not last:
                await asyncio.sleep(calls.retry_after(response, attempt))
                continue
            return calls.answer(call, response, self.http.base_url)
        raise AssertionError("unreachable")

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
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with self.http.stream(
                    "GET", "/api/events", params=params, headers=headers, timeout=calls.STREAM
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise calls.problem_of(response)
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
        try:
            return await self._wait_on_events(task_id, deadline)
        except (ApiError, httpx.TransportError):
            pass
        while True:
            task = await self.get(task_id)
            if task.get("status") in calls.TERMINAL:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} has not ended within {timeout} s")
            await asyncio.sleep(poll_s)

    async def _wait_on_events(self, task_id: str, deadline: float | None) -> Task:
        timeout = calls.read_timeout(deadline)
        async with self.http.stream("GET", "/api/events", params={"task": task_id}, timeout=timeout) as response:
            if response.is_error:
                await response.aread()
                raise calls.problem_of(response)
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith(": connected"):
                    break
            task = await self.get(task_id)
            if task.get("status") in calls.TERMINAL:
                return task
            frames = calls.Frames()
            async for line in lines:
                event = frames.feed(line)
                if calls.ends(event) or (event is not None and event.get("event") in LOOK_AGAIN):
                    task = await self.get(task_id)
                    if task.get("status") in calls.TERMINAL:
                        return task
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"task {task_id} has not ended in time")
        raise httpx.ReadError("the event stream ended")

    async def health(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.run(calls.health())
        return found
