"""Submission under contention: one id is created once, whoever sends it and however often."""

from __future__ import annotations

import gc
import threading
import weakref
import zlib
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from redis import Redis

from app import keys
from app.errors import InvalidTask, SubmissionInProgress
from app.jobs import submission
from app.jobs.submission import Outcome, _Recorder, gc_paused
from app.jobs.tasks import TaskService
from app.model import Edge, TaskSpec
from tests.app.jobs.test_factory import SHAPES


def test_the_same_batch_sent_twice_at_once_is_created_exactly_once(service: TaskService, redis: Redis) -> None:
    specs = [TaskSpec(type="echo", id=f"t{n}", dependencies=(Edge(f"t{n - 1}"),) if n else ()) for n in range(2000)]
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        try:
            _, created = service.submit_batch(specs)
            outcomes.append("created" if created else "repeat")
        except SubmissionInProgress:
            outcomes.append("in progress")

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) in (["created", "in progress"], ["created", "repeat"])
    assert redis.zcard(keys.TASK_INDEX) == 2000
    assert redis.llen("rq:queue:default") == 1  # t0; the others wait on their parent
    assert redis.zcard(keys.CLAIMS) == 0
    _, created = service.submit_batch(specs)  # and once the first is written, a repeat is a repeat
    assert not created


def test_a_claim_cut_off_by_a_crash_holds_its_ids_only_until_it_lapses(service: TaskService, redis: Redis) -> None:
    redis.zadd(keys.CLAIMS, {"x": 2**50})  # an API process died after claiming "x"
    with pytest.raises(SubmissionInProgress):
        service.submit(TaskSpec(type="echo", id="x"))
    redis.zadd(keys.CLAIMS, {"x": 1})  # ... and its claim has lapsed
    task, created = service.submit(TaskSpec(type="echo", id="x"))
    assert created and task.status.value == "QUEUED"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"priority": "high"},
        {"run_at": "2099-01-01T00:00:00+00:00"},
        {"max_attempts": 5, "timeout_ms": 2000},
        # Large enough to be stored compressed: binary bytes, colons and all, through the script.
        {"payload": {"blob": ":".join(str(n * 7919 % 10007) for n in range(3000)), "ü": "✓"}},
    ],
)
def test_a_task_alone_is_stored_as_the_same_task_in_a_batch(
    service: TaskService, redis: Redis, extra: dict[str, object]
) -> None:
    """One task takes its own round trip (one script); in a batch it goes through the transaction.
    Whatever the path, Redis must hold the same thing."""
    from app.api.schemas import TaskIn

    def spec(task_id: str) -> TaskSpec:
        return TaskIn.model_validate({"id": task_id, "type": "echo", **extra}).to_spec()

    service.submit(spec("alone"))
    service.submit_batch([spec("batched"), spec("other")])

    def shape(task_id: str) -> dict[str, object]:
        found: dict[str, object] = {}
        for raw in redis.scan_iter(match=f"*{task_id}*"):
            name = raw.decode().replace(task_id, "<id>")
            kind = redis.type(raw).decode()
            if kind == "hash":
                found[name] = sorted(k.decode() for k in redis.hkeys(raw))
            elif kind == "stream":
                found[name] = [e[1].get(b"event") for e in redis.xrange(raw)]
            else:
                found[name] = kind
        for index in redis.scan_iter():
            kind = redis.type(index).decode()
            member = lambda m: task_id in m.decode()  # noqa: E731
            if kind == "zset" and any(member(m) for m in redis.zrange(index, 0, -1)):
                found[f"in {index.decode()}"] = True
            if kind == "list" and any(member(m) for m in redis.lrange(index, 0, -1)):
                found[f"in {index.decode()}"] = True
        return found

    def data(task_id: str) -> bytes:
        raw = redis.hget(f"rq:job:{task_id}", "data") or b""
        try:
            return zlib.decompress(raw)  # RQ's own writes compress it; rqflow's only when large
        except zlib.error:
            return raw

    assert data("alone") == data("batched")
    alone = shape("alone")
    assert len(alone) >= 4, alone  # the job, its history, the indexes, a queue or a timer
    assert alone == shape("batched")
    assert redis.zcard(keys.CLAIMS) == 0


def test_what_meanwhile_sees_is_the_answer_and_a_repeat_does_not_call_it(service: TaskService) -> None:
    specs = [TaskSpec(type="echo", id=f"m{n}", dependencies=(Edge(f"m{n - 1}"),) if n else ()) for n in range(50)]
    seen: list[Outcome] = []
    tasks, created = service.submit_batch(specs, meanwhile=seen.append)
    assert created and len(seen) == 1 and seen[0].tasks() == tasks and seen[0].created
    assert [t.id for t in tasks] == [f"m{n}" for n in range(50)]
    _, created = service.submit_batch(specs, meanwhile=seen.append)
    assert not created and len(seen) == 1  # the answer of a repeat is read after, not during a write


