"""Fixtures: one real redis-server for the session, flushed per test; the app; in-process workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.jobs.tasks import TaskService
from app.registry import Registry, load_registry
from app.settings import Settings
from tests.support import PROCESS_OUTPUT, RedisServer, tail
from workers.worker import TaskSimpleWorker

TEST_MODULES = ["tests.handlers"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start_new(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, with AOF as shipped: for tests that kill and restart it."""
    (tmp_path / "data").mkdir()
    server = RedisServer.start_new(tmp_path / "data", appendonly=True)
    yield server
    server.kill()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: RedisServer, redis: Redis, tmp_path: Path) -> Settings:
    """Settings for this test's processes; asking for them also flushes the session Redis."""
    return Settings(redis_url=redis_server.url, task_modules=TEST_MODULES, var_dir=tmp_path)


@pytest.fixture
def registry(settings: Settings) -> Registry:
    return load_registry(settings.task_modules, settings.type_limits)


@pytest.fixture
def service(redis: Redis, registry: Registry, settings: Settings) -> TaskService:
    return TaskService(redis, registry, result_ttl_s=settings.result_ttl_s, failed_ttl_s=settings.failed_ttl_s)


@pytest.fixture
def client(settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def work(redis: Redis, settings: Settings):  # type: ignore[no-untyped-def]
    """Run every queued task in this process (RQ's SimpleWorker in burst mode), then return."""

    def run(with_scheduler: bool = False) -> bool:
        worker = TaskSimpleWorker(["high", "default", "low"], connection=redis, settings=settings)
        return bool(worker.work(burst=True, with_scheduler=with_scheduler))

    return run


@pytest.fixture
def engine_work(redis: Redis, settings: Settings):  # type: ignore[no-untyped-def]
    """`work`, by the engine worker (the Procfile's) in this process."""
    from workers.engine import EngineWorker

    def run() -> bool:
        return bool(EngineWorker(["high", "default", "low"], connection=redis, settings=settings).work(burst=True))

    return run


class FakeClock:
    """A clock that moves only when a test says so (`advance`), starting at the real now."""

    def __init__(self) -> None:
        self.at = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_client(settings: Settings, redis: Redis, clock: FakeClock) -> Iterator[TestClient]:
    """The app with schedules on the test's clock."""
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def fire_due(redis: Redis, service: TaskService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """One pass of the real rq-scheduler loop with rqflow's timer classes, with the test's clock in
    place of the wall's: the timers due by `clock` fire, without waiting for time to pass."""
    from rq_scheduler import Scheduler
    from rq_scheduler.utils import to_unix

    from app.schedules import ScheduleService
    from scheduler import fire

    schedules = ScheduleService(redis, service, clock)
    monkeypatch.setattr(fire, "services", lambda: (service, schedules))

    class AtTheTestsClock(Scheduler):  # type: ignore[misc]
        def get_jobs_to_queue(self, with_times: bool = False) -> Any:
            return self.get_jobs(to_unix(clock().replace(tzinfo=None)), with_times=with_times)

    def run() -> None:
        AtTheTestsClock(
            connection=redis, interval=1, job_class=fire.TimerJob, queue_class=fire.FireQueue
        ).enqueue_jobs()

    return run


@pytest.fixture
def fire_timers(redis: Redis, service: TaskService, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """One pass of the real rq-scheduler loop with rqflow's timer classes, as `rqscheduler` runs it."""
    from rq_scheduler import Scheduler

    from app.schedules import ScheduleService
    from scheduler import fire

    monkeypatch.setattr(fire, "services", lambda: (service, ScheduleService(redis, service)))

    def run() -> None:
        Scheduler(connection=redis, interval=1, job_class=fire.TimerJob, queue_class=fire.FireQueue).enqueue_jobs()

    return run


@pytest.fixture(autouse=True)
def _process_output() -> Iterator[None]:
    """Each test starts with no process output recorded, and leaves none behind."""
    yield
    for path, fd in PROCESS_OUTPUT.items():
        os.close(fd)
        path.unlink(missing_ok=True)
    PROCESS_OUTPUT.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failing test shows the last lines each process it started wrote."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for path in PROCESS_OUTPUT:
            report.sections.append((f"output of {path.name}", tail(path)))
