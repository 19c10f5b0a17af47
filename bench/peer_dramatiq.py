"""Dramatiq's side of `python -m bench.engine`: its Redis broker and the same three jobs.

Run by `dramatiq bench.peer_dramatiq -p 2 -t 8`; installed for the bench only (`make bench`).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(max_retries=0)
def sleep(ms: int) -> None:
    time.sleep(ms / 1000)
