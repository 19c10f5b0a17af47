"""Times as rqflow stores and shows them: epoch milliseconds inside, RFC 3339 outside."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache

Clock = Callable[[], datetime]
"""What services ask for the current time: `now` in production, a fixed or stepping clock in tests."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def to_ms(at: datetime) -> int:
    """A time in epoch milliseconds, rounded up: whatever waits for a due time never starts early."""
    return math.ceil(at.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@lru_cache(maxsize=256)
def iso(at: datetime) -> str:
    """RFC 3339 in UTC to the millisecond. Cached: the tasks of one batch share their times."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
