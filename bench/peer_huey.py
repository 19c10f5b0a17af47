"""Huey's side of `python -m bench.engine`: a Redis-backed Huey and the same jobs.

Run by `huey_consumer bench.peer_huey.huey -w 2 -k process`; installed for the bench only.
The tasks return 1 so that Huey keeps a result for each (it keeps none for None), which is how
the bench counts them done.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from huey import RedisHuey

_url = urlparse(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
huey = RedisHuey("bench", host=_url.hostname, port=_url.port or 6379)


@huey.task()
def noop() -> int:
    return 1


@huey.task()
def sleep(ms: int) -> int:
    time.sleep(ms / 1000)
    return 1
