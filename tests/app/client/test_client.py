"""The Python client against the real API (and, for what a server rarely does, a stand-in)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from app.client import ApiError, AsyncClient, Client, Unreachable, calls
from tests.support import free_port, wait_until


def test_submit_and_wait_then_a_repeat_is_the_same_task(server: str) -> None:
    with Client(server) as rqflow:
        task = rqflow.submit("echo", {"n": 1}, id="first")
        assert task["status"] in ("QUEUED", "RUNNING", "COMPLETED")
        done = rqflow.wait("first", timeout=30)
        assert done["status"] == "COMPLETED" and done["result"]["payload"] == {"n": 1}
        assert rqflow.submit("echo", {"n": 1}, id="first")["status"] == "COMPLETED"  # recognised, not run again
        made_up = rqflow.submit("echo")
        assert len(made_up["id"]) == 32  # an id is always sent, so a retried submit is safe


def test_a_failure_waits_to_its_end_and_errors_carry_the_problem(server: str) -> None:
    with Client(server) as rqflow:
        rqflow.submit("flaky", id="doomed", max_attempts=1)
        assert rqflow.wait("doomed", timeout=30)["status"] == "FAILED"
        with pytest.raises(ApiError) as refused:
            rqflow.submit("no-such-type", id="x")
        assert refused.value.status == 422 and refused.value.errors and "no-such-type" in refused.value.detail
        with pytest.raises(ApiError) as missing:
            rqflow.get("nowhere")
        assert missing.value.status == 404


def test_listing_pages_through_everything(server: str) -> None:
    with Client(server) as rqflow:
        for n in range(7):
            rqflow.submit("echo", id=f"p{n}")
        listed = [t["id"] for t in rqflow.list_tasks(id_prefix="p", page_size=3)]
        assert sorted(listed) == [f"p{n}" for n in range(7)]
        assert len(list(rqflow.list_tasks(page_size=2, limit=5))) == 5


class Recording(httpx.HTTPTransport):
    """The real transport, keeping each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


def test_a_dag_larger_than_one_request_goes_in_parents_first_pieces(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_JSON_BATCH", 3)
    monkeypatch.setattr(calls, "MAX_NDJSON_BATCH", 4)
    chain = [{"id": f"c{n}", "type": "echo", "dependencies": [f"c{n - 1}"] if n else []} for n in range(10)]
    recording = Recording()
    with Client(server, transport=recording) as rqflow:
        stored = rqflow.submit_batch(list(reversed(chain)))  # children first: the client reorders
        assert sorted(t["id"] for t in stored) == sorted(t["id"] for t in chain)
        assert rqflow.wait("c9", timeout=30)["status"] == "COMPLETED"
    pieces = [
        [json.loads(line) for line in request.content.splitlines()]
        for request in recording.sent
        if request.url.path == "/api/tasks/batch"
    ]
    assert [len(piece) for piece in pieces] == [4, 4, 2]
    stored_before: set[str] = set()
    for piece in pieces:  # each depends only on what an earlier one stored, or on itself
        ids = {task["id"] for task in piece}
        assert {dep for task in piece for dep in task["dependencies"]} <= stored_before | ids, piece
        stored_before |= ids


def test_schedules_from_the_client(server: str) -> None:
    with Client(server) as rqflow:
        created = rqflow.create_schedule({"id": "hourly", "cron": "0 * * * *", "task": {"type": "echo"}})
        assert created["id"] == "hourly"
        assert rqflow.pause_schedule("hourly")["paused"] is True
        assert rqflow.resume_schedule("hourly")["paused"] is False
        rqflow.delete_schedule("hourly")
        assert rqflow.schedules() == []


def test_the_async_client_does_the_same(server: str) -> None:
    async def run() -> list[str]:
        async with AsyncClient(server) as rqflow:
            await rqflow.submit("echo", {"n": 2}, id="async-1")
            done = await rqflow.wait("async-1", timeout=30)
            assert done["status"] == "COMPLETED"
            return [t["id"] async for t in rqflow.list_tasks(page_size=1)]

    assert asyncio.run(run()) == ["async-1"]


def test_503_and_429_are_sent_again_after_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "2"}, json={"title": "Service Unavailable", "detail": "full"}),
        httpx.Response(429, headers={"Retry-After": "1"}, json={"title": "Too Many Requests", "detail": "slow"}),
        httpx.Response(201, json={"id": "t", "status": "QUEUED"}),
    ]
    sent: list[dict[str, Any]] = []
    waited: list[float] = []
    monkeypatch.setattr("app.client.sync.time.sleep", waited.append)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return answers.pop(0)

    with Client("http://rqflow.test", transport=httpx.MockTransport(answer)) as rqflow:
        assert rqflow.submit("echo")["status"] == "QUEUED"
    assert waited == [2.0, 1.0]
    assert len({body["id"] for body in sent}) == 1  # the same id each time: one task, however often sent