@pytest.mark.parametrize("name", ["plain", "options"])  # the shapes a single task queued at once can have
def test_a_single_task_queued_at_once_is_written_as_a_batch_of_one_would_be(service: TaskService, name: str) -> None:
    """The single path writes its commands out directly; they are the general path's, word for word."""
    spec = replace(SHAPES[name], id=name)
    submission = service.submission
    p = submission._plan([spec], batch=False, actor="ci")[0][0]
    created_at = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    direct, placed = submission._queued_one(p, created_at)
    recorder = _Recorder(submission.connection)
    assert submission._write_all([p], {}, recorder, dry_run=False, created_at=created_at) == placed
    assert direct == [args for args, _ in recorder.command_stack]


def test_overlapping_batches_keep_the_collector_off_no_longer_than_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    class Node:
        other: Node

    with gc_paused():
        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle: only the collector frees it
        gone = weakref.ref(first)
        del first, second
        with gc_paused():  # a second batch, while the first still runs
            assert gone() is not None
        monkeypatch.setattr(submission, "GC_REST_MAX_S", 0.0)
        with gc_paused():  # one that starts past the bound
            assert gone() is None
    assert gc.isenabled()


@pytest.mark.parametrize("forward", [False, True], ids=["parents first", "a child before its parent"])
def test_a_batch_is_queued_in_the_order_it_was_sent(service: TaskService, redis: Redis, forward: bool) -> None:
    """Workers take a batch's ready tasks first sent, first run, whether or not the batch lists
    every parent before its children."""
    specs = [TaskSpec(type="echo", id=f"t{n}") for n in range(6)]
    child = TaskSpec(type="echo", id="child", dependencies=(Edge("t2"),))
    specs.insert(1 if forward else 4, child)
    service.submit_batch(specs)
    assert redis.lrange("rq:queue:default", 0, -1) == [f"t{n}".encode() for n in range(6)]
    assert redis.smembers("rq:job:t2:dependents") == {b"child"}


@pytest.mark.parametrize("outside", [False, True], ids=["claims sent ahead of the writes", "claims before the reads"])
def test_a_batch_meeting_a_claim_stores_nothing_and_leaves_the_claim(
    service: TaskService, redis: Redis, outside: bool
) -> None:
    service.submit(TaskSpec(type="echo", id="root"))
    specs = [
        TaskSpec(type="echo", id="a", dependencies=(Edge("root"),) if outside else ()),
        TaskSpec(type="echo", id="held"),
    ]
    redis.zadd(keys.CLAIMS, {"held": 2**50})  # another submission of "held" is being written
    with pytest.raises(SubmissionInProgress):
        service.submit_batch(specs)
    assert redis.exists("rq:job:a", "rq:job:held") == 0
    assert redis.zrange(keys.CLAIMS, 0, -1) == [b"held"]
    redis.zadd(keys.CLAIMS, {"held": 1})  # ... and its writer died long ago
    assert service.submit_batch(specs)[1] is True
    assert service.submit_batch(specs)[1] is False  # a repeat
    queued = redis.lrange("rq:queue:default", 0, -1)
    assert queued == ([b"root", b"held"] if outside else [b"root", b"a", b"held"])
    assert redis.zcard(keys.CLAIMS) == 0


@pytest.mark.parametrize(
    "edges",
    [{"a": "a"}, {"a": "b", "b": "a"}],
    ids=["a task on itself", "two on each other"],
)
def test_a_cycle_is_refused_however_the_batch_is_ordered(
    service: TaskService, redis: Redis, edges: dict[str, str]
) -> None:
    """The API's schema refuses a task that depends on itself; the service names it as a cycle too."""
    specs = [TaskSpec(type="echo", id=task_id, dependencies=(Edge(parent),)) for task_id, parent in edges.items()]
    with pytest.raises(InvalidTask, match="cycle"):
        service.submit_batch([TaskSpec(type="echo", id="first"), *specs])
    assert redis.dbsize() == 0


def test_a_batch_that_fails_after_its_claims_went_out_releases_them_at_once(
    service: TaskService, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claims go out ahead of the writes, with the first of them; a failure while the rest are
    made must not leave them to lapse (a retry would be told "in progress" meanwhile)."""
    specs = [TaskSpec(type="echo", id=f"t{n}", dependencies=(Edge(f"t{n - 1}"),) if n else ()) for n in range(2000)]
    real_add = submission.JobWriter.add
    calls = 0

    def failing_add(self: submission.JobWriter, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1500:  # past the first streamed commands, and so the claims
            raise RuntimeError("a failure while the writes are made")
        real_add(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(submission.JobWriter, "add", failing_add)
    with pytest.raises(RuntimeError):
        service.submit_batch(specs)
    assert redis.zcard(keys.CLAIMS) == 0 and redis.dbsize() == 0
    monkeypatch.setattr(submission.JobWriter, "add", real_add)
    assert service.submit_batch(specs)[1] is True
