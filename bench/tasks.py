"""Task types that exist only in the bench (loaded through RQFLOW_TASK_MODULES, as a user's are)."""

from __future__ import annotations

import time
from typing import Any

from app.model import Backoff
from app.registry import TaskContext, task_type


@task_type("stamp", max_attempts=1)
def stamp(payload: dict[str, Any], ctx: TaskContext) -> float:
    """Returns when its handler ran (epoch s): a chain's hop is the next one's minus this one's."""
    return time.time()


@task_type("fail_once", max_attempts=2, backoff=Backoff(initial_ms=100, factor=1, max_ms=100, jitter=False))
def fail_once(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Fails its first attempt and does nothing on its second: a task that retried once."""
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
