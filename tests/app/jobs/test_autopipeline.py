"""The commands of concurrent callers leave together, on a real Redis; each caller gets its own
reply or error, and a lost connection fails only the commands it carried."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hiredis import pack_command
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.jobs.autopipeline import AutoPipeline
from tests.support import RedisServer


def test_commands_asked_for_in_one_turn_share_one_connection_and_each_gets_its_reply(
    redis_server: RedisServer, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    send = Connection.send_packed_command

    async def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        if isinstance(command, list) and b"INCRBY" in b"".join(command):  # not the connection's handshake
            writes.append(len(command))
        await send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counted)

    async def scenario() -> tuple[list[int], int]:
        client = AsyncRedis.from_url(redis_server.url)
        try:
            pipeline = AutoPipeline(client)
            replies = await asyncio.gather(*(pipeline.call(pack_command(("INCRBY", "n", i))) for i in range(1, 51)))
            pool = client.connection_pool
            return replies, len(pool._available_connections) + len(pool._in_use_connections)  # type: ignore[attr-defined]
        finally:
            await client.aclose()

    replies, connections = asyncio.run(scenario())
    # In order, each its own: the running total after each increment.
    assert replies == [sum(range(1, i + 1)) for i in range(1, 51)]
    assert connections == 1  # one pipeline, not fifty round trips on fifty connections
    assert writes == [50]  # all fifty commands in one write
    assert int(redis.get("n") or 0) == sum(range(1, 51))


def test_an_error_reply_fails_only_its_own_caller(redis_server: RedisServer, redis: Redis) -> None:
    redis.hset("a-hash", "f", "v")

    async def scenario() -> list[object]:
        client = AsyncRedis.from_url(redis_server.url)
        try:
            pipeline = AutoPipeline(client)
            calls = [
                pipeline.call(pack_command(("SET", "x", "1"))),
                pipeline.call(pack_command(("INCR", "a-hash"))),  # WRONGTYPE
                pipeline.call(pack_command(("GET", "x"))),
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.aclose()

    first, second, third = asyncio.run(scenario())
    assert first == b"OK" and third == b"1"
    assert isinstance(second, ResponseError) and "WRONGTYPE" in str(second)


def test_redis_gone_fails_the_callers_and_the_next_calls_reconnect(tmp_path: Path) -> None:
    server = RedisServer.start_new(tmp_path)
    try:

        async def scenario() -> tuple[list[object], object]:
            client = AsyncRedis.from_url(server.url, socket_connect_timeout=1)
            try:
                pipeline = AutoPipeline(client)
                assert await pipeline.call(pack_command(("SET", "k", "before"))) == b"OK"
                server.kill()
                lost = await asyncio.gather(
                    *(pipeline.call(pack_command(("GET", "k"))) for _ in range(3)), return_exceptions=True
                )
                server.start()  # same port and data directory
                again = await pipeline.call(pack_command(("SET", "k", "after")))
                return lost, again
            finally:
                await client.aclose()

        lost, again = asyncio.run(scenario())
        assert all(isinstance(error, RedisConnectionError) for error in lost), lost
        assert again == b"OK"
        assert server.client().get("k") == b"after"
    finally:
        server.kill()


@pytest.mark.parametrize("count", [1, 40])
def test_a_canceled_caller_does_not_disturb_the_others(redis_server: RedisServer, redis: Redis, count: int) -> None:
    async def scenario() -> list[object]:
        client = AsyncRedis.from_url(redis_server.url)
        try:
            pipeline = AutoPipeline(client)
            calls = [pipeline.call(pack_command(("INCR", "c"))) for _ in range(count + 1)]
            calls[0].cancel()  # its client went away; its command still runs
            return await asyncio.gather(*calls[1:])
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == list(range(2, count + 2))
    assert int(redis.get("c") or 0) == count + 1
