"""`create_app(settings)`: the Starlette application, its Redis opened and closed in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import console, session
from app.api.auth import BearerAuth, parse_keys
from app.api.limits import RateLimit
from app.api.observe import Observe, flush_every
from app.api.problems import HANDLERS, problem
from app.api.routes import BATCH_PATH, ROUTES
from app.clock import Clock, now
from app.jobs.autopipeline import AutoPipeline
from app.jobs.metrics import HttpCounts
from app.jobs.ratelimit import Rate
from app.jobs.store import connect, connect_async
from app.jobs.tasks import TaskService
from app.registry import load_registry
from app.schedules import ScheduleService
from app.settings import Settings


class BodyLimit:
    """Bodies over the limit get a 413 problem, whether announced by Content-Length or streamed.
    A batch (up to 10,000 tasks) has a limit of its own.

    Starlette's own `max_body_size` answers in plain text and replaces any response whose request
    announced too large a body, so it cannot give problem+json.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_batch_bytes: int) -> None:
        self.app = app
        self.limits = {"": (max_bytes, "RQFLOW_MAX_BODY_BYTES")}
        self.limits[BATCH_PATH] = (max_batch_bytes, "RQFLOW_MAX_BATCH_BODY_BYTES")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes, setting = self.limits.get(scope["path"], self.limits[""])
        detail = f"the request body is larger than {max_bytes} bytes ({setting})"
        announced = Headers(scope=scope).get("content-length", "")
        if announced.isdigit() and int(announced) > max_bytes:
            return await problem(413, detail)(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise HTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)


CORS_EXPOSED = [
    "Location",
    "Link",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Preference-Applied",
    "Server-Timing",
]
"""Response headers a page on another origin may read (with RQFLOW_CORS_ORIGINS)."""

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
"""On every answer: no content sniffing, never in a frame, no referrer to other sites."""

NO_STORE = (b"cache-control", b"no-store")
"""On every /api answer: tasks, results and errors are not for caches to keep."""


class ResponseHeaders:
    """What every response carries: the security headers, `Cache-Control: no-store` on /api, and
    `Server-Timing: app;dur=<ms>`, the time from the request's arrival to its response's start,
    so clients (and the benchmark) see server time apart from the network. Pure ASGI: a streamed
    answer passes through as it is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        fixed = [*SECURITY_HEADERS, NO_STORE] if scope["path"].startswith("/api/") else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", []),
                    *fixed,
                    (b"server-timing", b"app;dur=%.1f" % elapsed_ms),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, clock: Clock = now) -> Starlette:
    registry = load_registry(settings.task_modules, settings.type_limits)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings)
        app.state.redis = redis
        app.state.redis_async = connect_async(settings)
        # The one-task submissions of concurrent requests share their round trips to Redis.
        app.state.pipeline = AutoPipeline(app.state.redis_async)
        app.state.tasks = TaskService(
            redis,
            registry,
            result_ttl_s=settings.result_ttl_s,
            failed_ttl_s=settings.failed_ttl_s,
            max_unfinished=settings.max_unfinished,
            max_payload_bytes=settings.max_payload_bytes,
        )
        app.state.schedules = ScheduleService(redis, app.state.tasks, clock)
        flushing = asyncio.create_task(flush_every(http_counts, redis))
        try:
            yield
        finally:
            flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushing
            redis.close()
            await app.state.redis_async.aclose()

    http_counts = HttpCounts()
    # Outermost: it sees every answer, the refusals of keys and limits included.
    middleware = [Middleware(Observe, counts=http_counts), Middleware(ResponseHeaders)]
    if settings.cors_origins:
        # Off unless origins are named: a browser page elsewhere then may call the API with a key.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Prefer", "Last-Event-ID", "X-Request-ID"],
                expose_headers=CORS_EXPOSED,
                max_age=600,
            )
        )
    middleware += [
        Middleware(session.CrossSiteGuard, allowed_origins=settings.cors_origins),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_batch_bytes=settings.max_batch_body_bytes),
    ]
    keys = parse_keys(settings.api_keys)
    if keys:
        middleware.append(Middleware(BearerAuth, keys=keys, session=partial(session.from_headers, keys=keys)))
    if settings.rate_limit:
        # After the keys: a request counts against its key's name.
        middleware.append(Middleware(RateLimit, rate=Rate.parse(settings.rate_limit), batch_path=BATCH_PATH))
    app = Starlette(
        routes=[*ROUTES, *console.ROUTES],
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.api_keys = keys  # parsed once: the auth middleware and the console's login share them
    app.state.settings = settings
    return app
