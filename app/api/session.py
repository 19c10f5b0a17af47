"""The console's login: an API key given once on a form, then a signed session cookie.

The cookie names the key (its name and a fingerprint of its secret, never the secret) and the
scope it had, with an expiry, signed with HMAC-SHA256. The signing key is derived from the
configured secrets, so every API process agrees on it with no setting of its own, and removing or
rotating a key ends the sessions made with it: each request finds the key again by its
fingerprint, and uses the scope the key has now. HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), and Secure off loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import Access, ApiKey
from app.api.problems import problem

COOKIE = "rqflow_session"
LIFETIME_S = 12 * 3600
"""A session lasts a working day; then the key is asked for again."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking at the console: a key's name and what it may do (None: no keys configured,
    everything allowed)."""

    name: str | None
    access: Access

    def may(self, access: Access) -> bool:
        return self.access >= access


NOBODY_NEEDED = Viewer(None, Access.ADMIN)


def _fingerprint(key: ApiKey) -> str:
    return hashlib.sha256(b"rqflow-key:" + key.secret).hexdigest()[:32]


def _signing_key(keys: list[ApiKey]) -> bytes:
    material = b"\0".join(sorted(k.secret for k in keys))
    return hashlib.sha256(b"rqflow-session:" + material).digest()


def issue(key: ApiKey, keys: list[ApiKey], now: float | None = None) -> str:
    """The cookie value of a session for `key`."""
    body = {"n": key.name, "f": _fingerprint(key), "e": int((now or time.time()) + LIFETIME_S)}
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
    signature = hmac.new(_signing_key(keys), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{signature}"


def read(value: str, keys: list[ApiKey], now: float | None = None) -> ApiKey | None:
    """The key a cookie value stands for, or None if it is forged, expired, or its key is gone."""
    payload, _, signature = value.partition(".")
    expected = hmac.new(_signing_key(keys), payload.encode(), hashlib.sha256).hexdigest()
    # Bytes: compare_digest refuses non-ASCII text, and a cookie is whatever a client sends.
    if not payload or not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        name, fingerprint, expires = str(body["n"]), str(body["f"]), int(body["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (now or time.time()):
        return None
    found = [k for k in keys if k.name == name and hmac.compare_digest(_fingerprint(k), fingerprint)]
    return found[0] if found else None


def from_headers(headers: Headers, keys: list[ApiKey]) -> ApiKey | None:
    """The key of a request's session cookie, if it has a valid one."""
    value = cookie_parser(headers.get("cookie", "")).get(COOKIE)
    return read(value, keys) if value else None


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request comes from the console's own pages: browsers say where a
    request comes from (Sec-Fetch-Site, Origin); a request that says another site is refused."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # no Origin at all: not a browser's cross-site form or fetch
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host


class CrossSiteGuard:
    """Refuses a change to /api that a browser says comes from another site's page (pure ASGI).

    Without API keys (loopback), any page the user opens could otherwise POST a task to
    127.0.0.1 with a "simple" cross-site request, which needs no CORS permission; with keys, a
    page cannot send them, but the rule costs nothing. Clients that are not browsers send no
    Origin or Sec-Fetch-Site and are let through; origins named in RQFLOW_CORS_ORIGINS are
    allowed, as CORS says."""

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = set(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE and scope["path"].startswith("/api/"):
            headers = Headers(scope=scope)
            if headers.get("origin") not in self.allowed and not same_origin(headers):
                detail = "a change from another site's page is refused (RQFLOW_CORS_ORIGINS names the allowed ones)"
                return await problem(403, detail)(scope, receive, send)
        await self.app(scope, receive, send)


SAFE = ("GET", "HEAD", "OPTIONS")
