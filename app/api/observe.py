"""What the API tells about its requests: an id for each (`X-Request-ID`, taken or made, on every
log line written while answering it and on the answer), and its count and duration by route
template for `/metrics` (app.jobs.metrics), sent to Redis once a second. Pure ASGI: a streamed
answer passes through as it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import time

from redis import Redis
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import keys
from app.jobs.metrics import HttpCounts
from app.logs import REQUEST_ID

FLUSH_S = 1.0
"""How often each API process adds its request counts to Redis."""

_OWN_IDS = itertools.count()
_PROCESS_PREFIX = secrets.token_hex(8)
"""Ids this process makes: a random prefix of its own and a counter, 32 hex digits like a UUID's,
unique without a system call for randomness on every request."""

_GIVEN_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
"""A request id a client may set: anything else (too long, or able to forge a log line) is
replaced with one of ours."""


class Observe:
    def __init__(self, app: ASGIApp, counts: HttpCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _GIVEN_ID.fullmatch(given) else f"{_PROCESS_PREFIX}{next(_OWN_IDS):016x}"
        token = REQUEST_ID.set(request_id)
        status: int | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                self.counts.observe(_template(scope), scope["method"], status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            # Starlette answers an unexpected error (500) outside every middleware: count it here,
            # and leave the request id set for the line that logs it (each request is a task of its
            # own, so the id goes with it).
            if status is None:  # no answer began: Starlette's 500 is the answer
                self.counts.observe(_template(scope), scope["method"], 500, time.perf_counter() - started)
            raise
        REQUEST_ID.reset(token)


def _template(scope: Scope) -> str:
    """The route's template, never the raw path: ids would make a series each."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def flush(counts: HttpCounts, redis: Redis) -> None:
    """Add what was counted to Redis (keys.HTTP_METRICS); what fails to reach it is counted again."""
    taken, sums = counts.take()
    if not taken:
        return
    try:
        with redis.pipeline(transaction=False) as pipe:
            for field, n in taken.items():
                pipe.hincrby(keys.HTTP_METRICS, field, n)
            for field, seconds in sums.items():
                pipe.hincrbyfloat(keys.HTTP_METRICS, field, round(seconds, 6))
            pipe.execute()
    except Exception:
        counts.restore(taken, sums)
        raise


async def flush_every(counts: HttpCounts, redis: Redis) -> None:
    """`flush` once a second until canceled (the app's lifespan), then once more. In a thread, on
    the app's blocking client: no asyncio connection is shared with the requests' event loop."""
    try:
        while True:
            await asyncio.sleep(FLUSH_S)
            with contextlib.suppress(Exception):  # Redis away: the counts wait for the next second
                await asyncio.to_thread(flush, counts, redis)
    finally:
        with contextlib.suppress(Exception):
            flush(counts, redis)
