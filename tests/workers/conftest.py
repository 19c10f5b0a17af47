"""Every test here that runs tasks runs them on each worker class: RQ's loop (TaskSimpleWorker in
this process, TaskWorker as `rq worker`) and rqflow's engine (EngineWorker, both ways)."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from app.settings import Settings
from workers.engine import EngineWorker
from workers.worker import TaskSimpleWorker

WORKER_CLASSES = {"rq": "workers.worker.TaskWorker", "engine": "workers.engine.EngineWorker"}
"""What `rq worker -w` is given, by kind."""

IN_PROCESS: dict[str, Any] = {"rq": TaskSimpleWorker, "engine": EngineWorker}


@pytest.fixture(params=sorted(WORKER_CLASSES))
def worker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def worker_class(worker_kind: str) -> str:
    return WORKER_CLASSES[worker_kind]


@pytest.fixture
def worker_type(worker_kind: str) -> Any:
    """The worker class of this test's kind, to run in this process."""
    return IN_PROCESS[worker_kind]


@pytest.fixture
def work(redis: Redis, settings: Settings, worker_type: Any):  # type: ignore[no-untyped-def]
    """Run every queued task (burst mode) on this test's worker class, then return."""
    worker_settings = settings.model_copy(update={"concurrency": 2})

    def run(with_scheduler: bool = False) -> bool:
        worker = worker_type(["high", "default", "low"], connection=redis, settings=worker_settings)
        return bool(worker.work(burst=True, with_scheduler=with_scheduler))

    return run
