"""`create_app(settings)`: the Starlette application, its Redis opened and closed in the lifespan."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from app.api.problems import HANDLERS, problem
from app.api.routes import ROUTES
from app.registry import load_registry
from app.settings import Settings
from app.tasks import TaskService


def connect(settings: Settings) -> Redis:
    """A client that fails fast instead of hanging when Redis is away, so requests get a 503."""
    return Redis.from_url(
        settings.effective_redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )


class BearerAuth(BaseHTTPMiddleware):
    """`Authorization: Bearer <key>` on /api/* when keys are configured."""

    def __init__(self, app: object, keys: list[str]) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.keys = [k.encode() for k in keys]

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith("/api/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip().encode()
            if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, k) for k in self.keys):
                response = problem(401, "send a valid API key as `Authorization: Bearer <key>`")
                response.headers["WWW-Authenticate"] = 'Bearer realm="rqflow"'
                return response
        return await call_next(request)


def create_app(settings: Settings) -> Starlette:
    registry = load_registry(settings.task_modules, settings.type_limits)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings)
        app.state.redis = redis
        app.state.tasks = TaskService(redis, registry, result_ttl_s=settings.result_ttl_s)
        try:
            yield
        finally:
            redis.close()

    middleware = [Middleware(BearerAuth, keys=settings.api_keys)] if settings.api_keys else []
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.registry = registry
    app.state.settings = settings
    return app
