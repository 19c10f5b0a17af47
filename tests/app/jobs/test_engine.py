"""The engine script's own clock: Redis's TIME, written in RQ's format."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from redis import Redis
from rq.utils import utcformat

from app.jobs import engine
from tests.support import RedisServer

UTC_FUNCTION = engine._ENGINE[engine._ENGINE.index("-- RQ's time format") : engine._ENGINE.index("-- The time of")]


@pytest.mark.parametrize(
    "stamp",
    [0, 951_782_400, 951_868_799.5, 1_709_164_800.123456, 4_102_444_799.999999, 1_795_000_000.000001, 1_800_000_000],
)
def test_the_script_writes_times_exactly_as_rq_does(redis: Redis, stamp: float) -> None:
    """Leap days, the last microsecond of a century's year, the epoch."""
    seconds = int(stamp)
    micros = round((stamp - seconds) * 1_000_000)
    written = redis.eval(UTC_FUNCTION + "return utc(tonumber(ARGV[1]), tonumber(ARGV[2]))", 0, seconds, micros)
    expected = utcformat(datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=micros))
    assert written.decode() == expected


def test_a_step_after_redis_restarted_goes_through(aof_redis: RedisServer) -> None:
    """The step's connection was closed by the restart and Redis forgot the script: neither may
    fail the step (a failed step drops the ends it carried and costs the worker its children)."""
    redis = aof_redis.client()
    step = engine.Engine(redis, ["default"], "w1", lease_s=60, result_ttl_s=600)
    assert step.step([], 1) == []
    aof_redis.kill()
    aof_redis.start()
    assert step.step([], 1) == []
    assert redis.ping()
