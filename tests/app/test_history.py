"""A task's history in its job hash: appended by one Lua function, capped, read back line by line."""

from __future__ import annotations

from redis import Redis

from app import history, keys
from app.defaults import MAX_EVENTS
from app.history import EventName


def test_events_come_back_in_order_with_their_fields_and_only_the_newest_are_kept(redis: Redis) -> None:
    redis.hset("rq:job:h", "status", "started")
    history.record(redis, "rq:job:h", EventName.STARTED, attempt=1, worker="w1")
    history.record(redis, "rq:job:h", EventName.RETRYING, attempt=1, error={"type": "E", "message": "a\nb"})
    events = history.decode(redis.hget("rq:job:h", keys.FIELD_HISTORY))
    assert [(e.event, e.attempt, e.worker, e.error) for e in events] == [
        ("started", 1, "w1", None),
        ("retrying", 1, None, {"type": "E", "message": "a\nb"}),  # a newline in a message stays inside its line
    ]
    for n in range(MAX_EVENTS + 5):
        history.record(redis, "rq:job:h", EventName.QUEUED, detail=str(n))
    kept = history.decode(redis.hget("rq:job:h", keys.FIELD_HISTORY))
    assert len(kept) == MAX_EVENTS
    assert [e.detail for e in kept] == [str(n) for n in range(5, MAX_EVENTS + 5)]


def test_no_record_is_made_for_a_history_alone(redis: Redis) -> None:
    history.record(redis, "rq:job:gone", EventName.QUEUED)
    assert not redis.exists("rq:job:gone")


def test_a_line_that_does_not_decode_is_left_out_and_the_rest_are_read() -> None:
    kept = b'[1796000000000,"started",1,"w"]\nnot json\n[1796000000001,"completed",1,"w"]'
    assert [e.event for e in history.decode(kept)] == ["started", "completed"]
