"""Many small Redis writes sent as a few Lua calls, inside the caller's MULTI.

redis-py spends some 20 µs of Python on each pipelined command (packing it, then parsing its
QUEUED and EXEC replies); a 10,000-task batch is ~40,000 commands. BulkWriter takes the same
calls RQ makes on a pipeline (hset, sadd, xadd, ...) and ships them as one EVALSHA per
`chunk` commands, which Redis runs one after the other exactly as it would have run them.
"""

from __future__ import annotations

from typing import Any

from redis.client import Pipeline
from redis.commands.core import Script

# ARGV: a stream of commands, each as: name, number of arguments, arguments...
RUN_COMMANDS = """
local i, n = 1, #ARGV
while i <= n do
    local count = tonumber(ARGV[i + 1])
    redis.call(ARGV[i], unpack(ARGV, i + 2, i + 1 + count))
    i = i + 2 + count
end
return n
"""


class BulkWriter:
    """Duck-types the pipeline methods that job saves and history use; call `flush()` at the end."""

    def __init__(self, pipe: Pipeline, script: Script, chunk: int = 2000) -> None:
        self.pipe = pipe
        self.script = script
        self.chunk = chunk
        self.args: list[Any] = []
        self.count = 0

    def _add(self, name: str, *args: Any) -> None:
        self.args += [name, len(args), *args]
        self.count += 1
        if self.count >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.args:
            self.script(keys=[], args=self.args, client=self.pipe)
            self.args, self.count = [], 0

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None) -> None:
        pairs: list[Any] = [key, value] if key is not None else []
        for field, item in (mapping or {}).items():
            # Only new keys come here: a field RQ writes empty (no callback, not started yet)
            # would be absent all the same, and RQ reads both the same way.
            if item != "":
                pairs += [field, item]
        self._add("HSET", name, *pairs)

    def sadd(self, name: str, *values: Any) -> None:
        self._add("SADD", name, *values)

    def xadd(
        self, name: str, fields: dict[Any, Any], id: str = "*", maxlen: int | None = None, approximate: bool = True
    ) -> None:
        args: list[Any] = ["MAXLEN", "~" if approximate else "=", maxlen] if maxlen is not None else []
        args.append(id)
        for field, item in fields.items():
            args += [field, item]
        self._add("XADD", name, *args)

    def expire(self, name: str, seconds: int) -> None:
        self._add("EXPIRE", name, int(seconds))
