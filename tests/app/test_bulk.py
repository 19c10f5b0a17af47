"""FastTransaction: redis-py's transaction pipeline with a faster send, and the same guarantees."""

from __future__ import annotations

import pytest
from redis import Redis
from redis.exceptions import ResponseError, WatchError

from app.bulk import FastTransaction


def test_writes_apply_together_and_replies_come_back_raw(redis: Redis) -> None:
    with FastTransaction.on(redis) as pipe:
        pipe.hset("h", mapping={"a": 1, "b": "two"})
        pipe.sadd("s", "x", "y")
        pipe.rpush("l", *range(1000))
        replies = pipe.execute()
    assert replies == [2, 2, 1000]
    assert redis.hgetall("h") == {b"a": b"1", b"b": b"two"}
    assert redis.llen("l") == 1000


def test_a_watched_key_changed_by_another_client_aborts_everything(redis: Redis) -> None:
    redis.set("parent", "queued")
    with FastTransaction.on(redis) as pipe:
        pipe.watch("parent")
        redis.set("parent", "failed")  # someone else, between the check and the write
        pipe.multi()
        pipe.set("child", "queued")
        with pytest.raises(WatchError):
            pipe.execute()
    assert redis.get("child") is None
    assert redis.ping()


def test_a_command_redis_refuses_to_queue_aborts_everything(redis: Redis) -> None:
    with FastTransaction.on(redis) as pipe:
        pipe.set("first", "1")
        pipe.execute_command("HSET", "h")  # wrong number of arguments: refused when queued
        with pytest.raises(ResponseError, match="wrong number"):
            pipe.execute()
    assert redis.get("first") is None
    assert redis.ping()  # the connection went back to the pool in step


def test_a_command_that_fails_when_run_is_named(redis: Redis) -> None:
    redis.set("text", "x")
    with FastTransaction.on(redis) as pipe:
        pipe.set("other", "1")
        pipe.sadd("text", "member")  # WRONGTYPE, found only when EXEC runs it
        with pytest.raises(ResponseError, match=r"command #2 \(SADD\)"):
            pipe.execute()
    assert redis.get("other") == b"1"  # Redis has no rollback; callers queue only valid writes
    assert redis.ping()


def test_scripts_are_loaded_before_exec(redis: Redis) -> None:
    script = redis.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    redis.script_flush()
    with FastTransaction.on(redis) as pipe:
        script(keys=["k"], args=["v"], client=pipe)
        pipe.set("after", "1")
        pipe.execute()
    assert redis.get("k") == b"v"
    assert redis.get("after") == b"1"
