"""The one function every rqflow job names. It dispatches to the registered handler of the task's type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rq import get_current_job

from app.jobs.job import TaskJob
from app.registry import Registry, TaskContext
from app.settings import Settings

_runtime: tuple[Registry, dict[str, Mapping[str, Any]]] | None = None
"""The registry, and for each type the settings its handler may see (worked out once, not per run)."""


def install(registry: Registry, settings: Settings) -> None:
    """Called once by the worker at start-up, before any job runs."""
    global _runtime
    _runtime = (registry, {t.name: t.settings_for_handler(settings) for t in registry.values()})


def run_task(task_type: str, payload: dict[str, Any], duration_ms: int | None = None) -> Any:
    """What RQ's workers call (the job's function): the handler of the current job's type."""
    job = get_current_job()
    if not isinstance(job, TaskJob):
        raise RuntimeError("run_task must run inside an rqflow TaskJob")
    return call(job.id, task_type, payload, duration_ms, job.attempts, job.spec.get("max_attempts") or 1)


def call(
    task_id: str,
    task_type: str,
    payload: dict[str, Any],
    duration_ms: int | None,
    attempt: int,
    max_attempts: int | None,
) -> Any:
    """Run the registered handler of `task_type` (what the engine's children call directly)."""
    if _runtime is None:
        raise RuntimeError("no task registry loaded: run workers with `-w workers.worker.TaskWorker`")
    registry, handler_settings = _runtime
    handler_type = registry.get_type(task_type)
    context = TaskContext(
        task_id=task_id,
        type=task_type,
        attempt=attempt,
        max_attempts=int(max_attempts or handler_type.max_attempts),
        duration_ms=duration_ms,
        settings=handler_settings[task_type],
    )
    return handler_type.handler(payload, context)
