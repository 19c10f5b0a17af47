"""/health's and /api/stats' view of Redis's memory: use against maxmemory, and the forecast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app import keys
from app.jobs import stats


@pytest.fixture
def limit(redis: Redis) -> Iterator[None]:
    before = redis.config_get("maxmemory")["maxmemory"]
    yield
    redis.config_set("maxmemory", before)


def test_memory_is_reported_with_the_tasks_stored_and_no_forecast_before_a_minute_of_readings(
    client: TestClient, redis: Redis
) -> None:
    client.post("/api/tasks/batch", json={"tasks": [{"type": "echo"} for _ in range(5)]})
    stats.sample_memory(redis)
    report = client.get("/api/stats").json()["memory"]
    assert report["tasks_stored"] == 5
    assert report["used_bytes"] > 0 and report["maxmemory_bytes"] == 2 * 1024**3  # deploy/redis.conf
    assert report["growth_bytes_per_s"] is None and report["full_in_s"] is None
    assert report["warnings"] == []


def test_the_growth_of_the_last_minutes_says_when_redis_is_full_and_health_warns(
    client: TestClient, redis: Redis, limit: None
) -> None:
    used = int(redis.info("memory")["used_memory"])
    redis.config_set("maxmemory", used + 3_600_000)  # well under 80% used...
    now = time.time()
    # ...but growing by 1 KB/s over the last five minutes (and a reading too old to count).
    readings = [(now - 3000, 0), (now - 300, used - 300_000), (now - 150, used - 150_000), (now, used)]
    redis.rpush(keys.MEMORY_SAMPLES, *(f"{at:.3f}:{size}" for at, size in reversed(readings)))
    report = stats.memory(redis)
    assert report["growth_bytes_per_s"] == pytest.approx(1000, rel=0.05)
    assert report["full_in_s"] == pytest.approx(3600, rel=0.2)
    warnings = client.get("/health").json()["redis"]["warnings"]
    assert any("reaches its maxmemory in 1.0 h" in w for w in warnings), warnings


def test_health_warns_near_maxmemory(client: TestClient, redis: Redis, limit: None) -> None:
    redis.config_set("maxmemory", int(int(redis.info("memory")["used_memory"]) / 0.9))
    warnings = client.get("/health").json()["redis"]["warnings"]
    assert any("of its maxmemory" in w for w in warnings), warnings
