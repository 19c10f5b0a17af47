"""The job hashes a batch writes from per-shape templates are the ones RQ itself would write."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import fakeredis
import pytest
from rq.job import JobStatus

from app import keys
from app.jobs import factory as factory_module
from app.jobs import store
from app.jobs.factory import READ_ALIKE_ABSENT, Factory, Planned, Shapes
from app.jobs.job import TaskJob
from app.model import Backoff, Edge, Priority, TaskSpec
from app.registry import load_registry

JSON_FIELDS = ("dependency_ids", keys.FIELD_SPEC)

SHAPES = {
    "plain": TaskSpec(type="echo", payload={"text": "grüße ✓", "n": [1, 2.5, None]}, duration_ms=5),
    "dependent": TaskSpec(type="echo", dependencies=(Edge("p1"), Edge("p2", allow_failure=True))),
    "failure-tolerant": TaskSpec(type="echo", dependencies=(Edge("p1", allow_failure=True),)),
    "options": TaskSpec(
        type="echo",
        priority=Priority.HIGH,
        max_attempts=1,
        timeout_ms=1500,
        backoff=Backoff(initial_ms=10, factor=3, max_ms=100, jitter=False),
        name="nightly",
        schedule_id="every-minute",
        payload={"big": 2**70, "long": "x" * 1000},  # compressed, as RQ does
    ),
    # A name that is the marker Shapes.spec_json splices the dependencies in at.
    "marker-named": TaskSpec(type="echo", name=factory_module._SPLICE, dependencies=(Edge("p1"),)),
}


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    out = {k: str(v) if not isinstance(v, bytes) else v for k, v in fields.items()}
    data = fields["data"]
    out["data"] = json.loads(data if data.startswith(b"[") else zlib.decompress(data))
    for name in JSON_FIELDS:
        if name in fields:
            out[name] = json.loads(fields[name])
    return out


def test_rq_reads_small_job_data_stored_uncompressed() -> None:
    registry = load_registry(["tests.handlers"])
    connection = fakeredis.FakeRedis()
    factory = Factory(store.queues(connection), result_ttl_s=600)
    shapes = Shapes(factory, datetime.now(timezone.utc))
    for task_id in ("a", "b"):  # the first is RQ's own job; the second comes from the template
        spec = TaskSpec(type="echo", id=task_id, payload={"text": "grüße"})
        planned = Planned(0, task_id, spec, registry.get_type("echo"), spec.fingerprint())
        connection.hset(f"rq:job:{task_id}", mapping=dict(_pairs(_fields(shapes, planned, JobStatus.QUEUED))))
    job = TaskJob.fetch("b", connection=connection)
    assert connection.hget("rq:job:b", "data").startswith(b"[")
    assert (job.func_name, job.args, job.kwargs) == (
        keys.ENTRY_POINT,
        [],
        {"task_type": "echo", "payload": {"text": "grüße"}},
    )


def _fields(shapes: Shapes, planned: Planned, status: JobStatus) -> list[Any]:
    template, own = shapes.parts(planned, status)
    return [*template, *own]


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


@pytest.mark.parametrize("status", [JobStatus.DEFERRED, JobStatus.QUEUED])
@pytest.mark.parametrize("name", list(SHAPES))
def test_template_fields_equal_rqs_own(name: str, status: JobStatus) -> None:
    registry = load_registry(["tests.handlers"])
    factory = Factory(store.queues(fakeredis.FakeRedis()), result_ttl_s=600)
    created_at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    shapes = Shapes(factory, created_at)
    spec = SHAPES[name]

    def planned(index: int, task_id: str, **changes: Any) -> Planned:
        s = replace(spec, id=task_id, **changes)
        return Planned(index, task_id, s, registry.get_type(s.type), s.fingerprint())

    first = planned(0, "first")
    other_parents = tuple(replace(e, parent=f"{e.parent}-b") for e in spec.dependencies)
    second = planned(1, "second", payload={"other": True}, dependencies=other_parents)
    assert first.shape() == second.shape()
    _fields(shapes, first, status)  # builds the template with RQ
    flat = _fields(shapes, second, status)
    from_template = dict(_pairs(flat))

    job = factory.build(second, created_at, status)
    job._status = status
    if status == JobStatus.QUEUED:
        job.enqueued_at = created_at
    from_rq = {k: v for k, v in job.to_dict().items() if v != ""}
    for name, value in READ_ALIKE_ABSENT.items():
        if str(from_rq.get(name)) == value:
            del from_rq[name]
    if spec.dependencies:
        assert from_rq.pop("dependency_id") == other_parents[0].parent
    assert _normalized(from_template) == _normalized(from_rq)


def test_rq_reads_the_fields_left_out_as_it_reads_them_written() -> None:
    """What RQ does with a job's dependencies, failure rule, queue end and retry wait is the same
    whether the fields it writes for them are there or, as a batch leaves them, not."""
    registry = load_registry(["tests.handlers"])
    connection = fakeredis.FakeRedis()
    factory = Factory(store.queues(connection), result_ttl_s=600)
    shapes = Shapes(factory, datetime.now(timezone.utc))
    spec = TaskSpec(type="echo", id="b", max_attempts=3, dependencies=(Edge("a"),))
    planned = Planned(0, "b", spec, registry.get_type("echo"), spec.fingerprint())
    connection.hset("rq:job:b", mapping=dict(_pairs(_fields(shapes, planned, JobStatus.DEFERRED))))
    written = factory.build(planned, shapes.created_at, JobStatus.DEFERRED)
    assert set(READ_ALIKE_ABSENT) <= written.to_dict().keys()  # RQ itself writes them all
    read = TaskJob.fetch("b", connection=connection)
    # RQ's own reading of the parents a hash names (`dependency_ids` reads the set instead).
    assert read._dependency_ids == written._dependency_ids == ["a"]
    assert read._dependency_id == written._dependency_id == "a"  # what `dependency_id` held
    assert not read.allow_dependency_failures and not written.allow_dependency_failures
    assert not read.should_enqueue_at_front() and not written.should_enqueue_at_front()
    assert read.retries_left == written.retries_left == 2
    assert read.get_retry_interval() == written.get_retry_interval() == 0
