"""FastTransaction: redis-py's transaction pipeline with a faster send, and the same guarantees."""

from __future__ import annotations

import pytest
from hiredis import pack_command
from redis import Redis
from redis.exceptions import ResponseError, WatchError

from app.jobs.bulk import FastTransaction
from tests.support import wait_until


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


def test_a_script_runs_even_after_redis_forgot_it(redis: Redis) -> None:
    script = redis.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    redis.script_flush()
    with FastTransaction.on(redis) as pipe:
        script(keys=["k"], args=["v"], client=pipe)
        pipe.set("after", "1")
        pipe.execute()
    assert redis.get("k") == b"v"
    assert redis.get("after") == b"1"


def _queued_in_redis(redis: Redis) -> int:
    """How many commands Redis holds queued in a MULTI (the test's transaction is the only one)."""
    return max(int(c["multi"]) for c in redis.client_list())


def test_a_long_transaction_is_streamed_but_applies_only_at_exec(redis: Redis) -> None:
    with FastTransaction.on(redis) as pipe:
        for n in range(5 * FastTransaction.stream_every):
            pipe.set(f"k{n}", n)
        # Sent before execute(): Redis holds them (it reads them in its own time).
        wait_until(lambda: _queued_in_redis(redis) >= 4 * FastTransaction.stream_every, what="queued commands")
        assert redis.get("k0") is None
        pipe.execute()
    assert redis.get(f"k{5 * FastTransaction.stream_every - 1}") == str(5 * FastTransaction.stream_every - 1).encode()


def test_giving_up_half_way_applies_nothing_and_leaves_the_pool_clean(redis: Redis) -> None:
    with pytest.raises(RuntimeError), FastTransaction.on(redis) as pipe:
        for n in range(3 * FastTransaction.stream_every):
            pipe.set(f"k{n}", n)
        raise RuntimeError("the caller failed while building")
    assert redis.dbsize() == 0
    for _ in range(5):  # whichever pooled connection comes next answers its own command
        assert redis.set("x", 1) is True
        assert redis.get("x") == b"1"


def test_a_watch_survives_streaming_and_still_guards_the_write(redis: Redis) -> None:
    redis.set("parent", "queued")
    with FastTransaction.on(redis) as pipe:
        pipe.watch("parent")
        pipe.multi()
        for n in range(3 * FastTransaction.stream_every):
            pipe.set(f"k{n}", n)
        redis.set("parent", "failed")
        with pytest.raises(WatchError):
            pipe.execute()
    assert redis.dbsize() == 1


def test_a_script_anywhere_in_a_streamed_transaction_runs(redis: Redis) -> None:
    script = redis.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    redis.script_flush()
    with FastTransaction.on(redis) as pipe:
        for n in range(FastTransaction.stream_every + 10):
            pipe.set(f"k{n}", n)
        script(keys=["k"], args=["v"], client=pipe)
        pipe.execute()
    assert redis.get("k") == b"v"


def test_packed_commands_take_their_place_among_the_others(redis: Redis) -> None:
    redis.set("text", "x")
    with FastTransaction.on(redis) as pipe:
        pipe.set("a", "1")
        pipe.queue_packed([pack_command(("RPUSH", "l", "x", "y")), pack_command(("SADD", "text", "m"))])
        pipe.set("b", "2")
        with pytest.raises(ResponseError, match=r"command #3 \(SADD\)"):  # WRONGTYPE, named from its packing
            pipe.execute()
    assert redis.lrange("l", 0, -1) == [b"x", b"y"]
    assert (redis.get("a"), redis.get("b")) == (b"1", b"2")
    assert redis.ping()


def test_many_packed_commands_stream_and_apply_together(redis: Redis) -> None:
    count = 3 * FastTransaction.stream_every + 7
    with FastTransaction.on(redis) as pipe:
        for n in range(count):
            pipe.queue_packed([pack_command(("SET", f"k{n}", n))])
        wait_until(lambda: _queued_in_redis(redis) >= 3 * FastTransaction.stream_every, what="queued commands")
        assert redis.get("k0") is None
        replies = pipe.execute()
    assert replies == [b"OK"] * count
    assert redis.mget("k0", f"k{count - 1}") == [b"0", str(count - 1).encode()]
    assert redis.set("x", 1) is True  # the connection went back to the pool in step


@pytest.mark.parametrize("commands", [3, 3 * FastTransaction.stream_every], ids=["small", "streamed"])
def test_a_command_ahead_of_multi_runs_at_once_and_is_answered_before_exec(redis: Redis, commands: int) -> None:
    with FastTransaction.on(redis) as pipe:
        pipe.ahead("INCR", "ahead")
        for n in range(commands):
            pipe.set(f"k{n}", n)
        assert pipe.ahead_reply() == 1
        assert redis.get("ahead") == b"1" and redis.exists("k0") == 0  # it ran; the others wait for EXEC
        assert len(pipe.execute()) == commands
    assert redis.get(f"k{commands - 1}") == str(commands - 1).encode()


@pytest.mark.parametrize("refused", [False, True], ids=["its answer says stop", "it fails"])
def test_stopping_after_the_command_ahead_applies_nothing_else_and_leaves_the_pool_clean(
    redis: Redis, refused: bool
) -> None:
    redis.set("n", "not a number" if refused else "1")
    with pytest.raises((RuntimeError, ResponseError)), FastTransaction.on(redis) as pipe:
        pipe.ahead("INCR", "n")
        for n in range(3 * FastTransaction.stream_every):
            pipe.set(f"k{n}", n)
        pipe.ahead_reply()
        raise RuntimeError("the caller stops on the answer")
    assert redis.keys("k*") == []
    for _ in range(5):  # whichever pooled connection comes next answers its own command
        assert redis.set("x", 1) is True
        assert redis.get("x") == b"1"


def test_exec_waits_for_the_reply_ahead_to_be_read(redis: Redis) -> None:
    with pytest.raises(RuntimeError, match="ahead_reply"), FastTransaction.on(redis) as pipe:
        pipe.ahead("INCR", "ahead")
        pipe.set("k", 1)
        pipe.execute()
    assert redis.exists("k") == 0
