"""A MULTI/EXEC transaction of many writes, sent as it is built and read at C speed.

redis-py spends some 10 µs of Python on each command of a transaction: it checks and packs every
argument, then parses the QUEUED reply and runs a response callback for each. A 10,000-task batch
is ~30,000 commands, so that alone took longer than Redis takes to run them. `FastTransaction`
is redis-py's own transaction pipeline (WATCH, MULTI, the same command methods RQ calls on a
pipeline) with only the sending replaced: each command is packed by hiredis in one C call, and
every `stream_every` commands go out at once, so Redis parses and queues them on its own core
while the caller builds the rest. Nothing runs before EXEC: an error on the way, or a connection
closed half-way, leaves Redis as it was.
"""

from __future__ import annotations

from collections.abc import Callable
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

    stream_every = 2000

    @classmethod
    def on(cls, connection: Redis) -> FastTransaction:
        return cls(connection.connection_pool, connection.response_callbacks, True, None)

    def __init__(self, *args: Any) -> None:
        self.sent: list[Any] = []
        """Names of the commands sent after MULTI and not yet answered by EXEC, in order."""
        super().__init__(*args)

    def __enter__(self) -> FastTransaction:
        return self

    def pipeline_execute_command(self, *args: Any, **options: Any) -> FastTransaction:
        name = args[0]
        if name == "EVALSHA":
            body = next((s.script for s in self.scripts if s.sha == args[1]), None)
            if body is not None:
                # Sent ahead of EXEC, so a script cannot be loaded just before it; EVAL carries the
                # body and cannot meet a NOSCRIPT (a Redis restart empties the script cache).
                args = ("EVAL", body, *args[2:])
        elif " " in name:  # redis-py names some commands in one string ('SCRIPT LOAD'); Redis wants two
            args = (*name.split(), *args[1:])
        self.command_stack.append((args, options))
        if len(self.command_stack) >= self.stream_every:
            self._send()
        return self

    def _send(self, end: bool = False) -> None:
        first = not self.sent
        if self.connection is None:
            self.connection = self.connection_pool.get_connection()
        packed = [pack_command(("MULTI",))] if first else []
        packed += [pack_command(args) for args, _ in self.command_stack]
        if end:
            packed.append(pack_command(("EXEC",)))
        self.sent += [args[0] for args, _ in self.command_stack]
        self.command_stack = []
        # Only before MULTI may a health check (a PING) be sent, and never while WATCHing: a
        # reconnect would drop the WATCH silently.
        self.connection.send_packed_command([b"".join(packed)], check_health=first and not self.watching)

    def execute(self, raise_on_error: bool = True, while_waiting: Callable[[], None] | None = None) -> list[Any]:
        """Send what is left and EXEC; `while_waiting` runs while Redis runs the transaction."""
        if not self.command_stack and not self.sent:
            self.reset()
            return []
        try:
            self._send(end=True)
            try:
                if while_waiting is not None:
                    while_waiting()
            finally:
                replies = self._read(self.connection, len(self.sent))
            names, self.sent = self.sent, []  # every reply read: the connection is clean again
            self.watching = False  # EXEC ended the WATCH
        finally:
            self.reset()
        if raise_on_error:
            for n, reply in enumerate(replies):
                if isinstance(reply, ResponseError):
                    raise type(reply)(f"command #{n + 1} ({names[n]}) failed: {reply}")
        return replies

    def reset(self) -> None:  # type: ignore[override]  # Pipeline.reset, not the RESET command
        if self.sent and self.connection is not None:
            # A MULTI (or its replies) is left on the connection; it must not go back to the pool
            # that way. Closing it discards the queued commands, so nothing was applied.
            self.connection.disconnect()
            self.watching = False  # closing the connection ended the WATCH too
        self.sent = []
        super().reset()

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
