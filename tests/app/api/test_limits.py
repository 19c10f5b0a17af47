"""RQFLOW_RATE_LIMIT: GCRA in Redis, per key or per address, batches counted by their tasks,
shared by every API process, /health never limited."""

from __future__ import annotations

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.jobs.ratelimit import Rate
from app.settings import Settings
from tests.app.api.test_tasks import assert_problem


def test_rates_read_as_counts_per_period() -> None:
    assert Rate.parse("100/s") == Rate(100, 1)
    assert Rate.parse("6000/min") == Rate(6000, 60)
    assert Rate.parse(" 50000 / h ") == Rate(50000, 3600)
    assert Rate.parse("10/5min") == Rate(10, 300)
    for wrong in ("100", "0/s", "100/fortnight", "many/s"):
        with pytest.raises(ValueError, match="100/s"):
            Rate.parse(wrong)


def test_over_the_limit_is_a_429_with_the_ratelimit_headers_and_every_process_counts_the_same(
    settings: Settings, redis: Redis
) -> None:
    limited = settings.model_copy(update={"rate_limit": "3/min"})
    with TestClient(create_app(limited)) as one, TestClient(create_app(limited)) as other:
        answers = [one.get("/api/tasks"), other.get("/api/tasks"), one.post("/api/tasks", json={"type": "echo"})]
        assert [a.status_code for a in answers] == [200, 200, 201]
        assert answers[0].headers["ratelimit-policy"] == '"rqflow";q=3;w=60'
        assert [a.headers["ratelimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0"]
        refused = other.post("/api/tasks", json={"id": "late", "type": "echo"})
        assert_problem(refused, 429)
        assert 15 <= int(refused.headers["retry-after"]) <= 21  # a third of the minute
        assert refused.headers["ratelimit"].startswith('"rqflow";r=0;')
        assert one.get("/health").status_code == 200  # never limited
        assert redis.exists("rq:job:late") == 0  # the refused one stored nothing


def test_each_key_has_its_own_allowance_and_a_batch_counts_its_tasks(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit": "5/min", "api_keys": ["a:write:sa", "b:write:sb"]})
    a, b = {"Authorization": "Bearer sa"}, {"Authorization": "Bearer sb"}
    with TestClient(create_app(limited)) as client:
        three = {"tasks": [{"type": "echo"} for _ in range(3)]}
        assert client.post("/api/tasks/batch", json=three, headers=a).status_code == 201
        refused = client.post(
            "/api/tasks/batch", json={"tasks": [{"id": f"x{n}", "type": "echo"} for n in range(3)]}, headers=a
        )
        assert_problem(refused, 429)
        assert client.get("/api/tasks/x0", headers=b).status_code == 404  # b's own allowance, and nothing stored
        assert client.post("/api/tasks/batch", json=three, headers=b).status_code == 201
        too_big = client.post("/api/tasks/batch", json={"tasks": [{"type": "echo"} for _ in range(6)]}, headers=b)
        assert_problem(too_big, 429)
        assert "smaller batches" in too_big.json()["detail"]
        dry = client.post("/api/tasks/batch?dry_run=true", json={"tasks": [{"type": "echo"}] * 6}, headers=a)
        assert dry.status_code == 200  # a dry run stores nothing and spends nothing