def test_a_server_away_is_unreachable_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.client.sync.time.sleep", lambda s: None)
    with Client(f"http://127.0.0.1:{free_port()}", retries=2) as rqflow, pytest.raises(Unreachable):
        rqflow.health()


def test_wait_polls_where_there_is_no_event_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.client.sync.time.sleep", lambda s: None)
    statuses = ["QUEUED", "RUNNING", "COMPLETED"]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/events":
            return httpx.Response(404, json={"title": "Not Found", "detail": "an older server"})
        return httpx.Response(200, json={"id": "t", "status": statuses.pop(0) if len(statuses) > 1 else statuses[0]})

    with Client("http://rqflow.test", transport=httpx.MockTransport(answer)) as rqflow:
        assert rqflow.wait("t")["status"] == "COMPLETED"


class Quiet(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An event stream that follows, then sends nothing until the read times out."""

    def __iter__(self) -> Iterator[bytes]:
        yield b": connected\n\n"
        raise httpx.ReadTimeout("quiet")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        raise httpx.ReadTimeout("quiet")


def test_wait_polls_where_the_stream_fails_and_not_where_the_task_is_refused() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if request.url.path == "/api/events":
            return httpx.Response(200, stream=Quiet())
        if request.url.path == "/api/tasks/gone":
            return httpx.Response(404, json={"title": "Not Found", "detail": "no task gone"})
        return httpx.Response(
            200, json={"id": "t", "status": "COMPLETED" if "/api/tasks/t" in sent[:-1] else "RUNNING"}
        )

    refused = ["/api/events", "/api/tasks/gone"]  # once: polling would ask the same again
    polled = ["/api/events", "/api/tasks/t", "/api/tasks/t"]  # the read timed out: asked again
    with Client("http://rqflow.test", transport=httpx.MockTransport(answer)) as rqflow:
        with pytest.raises(ApiError):
            rqflow.wait("gone")
        assert sent == refused
        sent.clear()
        assert rqflow.wait("t")["status"] == "COMPLETED" and sent == polled

    async def run() -> None:
        async with AsyncClient("http://rqflow.test", transport=httpx.MockTransport(answer)) as rqflow:
            with pytest.raises(ApiError):
                await rqflow.wait("gone")
            assert sent == refused
            sent.clear()
            assert (await rqflow.wait("t"))["status"] == "COMPLETED" and sent == polled

    sent.clear()
    asyncio.run(run())


def test_wait_keeps_to_its_timeout_and_a_deleted_task_ends_it(server: str, redis: Redis) -> None:
    def following() -> bool:  # the API reads the event stream for a waiting client
        return any(c.get("cmd") == "xread" for c in redis.client_list())

    with Client(server) as rqflow, concurrent.futures.ThreadPoolExecutor(1) as pool:
        rqflow.submit("data_processing", id="long", duration_ms=30_000)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            rqflow.wait("long", timeout=1.5)
        assert time.monotonic() - started < 5
        # Until the first wait's stream is gone, `following` cannot tell that the second follows:
        # the task could be deleted before it does, and the "deleted" event never be read.
        wait_until(lambda: not following(), timeout=10, interval=0.05, what="the first wait's stream to close")
        waiting = pool.submit(rqflow.wait, "long", 30)
        wait_until(following, timeout=10, interval=0.05, what="the wait to follow the task's events")
        with Client(server) as other:
            other.delete("long")
        # Deleting a running task stops it first: the wait ends with it CANCELED, or, if the
        # record went before the wait read it again, with a 404; never by hanging.
        try:
            assert waiting.result(timeout=20)["status"] == "CANCELED"
        except ApiError as gone:
            assert gone.status == 404
