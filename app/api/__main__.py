"""`python -m app.api`: serve the API on RQFLOW_HOST:RQFLOW_PORT."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette

from app import logs
from app.api.main import create_app
from app.settings import get_settings

SHUTDOWN_GRACE_S = 3
"""How long a stopping API process lets requests finish before closing what is still open."""


def main() -> int:
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    if not settings.binds_loopback_only and not settings.api_keys and not settings.allow_public_without_keys:
        print(
            f"refusing to listen on {settings.host} without API keys: set RQFLOW_API_KEYS "
            "(or RQFLOW_ALLOW_PUBLIC_WITHOUT_KEYS=true if something in front of rqflow authenticates)",
            file=sys.stderr,
        )
        return 2
    # log_config=None: uvicorn's lines go through rqflow's one handler (app.logs), in its format.
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        # An event stream never ends by itself: on SIGTERM, uvicorn would wait for every client to
        # leave. Past this, it closes them (EventSource reconnects, to another process).
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
    }
    if settings.api_processes > 1:
        # uvicorn's workers each build the app from the environment, as this process did.
        uvicorn.run("app.api.__main__:app_from_environment", factory=True, workers=settings.api_processes, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def app_from_environment() -> Starlette:
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)  # each of uvicorn's worker processes
    return create_app(settings)


if __name__ == "__main__":
    sys.exit(main())
