"""Recurring tasks: /api/schedules, fired through the real rq-scheduler loop with rqflow's timers."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timezone
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app import keys
from app.api.main import create_app
from app.clock import iso
from app.settings import Settings
from tests.app.api.test_tasks import assert_problem
from tests.support import wait_until


def create(client: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/api/schedules", json=body)
    assert response.status_code == status, response.text
    return dict(response.json())


def runs(client: TestClient, schedule_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/api/tasks?schedule_id={schedule_id}").json())


def test_an_interval_schedule_runs_max_runs_times(
    clocked_client: TestClient, clock: Any, fire_due: Any, work: Any
) -> None:
    client = clocked_client
    schedule = create(
        client, {"id": "tick", "interval_s": 1, "max_runs": 3, "task": {"type": "echo", "payload": {"from": "tick"}}}
    )
    assert schedule["next_run_at"] is not None and schedule["runs"] == 0
    for expected in (1, 2, 3, 3):  # the fourth second makes no run: max_runs is 3
        clock.advance(1)
        fire_due()
        assert len(runs(client, "tick")) == expected
    made = runs(client, "tick")
    assert all(t["id"].startswith("tick-") and t["schedule_id"] == "tick" for t in made)
    assert len({t["id"] for t in made}) == 3
    after = client.get("/api/schedules/tick").json()
    assert (after["runs"], after["next_run_at"]) == (3, None)
    assert after["last_run_at"] is not None
    work()
    assert {t["status"] for t in runs(client, "tick")} == {"COMPLETED"}
    assert {t["result"]["payload"]["from"] for t in runs(client, "tick")} == {"tick"}


def test_a_damaged_schedule_drops_its_timer_and_the_others_fire(
    clocked_client: TestClient, clock: Any, fire_due: Any, redis: Redis
) -> None:
    client = clocked_client
    for schedule_id in ("good", "bad"):
        create(client, {"id": schedule_id, "interval_s": 1, "max_runs": 1, "task": {"type": "echo"}})
    spec = redis.hget("rqflow:schedule:bad", "spec")
    redis.hset("rqflow:schedule:bad", "spec", spec.replace(b'"payload":{}', b'"payload":{"x":NaN}'))
    clock.advance(1)
    fire_due()  # rq-scheduler's pass does not stop at the damaged one (it would fire it forever)
    assert len(runs(client, "good")) == 1
    assert not [t for t in redis.zrange(keys.TIMERS, 0, -1) if b"schedule-bad" in t]


def test_a_run_never_starts_before_its_fire_time(client: TestClient, fire_timers: Any) -> None:
    create(client, {"id": "exact", "interval_s": 1, "max_runs": 1, "task": {"type": "echo"}})
    due = client.get("/api/schedules/exact").json()["next_run_at"]
    wait_until(lambda: fire_timers() or runs(client, "exact"), timeout=10, interval=0.01, what="the run")
    created = runs(client, "exact")[0]["created_at"]
    assert created >= due


def test_missed_fires_run_once_on_return(clocked_client: TestClient, clock: Any, fire_due: Any) -> None:
    client = clocked_client
    first_due = create(client, {"id": "missed", "interval_s": 1, "task": {"type": "echo"}})["next_run_at"]
    clock.advance(3.5)  # no scheduler runs: fires at +1 s, +2 s and +3 s are missed
    returned = iso(clock())
    fire_due()
    made = runs(client, "missed")
    assert len(made) == 1  # the overdue fire runs once...
    schedule = client.get("/api/schedules/missed").json()
    assert schedule["runs"] == 1
    assert schedule["last_run_at"] == first_due
    assert schedule["next_run_at"] > returned  # ...and the next is the first one after the return


def test_pause_resume_and_delete(clocked_client: TestClient, clock: Any, fire_due: Any) -> None:
    client = clocked_client
    create(client, {"id": "p", "interval_s": 1, "task": {"type": "echo"}})
    body = {"interval_s": 1, "task": {"type": "echo"}, "paused": True}
    paused = client.put("/api/schedules/p", json=body).json()
    assert (paused["paused"], paused["next_run_at"]) == (True, None)
    clock.advance(1.3)
    fire_due()
    assert runs(client, "p") == []
    resumed = client.put("/api/schedules/p", json={**body, "paused": False}).json()
    assert resumed["next_run_at"] is not None
    clock.advance(1)
    fire_due()
    assert len(runs(client, "p")) == 1
    assert client.delete("/api/schedules/p").status_code == 204
    assert_problem(client.get("/api/schedules/p"), 404)
    kept = runs(client, "p")
    clock.advance(1.3)
    fire_due()
    assert runs(client, "p") == kept  # runs made stay; no new ones


def test_cron_schedule_shows_its_next_run_in_its_zone_across_the_spring_jump(settings: Settings) -> None:
    # The evening before Berlin's clocks jump from 02:00 to 03:00 (2026-03-29): 02:30 does not
    # exist that night, so the nightly run fires at 03:30 CEST, then at 02:30 CEST again.
    before_the_jump = datetime(2026, 3, 28, 18, 0, tzinfo=timezone.utc)
    with TestClient(create_app(settings, clock=lambda: before_the_jump)) as client:
        body = {"id": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "task": {"type": "echo"}}
        schedule = create(client, body)
        assert schedule["next_run_at"] == "2026-03-29T01:30:00.000Z"
        assert client.get("/api/schedules").json()[0]["id"] == "nightly"
    the_night_after = datetime(2026, 3, 29, 12, 0, tzinfo=timezone.utc)
    with TestClient(create_app(settings, clock=lambda: the_night_after)) as client:
        replaced = client.put("/api/schedules/nightly", json=body)
        assert replaced.json()["next_run_at"] == "2026-03-30T00:30:00.000Z"


def test_create_is_idempotent_by_id(client: TestClient) -> None:
    body = {"id": "same", "interval_s": 60, "task": {"type": "echo"}}
    assert client.post("/api/schedules", json=body).status_code == 201
    assert client.post("/api/schedules", json=body).status_code == 200
    assert_problem(client.post("/api/schedules", json={**body, "interval_s": 30}), 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *", "task": {"type": "echo"}}, "cron"),
        ({"cron": "* * * *", "task": {"type": "echo"}}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Base", "task": {"type": "echo"}}, "timezone"),
        ({"cron": "* * * * *", "interval_s": 5, "task": {"type": "echo"}}, "interval_s"),
        ({"task": {"type": "echo"}}, "interval_s"),
        ({"interval_s": 0, "task": {"type": "echo"}}, "interval_s"),
        ({"interval_s": 5, "timezone": "Europe/Berlin", "task": {"type": "echo"}}, "timezone"),
        ({"interval_s": 5, "task": {"type": "nope"}}, "task.type"),
        ({"interval_s": 5, "task": {"type": "echo", "dependencies": ["x"]}}, "task.dependencies"),
        ({"interval_s": 5, "task": {"type": "echo"}, "start_at": "2030-01-01T00:00:00"}, "start_at"),
        (
            {
                "interval_s": 5,
                "task": {"type": "echo"},
                "start_at": "2030-01-02T00:00:00Z",
                "end_at": "2030-01-01T00:00:00Z",
            },
            "end_at",
        ),
        ({"interval_s": 5, "task": {"type": "echo"}, "max_runs": 0}, "max_runs"),
        ({"id": "bad id", "interval_s": 5, "task": {"type": "echo"}}, "id"),
    ],
)
def test_bad_schedules_are_422_naming_the_field(client: TestClient, redis: Redis, body: Any, field: str) -> None:
    assert_problem(client.post("/api/schedules", json=body), 422, field)
    assert redis.keys("rqflow:schedule*") == []
    assert redis.zcard("rq:scheduler:scheduled_jobs") == 0


def test_unknown_schedule_is_404(client: TestClient) -> None:
    assert_problem(client.get("/api/schedules/ghost"), 404)
    assert_problem(client.delete("/api/schedules/ghost"), 404)
    assert_problem(client.put("/api/schedules/ghost", json={"interval_s": 5, "task": {"type": "echo"}}), 404)


def test_everything_in_redis_is_json_never_pickle(
    clocked_client: TestClient, clock: Any, redis: Redis, fire_due: Any, work: Any
) -> None:
    client = clocked_client
    create(client, {"id": "j", "interval_s": 1, "max_runs": 1, "task": {"type": "echo"}})
    client.post("/api/tasks", json={"id": "later", "type": "echo", "delay_ms": 60_000})
    client.post("/api/tasks", json={"id": "now", "type": "echo"})
    clock.advance(1)
    fire_due()
    assert len(runs(client, "j")) == 1
    work()
    job_keys = [k for k in redis.keys("rq:job:*") if redis.type(k) == b"hash"]
    assert len(job_keys) >= 4  # the run, two tasks, the pending timer
    for key in job_keys:
        for field in (b"data", b"meta"):
            raw = redis.hget(key, field)
            if raw:
                text = zlib.decompress(raw) if field == b"data" else raw
                json.loads(text)
                assert not text.startswith(b"\x80"), f"{key!r} {field!r} is pickled"
