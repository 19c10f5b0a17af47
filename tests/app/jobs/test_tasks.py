"""TaskService logic that needs no real Redis: the list index and its cursor (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from app import keys
from app.errors import InvalidInput, TaskNotFound
from app.jobs.tasks import TaskService
from app.model import TaskSpec
from app.registry import load_registry


@pytest.fixture
def fake_service() -> TaskService:
    return TaskService(fakeredis.FakeRedis(), load_registry(["tests.handlers"]), result_ttl_s=60)


def test_expired_jobs_leave_the_index_when_listed(fake_service: TaskService) -> None:
    for n in range(3):
        fake_service.submit(TaskSpec(type="echo", id=f"t{n}"))
    fake_service.connection.delete("rq:job:t1")  # as RQ's result TTL would
    page = fake_service.reads.list_tasks(limit=10)
    assert [t.id for t in page.tasks] == ["t2", "t0"]
    assert page.next_cursor is None
    assert fake_service.connection.zcard(keys.TASK_INDEX) == 2
    with pytest.raises(TaskNotFound):
        fake_service.reads.get("t1")


def test_a_cursor_resumes_exactly_after_the_last_task(fake_service: TaskService) -> None:
    for n in range(7):
        fake_service.submit(TaskSpec(type="echo", id=f"t{n}"))
    first = fake_service.reads.list_tasks(limit=3)
    assert [t.id for t in first.tasks] == ["t6", "t5", "t4"]
    second = fake_service.reads.list_tasks(limit=3, cursor=first.next_cursor)
    assert [t.id for t in second.tasks] == ["t3", "t2", "t1"]
    third = fake_service.reads.list_tasks(limit=3, cursor=second.next_cursor)
    assert [t.id for t in third.tasks] == ["t0"]
    assert third.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "!!", "bm90LWEtbWVtYmVy"])
def test_a_forged_cursor_is_invalid_input(fake_service: TaskService, cursor: str) -> None:
    with pytest.raises(InvalidInput):
        fake_service.reads.list_tasks(cursor=cursor or "x")
