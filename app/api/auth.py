"""API keys with scopes: who may do what.

`RQFLOW_API_KEYS` is a comma-separated list. An entry is a bare secret (full access, named
`key-<first 8 hex of its SHA-256>` so that the history can say which key without showing it) or
`name:scope:secret`, scope one of:

- `read`: GET only;
- `write`: also submit, change, cancel and retry tasks;
- `admin`: also delete tasks and manage schedules.

Several entries may share a name: that is how a key is rotated without downtime (add the new
secret, move the clients over, remove the old one). No key or an unknown one gets 401 with
`WWW-Authenticate: Bearer`; a key without the scope a request needs gets 403. Secrets are
compared in constant time, each against every key, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem

ACTOR = "api_key"
"""Where the request's key name is kept in the ASGI scope's state (for the history of changes)."""


class Access(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True)
class ApiKey:
    name: str
    access: Access
    secret: bytes

    def __repr__(self) -> str:  # never the secret, wherever a key ends up printed
        return f"ApiKey(name={self.name!r}, access={self.access.name})"


def parse_keys(entries: list[str]) -> list[ApiKey]:
    """The keys of `RQFLOW_API_KEYS`; ValueError (naming the entry's position, not its secret) for
    an entry that is neither a bare secret nor `name:scope:secret`."""
    found = []
    for n, entry in enumerate(entries, start=1):
        name, scope, secret = [*entry.split(":", 2), "", ""][:3]
        if scope.upper() in Access.__members__:
            if not name or not secret:
                raise ValueError(f"RQFLOW_API_KEYS entry {n}: `name:scope:secret` needs a name and a secret")
            found.append(ApiKey(name, Access[scope.upper()], secret.encode()))
        else:
            digest = hashlib.sha256(entry.encode()).hexdigest()[:8]
            found.append(ApiKey(f"key-{digest}", Access.ADMIN, entry.encode()))
    return found


def protected(path: str) -> bool:
    """Whether a path needs a key when keys are configured: the API and the metrics (which name
    task types and routes); not `/health`, the contract or its page."""
    return path.startswith("/api/") or path == "/metrics"


def needed(method: str, path: str) -> Access:
    """The access a request needs: reading is READ; deleting a task and any change to schedules
    ADMIN; every other change WRITE."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return Access.READ
    if method == "DELETE" or path.startswith("/api/schedules"):
        return Access.ADMIN
    return Access.WRITE


def find_key(given: bytes, keys: list[ApiKey]) -> ApiKey | None:
    """The configured key whose secret is `given`: every key compared, in constant time, so the
    time taken says nothing of which matched."""
    found = None
    for candidate in keys:
        if hmac.compare_digest(given, candidate.secret) and found is None:
            found = candidate
    return found


def forbidden(name: str | None, has: Access, needs: Access) -> str:
    """Why a key may not do what was asked (the API's 403 and the console's say the same)."""
    return f"the key {name!r} may {has.name.lower()}; this needs {needs.name.lower()} access"


class BearerAuth:
    """`Authorization: Bearer <key>` on /api/* and /metrics when keys are configured (pure ASGI: nothing is
    buffered, so streamed answers pass through)."""

    def __init__(
        self, app: ASGIApp, keys: list[ApiKey], session: Callable[[Headers], ApiKey | None] | None = None
    ) -> None:
        """`session`: the key a request's console session cookie stands for (app.api.session)."""
        self.app = app
        self.keys = keys
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not protected(scope["path"]):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = find_key(token.strip().encode(), self.keys) if scheme.lower() == "bearer" else None
        if key is None and self.session is not None and scope["method"] in ("GET", "HEAD"):
            # The console's pages read through the API with their session (EventSource cannot
            # send a header); a cookie never authorizes a change, so no other site can make one.
            key = self.session(headers)
        if key is None:
            response = problem(401, "send a valid API key as `Authorization: Bearer <key>`")
            response.headers["WWW-Authenticate"] = 'Bearer realm="rqflow"'
            return await response(scope, receive, send)
        access = needed(scope["method"], scope["path"])
        if key.access < access:
            return await problem(403, forbidden(key.name, key.access, access))(scope, receive, send)
        scope.setdefault("state", {})[ACTOR] = key.name
        await self.app(scope, receive, send)
