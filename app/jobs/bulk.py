"""A MULTI/EXEC transaction of many writes, sent as it is built and read at C speed.

redis-py spends some 10 µs of Python on each command of a transaction: it checks and packs every
argument, then parses the QUEUED reply and runs a response callback for each. A 10,000-task batch
is ~30,000 commands, so that alone took longer than Redis takes to run them. `FastTransaction`
is redis-py's own transaction pipeline (WATCH, MULTI, the same command methods RQ calls on a
pipeline) with only the sending replaced: each command is packed by hiredis in one C call (or
comes packed, `queue_packed`), every `stream_every` commands go out at once, so Redis parses and
queues them on its own core while the caller builds the rest, and the QUEUED replies are skipped
at C speed. Nothing runs before EXEC: an error on the way, or a connection closed half-way, leaves
Redis as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hiredis import pack_command
from redis import Redis
from redis._parsers import hiredis as redis_hiredis
from redis.client import Pipeline
from redis.exceptions import ConnectionError, ExecAbortError, ResponseError, WatchError

_NOT_ENOUGH_DATA = getattr(redis_hiredis, "NOT_ENOUGH_DATA", None)
"""What redis-py's hiredis reader answers while no whole reply is buffered (None: unknown)."""


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
        self.multi_sent = False
        """Whether MULTI went out: then the connection holds a transaction until EXEC is read."""
        self.ahead_of_multi: bytes | None = None
        """A command to send before MULTI (`ahead`), packed, while its reply is not read."""
        self.packed: list[bytes] = []
        """Commands packed and not yet sent."""
        self.queued: list[Any] = []
        """The commands queued after MULTI (sent or not) and not yet answered by EXEC, in order:
        each one's name, or, if it came packed (`queue_packed`), the packed command."""
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
        self.packed.append(pack_command(args))
        self.queued.append(args[0])
        if len(self.packed) >= self.stream_every:
            self._send()
        return self

    def queue_packed(self, commands: list[bytes]) -> None:
        """Queue commands packed by the caller (as hiredis.pack_command packs them)."""
        self.packed += commands
        self.queued += commands
        if len(self.packed) >= self.stream_every:
            self._send()

    def ahead(self, *args: Any) -> None:
        """Send the command `args` just before MULTI, with the transaction's first commands, so
        that Redis runs it while the rest are made; `ahead_reply` reads its reply, which the caller
        must do before `execute()`. Only before the first command after MULTI."""
        if self.queued:
            raise RuntimeError("a command ahead of MULTI comes before the transaction's commands")
        self.ahead_of_multi = pack_command(args)

    def ahead_reply(self) -> Any:
        """The reply of the command sent `ahead` (Redis's raw reply; an error reply raises)."""
        if self.ahead_of_multi is None:
            raise RuntimeError("no command was sent ahead of MULTI")
        if not self.multi_sent:  # the transaction is small: nothing of it went out yet
            self._send()
        self.ahead_of_multi = None
        assert self.connection is not None  # _send took one
        return self.connection.read_response()

    def _send(self, end: bool = False) -> None:
        first = not self.multi_sent
        self.multi_sent = True
        if self.connection is None:
            self.connection = self.connection_pool.get_connection()
        packed = [pack_command(("MULTI",)), *self.packed] if first else self.packed
        if first and self.ahead_of_multi is not None:
            packed.insert(0, self.ahead_of_multi)
        if end:
            packed.append(pack_command(("EXEC",)))
        self.packed = []
        # Only before MULTI may a health check (a PING) be sent, and never while WATCHing: a
        # reconnect would drop the WATCH silently.
        self.connection.send_packed_command([b"".join(packed)], check_health=first and not self.watching)

    def execute(self, raise_on_error: bool = True, while_waiting: Callable[[], None] | None = None) -> list[Any]:
        """Send what is left and EXEC; `while_waiting` runs while Redis runs the transaction."""
        if self.ahead_of_multi is not None:
            raise RuntimeError("the reply of the command ahead of MULTI is not read (ahead_reply)")
        if not self.queued:
            self.reset()
            return []
        try:
            self._send(end=True)
            try:
                if while_waiting is not None:
                    while_waiting()
            finally:
                replies = self._read(self.connection, len(self.queued))
            names, self.queued = self.queued, []  # every reply read: the connection is clean again
            self.multi_sent = False
            self.watching = False  # EXEC ended the WATCH
        finally:
            self.reset()
        if raise_on_error:
            for n, reply in enumerate(replies):
                if isinstance(reply, ResponseError):
                    raise type(reply)(f"command #{n + 1} ({_name(names[n])}) failed: {reply}")
        return replies

    def reset(self) -> None:  # type: ignore[override]  # Pipeline.reset, not the RESET command
        sent, self.multi_sent = self.multi_sent, False
        self.ahead_of_multi = None
        self.packed = []
        if sent and self.connection is not None:
            # A MULTI (or its replies) is left on the connection; it must not go back to the pool
            # that way. Closing it discards the queued commands, so nothing was applied.
            self.connection.disconnect()
            self.watching = False  # closing the connection ended the WATCH too
        self.queued = []
        super().reset()

    @staticmethod
    def _read(connection: Any, count: int) -> list[Any]:
        queued_error = _skip_queued(connection, count + 1)  # +OK for MULTI, then QUEUED for each command
        try:
            replies = connection.read_response()
        except ExecAbortError:
            raise queued_error or ExecAbortError("transaction aborted") from None
        if replies is None:
            raise WatchError("a watched key changed")
        return list(replies)


def _skip_queued(connection: Any, count: int) -> ResponseError | None:
    """Read `count` replies that only acknowledge (+OK, +QUEUED); the first error among them, if
    any. Through redis-py's hiredis reader where it has one: its read_response costs some 3 µs a
    reply, and a 10,000-task batch has 30,000 of them. The reader is redis-py's internals (8.x);
    without it, the public way."""
    parser: Any = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or not hasattr(parser, "read_from_socket") or _NOT_ENOUGH_DATA is None:
        first: ResponseError | None = None
        for _ in range(count):
            try:
                connection.read_response()
            except ResponseError as error:
                first = first or error
        return first
    first = None
    while count:
        reply = reader.gets()
        if reply is _NOT_ENOUGH_DATA:  # no whole reply buffered yet
            parser.read_from_socket()
            continue
        count -= 1
        if isinstance(reply, ConnectionError):
            raise reply
        if isinstance(reply, ResponseError):
            first = first or reply
    return first


def _name(command: Any) -> str:
    """A command's name, from itself or from its packed form."""
    if isinstance(command, bytes):
        return command.split(b"\r\n", 3)[2].decode(errors="replace")
    return str(command)
