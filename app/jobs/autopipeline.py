"""Commands of concurrent requests sent to Redis together: what callers ask for in one turn of the
event loop leaves as one pipeline, on one connection, and each caller gets its own reply.

A round trip costs about 35 µs of CPU on each side on a small (2-core) machine: system calls and
a wake-up, more than a submission's script costs Redis; sixteen clients submitting at once share
it instead of paying it sixteen times. Nothing waits to be batched: the pipeline leaves at the end
of the turn in which its first command was asked for, and another turn's commands go on another
connection of the pool without waiting for the first to come back.

Commands come packed (hiredis' `pack_command`, in C): redis-py's asyncio client packs in Python,
which costs more than the command itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


class AutoPipeline:
    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self._pool = client.connection_pool
        self._asked: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        """Pipelines on their way: referenced until done (the loop keeps only weak references)."""

    def call(self, packed: bytes) -> asyncio.Future[Any]:
        """Send one packed command with the others of this turn; the future is its reply, or the
        error Redis answered it with (the others are not affected), or the connection's error."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        if not self._asked:
            loop.call_soon(self._send_asked)
        self._asked.append((packed, reply))
        return reply

    def _send_asked(self) -> None:
        asked, self._asked = self._asked, []
        sending = asyncio.ensure_future(self._send(asked))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, asked: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            connection = await self._pool.get_connection()
        except BaseException as error:
            _fail(asked, error)
            if not isinstance(error, Exception):
                raise
            return
        try:
            await connection.send_packed_command([packed for packed, _ in asked])
            for _, reply in asked:
                try:
                    answer = await connection.read_response()
                except ResponseError as refused:  # that command's error; the rest still come
                    if not reply.done():
                        reply.set_exception(refused)
                else:
                    if not reply.done():
                        reply.set_result(answer)
        except BaseException as error:
            # Whatever was sent and not answered is unknown; the connection is dropped (redis-py
            # has done so for its own errors) so that no later caller reads a stale reply.
            await connection.disconnect()
            _fail(asked, error)
            if not isinstance(error, Exception):
                raise
        finally:
            await self._pool.release(connection)


def _fail(asked: list[tuple[bytes, asyncio.Future[Any]]], error: BaseException) -> None:
    if not isinstance(error, Exception):  # canceled (the app stopping): its callers learn why
        error = RedisConnectionError(f"the pipeline to Redis was stopped ({type(error).__name__})")
    for _, reply in asked:
        if not reply.done():
            reply.set_exception(error)
