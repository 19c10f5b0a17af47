"""`GET /api/events`: Server-Sent Events of what happens, read from the event stream
(app.jobs.events), as it happens.

Each event goes out as `id: <entry id>/<n>` and `data: <JSON>` (task, event, status, type, time,
and attempt, worker, error where they apply). A client that reconnects with `Last-Event-ID` (as
EventSource does by itself) first gets what it missed, in order, and nothing twice; if the stream
no longer holds where it stopped, an `event: reset` says that some were missed before the oldest
events still held follow. A comment line goes out whenever nothing else has for
EVENTS_KEEPALIVE_S, so that proxies keep the connection open. The first line is the comment
`: connected`, sent once the stream follows: a client that reads what it watches after seeing it
(app.client's `follow`, `wait`) misses nothing in between.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app import codec, keys
from app.clock import from_ms, iso
from app.defaults import EVENTS_KEEPALIVE_S, REDIS_SOCKET_TIMEOUT_S
from app.errors import FieldError, InvalidInput
from app.jobs import events
from app.model import TaskStatus

PAGE = 100
"""Stream entries read at a time while catching up."""

BLOCK_MS = int(min(EVENTS_KEEPALIVE_S, REDIS_SOCKET_TIMEOUT_S - 1) * 1000)
"""How long one read waits for news: within the client's socket timeout."""

FILTERS = ("task", "type", "status")


async def stream_events(request: Request) -> Response:
    wanted = {name: request.query_params[name] for name in FILTERS if request.query_params.get(name)}
    statuses = {s.value for s in TaskStatus}
    if "status" in wanted and wanted["status"] not in statuses:
        raise InvalidInput(
            f"status must be one of {', '.join(sorted(statuses))}", [FieldError("status", wanted["status"])]
        )
    # The header (EventSource's, on reconnecting) wins over the query parameter, which a page
    # uses to start from where it was rendered (EventSource cannot set a header).
    last = (request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "").strip()
    after = events.parse_id(last) if last else None
    if last and after is None:
        raise InvalidInput(
            "Last-Event-ID must be an id this stream sent (<entry id>/<n>)", [FieldError("Last-Event-ID", last)]
        )
    redis: AsyncRedis = request.app.state.redis_async
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # nginx: pass it on as it comes
    return StreamingResponse(_told(redis, wanted, after), media_type="text/event-stream", headers=headers)


async def _told(redis: AsyncRedis, wanted: dict[str, str], after: tuple[str, int] | None) -> AsyncIterator[bytes]:
    held: Any = []
    if after is None:
        newest: Any = await redis.xrevrange(keys.EVENTS, count=1)
        cursor = codec.text(newest[0][0]) if newest else "0-0"
    else:
        cursor = after[0]
        held = await redis.xrange(keys.EVENTS, cursor, cursor)
    # Only now: a client that reads what it follows once it sees this misses nothing after.
    yield b": connected\n\n"
    if after is not None and not held:
        # Trimmed away (or written to a Redis that has since lost it): say so, then go on from
        # the oldest event still held.
        yield RESET
        cursor = "0-0"
    for told in events.entries(held, after):
        if _matches(told.data, wanted):
            yield _frame(told)
    # XREAD answers at once while there is anything after the cursor: catching up and following
    # are the same loop.
    quiet_since = time.monotonic()
    while True:
        found: Any = await redis.xread({keys.EVENTS: cursor}, count=PAGE, block=BLOCK_MS)
        sent = False
        for _, entries in found or []:
            if len(entries) == PAGE and await _trimmed_past(redis, cursor):
                # A reader this far behind may have lost events to trimming: say so.
                yield RESET
                sent = True
            for told in events.entries(entries):
                if _matches(told.data, wanted):
                    yield _frame(told)
                    sent = True
            if entries:
                cursor = codec.text(entries[-1][0])
        if sent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= EVENTS_KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()


RESET = b'event: reset\ndata: {"reason":"the events after Last-Event-ID are no longer held"}\n\n'


async def _trimmed_past(redis: AsyncRedis, cursor: str) -> bool:
    """Whether the stream's oldest entry is past `cursor`: what came between was trimmed away."""
    if cursor == "0-0":
        return False  # from the start: nothing before it to lose
    oldest: Any = await redis.xrange(keys.EVENTS, count=1)
    if not oldest:
        return False
    first = tuple(int(part) for part in codec.text(oldest[0][0]).split("-"))
    return first > tuple(int(part) for part in cursor.split("-"))


def _matches(data: dict[str, Any], wanted: dict[str, str]) -> bool:
    return all(data.get(name) == value for name, value in wanted.items())


def _frame(told: events.Told) -> bytes:
    data = dict(told.data)
    if isinstance(data.get("at"), int):
        data["at"] = iso(from_ms(data["at"]))
    return b"id: " + told.id.encode() + b"\ndata: " + codec.dumps(data) + b"\n\n"
