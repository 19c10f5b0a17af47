"""Each task's history: its events, oldest first, kept in its own job hash (`keys.FIELD_HISTORY`).

One JSON array a line, `[at_ms, event, attempt, worker, error, detail, by]` without trailing nulls
(`by`: the name of the API key that made the change),
at most MAX_EVENTS lines (the newest). In the job hash the history costs the bytes of its lines and
goes wherever the task goes (expiry, deletion, retention), where a stream per task cost 4.7 KB
for two events (Redis gives a stream's first node `stream-node-max-bytes`) and an expiry of its own.
Records written before keep their stream (`keys.history_key`), which is still read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from app import codec, keys
from app.clock import from_ms
from app.defaults import MAX_EVENTS
from app.jobs.events import TELL

log = logging.getLogger(__name__)


class EventName(str, Enum):
    """What can happen to a task, as its history names it."""

    SUBMITTED = "submitted"
    QUEUED = "queued"
    PENDING = "pending"
    SCHEDULED = "scheduled"
    STARTED = "started"
    RETRYING = "retrying"
    RETRY_REQUESTED = "retry_requested"
    UPDATED = "updated"
    CANCEL_REQUESTED = "cancel_requested"
    REQUEUED = "requeued"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELED = "canceled"


TERMINAL_EVENTS = frozenset({EventName.COMPLETED, EventName.FAILED, EventName.CANCELED, EventName.STOPPED})


@dataclass(frozen=True)
class Event:
    event: str
    at: datetime
    attempt: int | None
    worker: str | None
    error: dict[str, str] | None
    detail: str | None
    by: str | None = None
    """The API key (its name) whose request made the change, where one did."""


ADD_EVENT = (
    TELL
    + f"""
-- The history `kept` (the job hash's field, or nil) with one event more, the newest {MAX_EVENTS}
-- kept; for a script that writes it with other fields in one HSET. `event`: {{at_ms, name,
-- attempt, worker, error, detail, by}}, no trailing nulls.
local function with_event(kept, event)
    local line = cjson.encode(event)
    if not kept then return line end
    kept = kept .. '\\n' .. line
    local _, breaks = string.gsub(kept, '\\n', '')
    for _ = 1, breaks + 1 - {MAX_EVENTS} do
        kept = string.sub(kept, string.find(kept, '\\n', 1, true) + 1)
    end
    return kept
end

-- Append one event to the history in the job hash `key` and tell of it (app.jobs.events);
-- `f`: as `tell` takes it.
local function add_event(key, event, f)
    local kept = redis.call('HGET', key, '{keys.FIELD_HISTORY}')
    redis.call('HSET', key, '{keys.FIELD_HISTORY}', with_event(kept, event))
    tell(key, event, f)
end
"""
)
"""The Lua functions every script that records an event calls (this module's, app.jobs.release's
and the worker engine's), so that there is one way of appending; such a script calls `flush()`
before it returns."""

_RECORD = (
    ADD_EVENT
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
    add_event(KEYS[1], cjson.decode(ARGV[1]))
    flush()
end
"""
)


def record(
    target: Any,
    job_key: str,
    event: EventName,
    *,
    attempt: int | None = None,
    worker: str | None = None,
    error: dict[str, str] | None = None,
    detail: str | None = None,
    by: str | None = None,
) -> None:
    """Append an event to the task whose job hash is `job_key`, on `target` (a pipeline, so it
    commits with the change it describes). A task whose record is gone gets none: no hash is made
    for a history alone."""
    at_ms = int(time.time() * 1000)
    line: list[Any] = [
        at_ms,
        event.value,
        attempt or None,
        worker or None,
        {"type": error.get("type", ""), "message": error.get("message", "")} if error else None,
        detail or None,
        by or None,
    ]
    while line[-1] is None:
        line.pop()
    target.eval(_RECORD, 1, job_key, codec.dumps(line))


def decode(kept: bytes | str | None) -> list[Event]:
    """The events of a job hash's history field. A line that does not decode (written by hand or
    by another version) is left out with a warning."""
    found = []
    for line in codec.text(kept or b"").split("\n"):
        if not line:
            continue
        try:
            at_ms, event, attempt, worker, error, detail, by = [*codec.loads(line), *[None] * 5][:7]
            found.append(
                Event(
                    event=str(event),
                    at=from_ms(int(at_ms)),
                    attempt=int(attempt) if attempt is not None else None,
                    worker=worker,
                    error=error,
                    detail=detail,
                    by=by,
                )
            )
        except (*codec.DECODE_ERRORS, TypeError) as bad:
            log.warning("history line %r left out: %s: %s", line[:80], type(bad).__name__, bad)
    return found


def events(entries: list[Any] | None) -> list[Event]:
    """The events of a task's stream (records written before `decode`), from what XRANGE returned.
    An entry that does not decode (written by hand or by another version) is left out with a warning."""
    events = []
    for entry_id, raw in entries or []:
        try:
            fields = {codec.text(k): codec.text(v) for k, v in (raw or {}).items()}
            events.append(
                Event(
                    event=fields["event"],
                    at=from_ms(int(fields["at_ms"])),
                    attempt=int(fields["attempt"]) if "attempt" in fields else None,
                    worker=fields.get("worker"),
                    error=codec.loads(fields["error"]) if "error" in fields else None,
                    detail=fields.get("detail"),
                )
            )
        except codec.DECODE_ERRORS as error:
            log.warning("history entry %s left out: %s: %s", codec.text(entry_id), type(error).__name__, error)
    return events
