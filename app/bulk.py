"""A MULTI/EXEC transaction of many writes, sent and read at C speed.

redis-py spends some 10 µs of Python on each command of a transaction: it checks and packs every
argument, then parses the QUEUED reply and runs a response callback for each. A 10,000-task batch
is ~30,000 commands, so that alone took longer than Redis takes to run them. `FastTransaction`
is redis-py's own transaction pipeline (WATCH, MULTI, scripts loaded before EXEC, the same
command methods that RQ calls on a pipeline) with only `execute` replaced: each command is packed
by hiredis in one C call, all are sent in one write, and the replies are read without callbacks.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ExecAbortError, ResponseError, WatchError


class FastTransaction(Pipeline):
    """Use as `with FastTransaction.on(redis) as pipe:`, like `redis.pipeline()`.

    `execute()` returns Redis's raw replies (no response callbacks): it is meant for writes. It
    never retries on a connection error, since the writes may or may not have been applied.
    """

    @classmethod
    def on(cls, connection: Redis) -> FastTransaction:
        return cls(connection.connection_pool, connection.response_callbacks, True, None)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = self.command_stack
        if not commands and not self.watching:
            return []
        if self.scripts:
            self.load_scripts()  # a NOSCRIPT inside EXEC would leave the other writes applied
        own = self.connection is None
        connection = self.connection or self.connection_pool.get_connection()
        try:
            packed = [pack_command(("MULTI",))]
            packed += [pack_command(_split_name(args)) for args, _ in commands]
            packed.append(pack_command(("EXEC",)))
            # A health check that reconnects would silently drop a WATCH.
            connection.send_packed_command([b"".join(packed)], check_health=not self.watching)
            replies = self._read(connection, len(commands))
        except BaseException:
            # Replies may be left unread on the socket; a pooled connection must never carry them.
            connection.disconnect()
            raise
        finally:
            self.watching = False  # EXEC (or the disconnect) ended any WATCH
            if own:
                self.connection_pool.release(connection)
            self.reset()
        if raise_on_error:
            for n, reply in enumerate(replies):
                if isinstance(reply, ResponseError):
                    raise type(reply)(f"command #{n + 1} ({commands[n][0][0]}) failed: {reply}")
        return replies

    @staticmethod
    def _read(connection: Any, count: int) -> list[Any]:
        queued_error: ResponseError | None = None
        for _ in range(count + 1):  # +OK for MULTI, then QUEUED (or an error) for each command
            try:
                connection.read_response()
            except ResponseError as error:
                queued_error = queued_error or error
        try:
            replies = connection.read_response()
        except ExecAbortError:
            raise queued_error or ExecAbortError("transaction aborted") from None
        if replies is None:
            raise WatchError("a watched key changed")
        return list(replies)


def _split_name(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """redis-py passes some commands' names as one string ('SCRIPT LOAD'); Redis wants two."""
    name = args[0]
    if isinstance(name, str) and " " in name:
        return (*name.split(), *args[1:])
    return args
