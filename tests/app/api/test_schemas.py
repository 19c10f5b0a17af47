"""The JSON a task is shown as follows Task's declaration."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone

from app.api.schemas import task_json
from app.model import Backoff, Edge, Priority, Task, TaskStatus


def test_task_json_shows_every_field_task_declares() -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    values = {f.name: None for f in fields(Task)}
    task = Task(
        **{
            **values,
            "id": "a",
            "type": "t",
            "name": "t",
            "payload": {},
            "dependencies": (Edge("p"),),
            "priority": Priority.LOW,
            "max_attempts": 1,
            "backoff": Backoff(),
            "timeout_ms": 1,
            "status": TaskStatus.QUEUED,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
    )
    body = task_json(task, detailed=True)
    assert set(body) == {f.name for f in fields(Task)}
    assert body["created_at"] == "2030-01-01T00:00:00.000Z"
    assert body["priority"] == "low" and body["dependencies"] == ["p"]
