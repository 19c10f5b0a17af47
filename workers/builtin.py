"""Task types every rqflow deployment has."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from app.errors import TaskFailed
from app.registry import TaskContext, task_type


@task_type("data_processing", max_attempts=3, timeout_ms=300_000)
def data_processing(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Simulated work: sleeps `duration_ms`; `payload.fail: true` makes the attempt fail.

    `payload.fail_attempts: n` fails only the first n attempts, to show retries succeeding.
    """
    if ctx.duration_ms:
        time.sleep(ctx.duration_ms / 1000)
    if payload.get("fail") is True:
        raise TaskFailed(str(payload.get("message") or "failed on request (payload.fail)"))
    fail_attempts = payload.get("fail_attempts")
    if isinstance(fail_attempts, int) and ctx.attempt <= fail_attempts:
        raise TaskFailed(f"failed on request (attempt {ctx.attempt} of fail_attempts={fail_attempts})")
    return {"processed": True, "attempt": ctx.attempt, "duration_ms": ctx.duration_ms or 0}


MAX_RESPONSE_BYTES = 1_048_576


@task_type("http_request", max_attempts=5, timeout_ms=30_000, settings=["http_allowed_hosts"])
def http_request(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Calls `payload.url` (GET, or `payload.method` with a JSON `payload.json` body) on an allowed host.

    Only hosts listed in RQFLOW_HTTP_ALLOWED_HOSTS may be called, so a task cannot make a worker
    reach anything else on its network. 5xx and connection errors fail the attempt (and retry);
    other statuses are returned.
    """
    url = payload.get("url")
    if not isinstance(url, str):
        raise TaskFailed("payload.url must be a string")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TaskFailed("payload.url must be an http(s) URL")
    if parts.hostname not in ctx.settings["http_allowed_hosts"]:
        raise TaskFailed(f"host {parts.hostname!r} is not in RQFLOW_HTTP_ALLOWED_HOSTS")
    method = str(payload.get("method") or "GET").upper()
    body = json.dumps(payload["json"]).encode() if "json" in payload else None
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("User-Agent", "rqflow")
    request.add_header("Idempotency-Key", f"{ctx.task_id}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    timeout_s = float(payload.get("timeout_s") or 10)
    opener = urllib.request.build_opener(_AllowListedRedirects(ctx.settings["http_allowed_hosts"]))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            status, content = response.status, response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as error:
        status, content = error.code, error.read(MAX_RESPONSE_BYTES)
    except (urllib.error.URLError, TimeoutError) as error:
        raise TaskFailed(f"request to {parts.hostname} failed: {error}") from error
    if status >= 500:
        raise TaskFailed(f"{parts.hostname} answered {status}")
    return {"status": status, "body": content.decode("utf-8", errors="replace")}


class _AllowListedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed host, so a redirect cannot lead past the allow-list."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        host = urllib.parse.urlsplit(newurl).hostname
        if host not in self.allowed:
            raise TaskFailed(f"redirect to {host!r}, which is not in RQFLOW_HTTP_ALLOWED_HOSTS")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
