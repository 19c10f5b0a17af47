"""RQFLOW_RATE_LIMIT on /api/*: per API key (its name), or per client address where no keys are
set; a batch counts each of its tasks. Over the limit: 429 problem+json with `Retry-After`, and
nothing done. Every limited answer carries the IETF `RateLimit-Policy` and `RateLimit` headers
(draft-ietf-httpapi-ratelimit-headers): the quota and window, what is left and when all is back.
`/health` is never limited.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import ACTOR
from app.api.problems import ProblemResponse, problem
from app.jobs.ratelimit import Rate, RateLimiter, Verdict

POLICY = "rqflow"
LIMITER = "rate_limiter"
"""Where the request's charge is kept in the scope's state, for the batch route."""


def _headers(rate: Rate, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-policy", f'"{POLICY}";q={rate.count};w={rate.period_s}'.encode()),
        (b"ratelimit", f'"{POLICY}";r={verdict.remaining};t={math.ceil(verdict.reset_s)}'.encode()),
    ]


def refusal(rate: Rate, verdict: Verdict, cost: int) -> ProblemResponse:
    """The 429 for a request `verdict` refused."""
    if cost > rate.count:
        detail = (
            f"a batch of {cost} tasks is more than the rate limit allows at once ({rate.count} per "
            f"{rate.period_s} s, RQFLOW_RATE_LIMIT); send it in smaller batches"
        )
        wait_s = rate.period_s
    else:
        detail = f"over the rate limit of {rate.count} per {rate.period_s} s (RQFLOW_RATE_LIMIT); nothing was done"
        wait_s = math.ceil(verdict.retry_after_s)
    response = problem(429, detail, problem_type="rate-limited")
    response.headers["Retry-After"] = str(max(wait_s, 1))
    response.raw_headers.extend(_headers(rate, verdict))
    return response


def client_of(scope: Scope) -> str:
    """Whom a request counts against: its API key's name, else its address (the proxy's, unless
    uvicorn is told to trust its forwarded headers)."""
    key = scope.get("state", {}).get(ACTOR)
    if key:
        return f"key:{key}"
    return f"addr:{scope['client'][0] if scope.get('client') else 'unknown'}"


class RateLimit:
    def __init__(self, app: ASGIApp, rate: Rate, batch_path: str) -> None:
        self.app = app
        self.rate = rate
        self.batch_path = batch_path
        self.limiter: RateLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        if self.limiter is None:  # the app's asyncio Redis client exists once its lifespan began
            self.limiter = RateLimiter(scope["app"].state.redis_async, self.rate)
        charged = _Charge(self.limiter, client_of(scope))
        # A batch is charged by the route, once it knows how many tasks it holds: one round trip.
        if not (scope["method"] == "POST" and scope["path"] == self.batch_path):
            refused = await charged.take(1)
            if refused is not None:
                return await refused(scope, receive, send)
        scope.setdefault("state", {})[LIMITER] = charged

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and charged.verdict is not None:
                shown = _headers(self.rate, charged.verdict)
                already = {name for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in shown if h[0] not in already)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Charge:
    """One request's client against the limit, and the last verdict on it (for the headers)."""

    def __init__(self, limiter: RateLimiter, client: str) -> None:
        self.limiter = limiter
        self.client = client
        self.verdict: Verdict | None = None

    async def take(self, cost: int) -> ProblemResponse | None:
        """Spend `cost`; the 429 to answer instead, if it does not fit."""
        self.verdict = await self.limiter.take(self.client, cost)
        return None if self.verdict.allowed else refusal(self.limiter.rate, self.verdict, cost)


async def charge(request: Request, tasks: int) -> ProblemResponse | None:
    """Charge a batch's tasks to its client; the 429 to answer instead, if they do not fit."""
    charged: _Charge | None = request.scope.get("state", {}).get(LIMITER)
    return None if charged is None else await charged.take(tasks)
