"""Task types that exist only in the bench (loaded through RQFLOW_TASK_MODULES, as a user's are)."""

from __future__ import annotations

import time
from typing import Any

from app.registry import TaskContext, task_type


@task_type("stamp", max_attempts=1)
def stamp(payload: dict[str, Any], ctx: TaskContext) -> float:
    """Returns when its handler ran (epoch s): a chain's hop is the next one's minus this one's."""
    return time.time()
