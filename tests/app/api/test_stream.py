"""GET /api/events: Server-Sent Events from the Procfile's API process, read as a browser would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from app import keys
from app.jobs import events
from app.settings import Settings
from tests.support import api_process


class Stream:
    """An open event stream; `next()` is the next event (comment lines skipped), or fails the test
    when none comes within the read timeout."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> None:
        self._context = client.stream("GET", path, headers=headers or {})
        self.response = self._context.__enter__()
        assert self.response.status_code == 200, self.response.read()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._lines = self.response.iter_lines()
        # Headers come first; the stream follows from its first line on (what happens after is in it).
        assert next(self._lines).startswith(": connected")

    def next(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for line in self._lines:
            if not line:
                if fields:
                    if "data" in fields:
                        fields["data"] = json.loads(fields["data"])
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, text = line.partition(":")
            fields[name] = text.removeprefix(" ")
        raise AssertionError("the stream ended")

    def close(self) -> None:
        self._context.__exit__(None, None, None)


@pytest.fixture
def api(settings: Settings) -> Iterator[httpx.Client]:
    with (
        api_process(str(settings.redis_url)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(15.0)) as client,
    ):
        yield client


def test_a_client_sees_one_tasks_events_in_order(api: httpx.Client, work: Any) -> None:
    stream = Stream(api, "/api/events?task=watched")
    try:
        api.post("/api/tasks", json={"id": "other", "type": "echo"})
        api.post("/api/tasks", json={"id": "watched", "type": "echo"})
        work()
        seen = [stream.next() for _ in range(3)]
    finally:
        stream.close()
    assert [(e["data"]["event"], e["data"]["status"]) for e in seen] == [
        ("submitted", "QUEUED"),
        ("started", "RUNNING"),
        ("completed", "COMPLETED"),
    ]
    assert {e["data"]["task"] for e in seen} == {"watched"} and {e["data"]["type"] for e in seen} == {"echo"}
    assert all(e["data"]["at"].endswith("Z") and events.parse_id(e["id"]) for e in seen)
    assert seen[1]["data"]["attempt"] == 1 and seen[1]["data"]["worker"]


def test_a_client_that_reconnects_gets_what_it_missed_in_order_and_nothing_twice(
    api: httpx.Client, redis: Redis, work: Any
) -> None:
    stream = Stream(api, "/api/events")
    try:
        api.post("/api/tasks", json={"id": "first", "type": "echo"})
        last = stream.next()
    finally:
        stream.close()
    assert last["data"]["task"] == "first"
    # Away meanwhile: the first task runs, a DAG of two is submitted and runs.
    api.post(
        "/api/tasks/batch",
        json={"tasks": [{"id": "p", "type": "echo"}, {"id": "c", "type": "echo", "dependencies": ["p"]}]},
    )
    work()
    missed = {
        "first": ["started", "completed"],
        "p": ["submitted", "started", "completed"],
        "c": ["submitted", "queued", "started", "completed"],
        None: ["worker_started", "worker_stopped"],  # the worker's own, of no task
    }
    again = Stream(api, "/api/events", headers={"Last-Event-ID": last["id"]})
    try:
        caught_up = [again.next() for _ in range(sum(map(len, missed.values())))]
        api.post("/api/tasks", json={"id": "after", "type": "echo"})
        live = again.next()
    finally:
        again.close()
    lives: dict[str | None, list[str]] = {}
    for e in caught_up:
        lives.setdefault(e["data"].get("task"), []).append(e["data"]["event"])
    assert lives == missed
    after = events.parse_id(last["id"])
    assert after is not None
    stored = events.entries(redis.xrange(keys.EVENTS, after[0], "+"), after)
    assert [e["id"] for e in [*caught_up, live]] == [t.id for t in stored]  # under the ids they are kept with
    assert last["id"] not in [e["id"] for e in caught_up]
    assert (live["data"]["task"], live["data"]["event"]) == ("after", "submitted")
    order = [events.parse_id(e["id"]) for e in [last, *caught_up, live]]
    assert order == sorted(order, key=lambda i: (tuple(int(p) for p in i[0].split("-")), i[1]))  # type: ignore[index]


def test_a_client_whose_place_was_trimmed_away_is_told_to_reset(api: httpx.Client) -> None:
    api.post("/api/tasks", json={"id": "kept", "type": "echo"})
    stream = Stream(api, "/api/events", headers={"Last-Event-ID": "1-0/0"})
    try:
        reset = stream.next()
        first = stream.next()
    finally:
        stream.close()
    assert reset["event"] == "reset" and "no longer held" in reset["data"]["reason"]
    assert (first["data"]["task"], first["data"]["event"]) == ("kept", "submitted")


def test_filters_by_type_and_status(api: httpx.Client, work: Any) -> None:
    stream = Stream(api, "/api/events?type=flaky&status=COMPLETED")
    try:
        api.post("/api/tasks", json={"id": "e", "type": "echo"})
        api.post("/api/tasks", json={"id": "f", "type": "flaky", "payload": {"succeed_on": 1}})
        work()
        done = stream.next()
    finally:
        stream.close()
    assert (done["data"]["task"], done["data"]["event"], done["data"]["status"]) == ("f", "completed", "COMPLETED")


def test_a_bad_filter_or_event_id_is_a_problem_not_a_stream(api: httpx.Client) -> None:
    bad_status = api.get("/api/events?status=DONE")
    assert bad_status.status_code == 422 and bad_status.headers["content-type"] == "application/problem+json"
    bad_id = api.get("/api/events", headers={"Last-Event-ID": "yesterday"})
    assert bad_id.status_code == 422 and "Last-Event-ID" in bad_id.json()["detail"]
