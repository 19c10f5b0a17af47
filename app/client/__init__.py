"""rqflow's Python client: `Client` (blocking) and `AsyncClient` (asyncio), over httpx.

    from app.client import Client

    with Client("http://127.0.0.1:8000", key="...") as rqflow:
        task = rqflow.submit("data_processing", {"n": 1})
        done = rqflow.wait(task["id"])            # follows the event stream; polls if it cannot

Every call that changes nothing, and every submission (it always carries an id, made here when
not given, so the server recognises a repeat), is retried on 429 and 503 as `Retry-After` says and
on a connection lost, up to `retries` times. Errors arrive as `ApiError` with the problem+json
fields; a server that cannot be reached (after the retries) as `Unreachable`. This package imports
nothing of the server's: a client machine needs httpx and typing-extensions alone.
"""

from __future__ import annotations

from app.client.aio import AsyncClient
from app.client.calls import ApiError, Unreachable
from app.client.sync import Client

__all__ = ["ApiError", "AsyncClient", "Client", "Unreachable"]
