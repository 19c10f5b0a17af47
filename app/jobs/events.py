"""What happens, told as it happens: the event stream behind `GET /api/events`, and the counts
behind `/metrics`, both written in the same atomic step as the change they tell of.

Every change of a task after its submission goes through one Lua function (`add_event`, which
appends it to the task's history); `tell` is what that function also does: it queues the event
for the stream (`keys.EVENTS`) and adds it to the counters and histograms (`keys.METRICS`), and
the script that made the change `flush`es both once at its end. A worker's step that ends 20
tasks and starts 20 more so adds one stream entry and a few HINCRBYs, not 40 of each. Submissions,
deletions, schedule fires and workers coming and going tell of themselves from Python (`told`,
`counted`), in their own transactions.

A stream entry holds a JSON array of events (at most EVENTS_PER_ENTRY); an event's id is the
entry's id and its place in it, `<entry id>/<n>`, which is what a client resumes from.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rq.job import Job

from app import codec, keys
from app.defaults import EVENT_ENTRIES_KEPT, EVENTS_PER_ENTRY, HISTOGRAM_BUCKETS_S
from app.jobs.status import TASK_STATUS
from app.model import TaskStatus

END_STATUSES = {"completed": "COMPLETED", "failed": "FAILED", "canceled": "CANCELED"}
"""Events that end a task, and the status each ends it in. Not `stopped`: rqflow stops a running
task only to cancel it, and `canceled` follows at once (counting both would count it twice)."""

EVENT_STATUS = {
    "queued": "QUEUED",
    "requeued": "QUEUED",
    "pending": "PENDING",
    "scheduled": "SCHEDULED",
    "started": "RUNNING",
    "stopped": "FAILED",
    **END_STATUSES,
}
"""The status an event leaves its task in; other events (retrying, updated, ...) leave the one
the task's hash holds."""


def _lua_table(mapping: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{codec.dumps(k).decode()}] = {codec.dumps(v).decode()}" for k, v in mapping.items()) + "}"


TELL = f"""
local rqflow_told, rqflow_counts = {{}}, {{}}
local rqflow_status = {_lua_table({s.value: t.value for s, t in TASK_STATUS.items()})}
local rqflow_event_status = {_lua_table(EVENT_STATUS)}
local rqflow_ends = {_lua_table(END_STATUSES)}
local rqflow_buckets = {{{", ".join(repr(float(b)) for b in HISTOGRAM_BUCKETS_S)}}}

-- Epoch seconds of a time as RQ writes it (rq.utils.utcformat), or nil.
local function rq_epoch(text)
    if type(text) ~= 'string' then return nil end
    local y, mo, d, h, mi, s = string.match(text, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d%.]+)')
    if not y then return nil end
    y, mo = tonumber(y), tonumber(mo)
    if mo <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + tonumber(d) - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return (era * 146097 + doe - 719468) * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

local function count(field, n)
    rqflow_counts[field] = (rqflow_counts[field] or 0) + n
end

local function observe(name, task_type, seconds)
    if seconds < 0 then seconds = 0 end  -- clocks of two machines
    local slot = #rqflow_buckets + 1
    for i, bound in ipairs(rqflow_buckets) do
        if seconds <= bound then slot = i break end
    end
    count(name .. '|' .. task_type .. '|' .. slot, 1)
    count(name .. '_sum|' .. task_type, seconds)
end

-- Tell of an event of the task in job hash `key`. `event`: its history line as a table,
-- {{at_ms, name, attempt, worker, error}}; `f`: the hash's status (after the change), description,
-- enqueued_at and started_at, when the caller has read them already.
local function tell(key, event, f)
    f = f or redis.call('HMGET', key, 'status', 'description', 'enqueued_at', 'started_at')
    local name = event[2]
    local status = rqflow_event_status[name] or rqflow_status[f[1] or ''] or 'UNKNOWN'
    local task_type = string.match(f[2] or '', '^(%S+) ') or ''
    local told = {{task = string.sub(key, {len(Job.redis_job_namespace_prefix) + 1}), event = name, status = status,
        type = task_type, at = event[1]}}
    if event[3] and event[3] ~= cjson.null then told.attempt = event[3] end
    if event[4] and event[4] ~= cjson.null then told.worker = event[4] end
    if event[5] and event[5] ~= cjson.null then told.error = event[5] end
    rqflow_told[#rqflow_told + 1] = told
    local at_s = event[1] / 1000
    if name == 'started' then
        local queued = rq_epoch(f[3])
        if queued then observe('wait', task_type, at_s - queued) end
    elseif name == 'retrying' then
        count('retries|' .. task_type, 1)
    elseif rqflow_ends[name] then
        count('finished|' .. task_type .. '|' .. status, 1)
        local started = rq_epoch(f[4])
        if started and name ~= 'canceled' then observe('run', task_type, at_s - started) end
    end
end

-- Write what this script told of: the events in entries of at most {EVENTS_PER_ENTRY}, and the counts.
local function flush()
    for i = 1, #rqflow_told, {EVENTS_PER_ENTRY} do
        local entry = {{unpack(rqflow_told, i, math.min(i + {EVENTS_PER_ENTRY - 1}, #rqflow_told))}}
        redis.call('XADD', '{keys.EVENTS}', 'MAXLEN', '~', {EVENT_ENTRIES_KEPT}, '*', 'e', cjson.encode(entry))
    end
    for field, n in pairs(rqflow_counts) do
        if string.find(field, '_sum|', 1, true) then
            redis.call('HINCRBYFLOAT', '{keys.METRICS}', field, string.format('%.6f', n))
        else
            redis.call('HINCRBY', '{keys.METRICS}', field, n)
        end
    end
    rqflow_told, rqflow_counts = {{}}, {{}}
end
"""
"""Lua functions `tell` and `flush` (see the module's doc), for every script that records events."""


def event(name: str, at_ms: int | None = None, **fields: Any) -> dict[str, Any]:
    """An event as the stream keeps it: its name, time (ms) and what else tells of it."""
    return {"event": name, "at": at_ms if at_ms is not None else int(time.time() * 1000), **fields}


def submitted(at_ms: int, task_id: str, status: TaskStatus, task_type: str) -> dict[str, Any]:
    """The `submitted` event of a task stored in `status` (`event`, without its keyword merge:
    a batch makes 10,000 of them)."""
    return {"event": "submitted", "at": at_ms, "task": task_id, "status": status.value, "type": task_type}


def told(target: Any, events: list[dict[str, Any]]) -> None:
    """Queue XADDs of `events` on `target` (a pipeline, so that they commit with their change)."""
    for i in range(0, len(events), EVENTS_PER_ENTRY):
        chunk = codec.dumps(events[i : i + EVENTS_PER_ENTRY])
        target.execute_command("XADD", keys.EVENTS, "MAXLEN", "~", EVENT_ENTRIES_KEPT, "*", "e", chunk)


def counted(target: Any, counts: dict[str, int]) -> None:
    """Queue HINCRBYs of `counts` (fields of keys.METRICS) on `target`."""
    for field, n in counts.items():
        target.execute_command("HINCRBY", keys.METRICS, field, n)


def submitted_field(task_type: str) -> str:
    return f"submitted|{task_type}"


def finished_field(task_type: str, status: TaskStatus) -> str:
    return f"finished|{task_type}|{status.value}"


def bucket_of(seconds: float) -> int:
    """The histogram bucket (1-based; one past the last for +Inf) `seconds` falls in, as the Lua
    `observe` finds it."""
    return bisect_left(HISTOGRAM_BUCKETS_S, seconds) + 1  # the first bound not below it


def lag_observed(target: Any, seconds: float) -> None:
    """How late a timed task or a schedule's run started (rqflow_scheduler_lag_seconds)."""
    seconds = max(seconds, 0.0)
    target.execute_command("HINCRBY", keys.METRICS, f"lag||{bucket_of(seconds)}", 1)
    target.execute_command("HINCRBYFLOAT", keys.METRICS, "lag_sum|", f"{seconds:.6f}")


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Told:
    """One event read back, with the id a client resumes from."""

    id: str
    data: dict[str, Any]


EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}/\d{1,6}", re.ASCII)


def event_id(entry_id: str, n: int) -> str:
    return f"{entry_id}/{n}"


def parse_id(text: str) -> tuple[str, int] | None:
    """`<entry id>/<n>` as (entry id, n); None if it is not one."""
    if not EVENT_ID.fullmatch(text):
        return None
    entry, _, n = text.partition("/")
    return entry, int(n)


def entries(raw: Iterable[Any], after: tuple[str, int] | None = None) -> list[Told]:
    """The events of stream entries as XRANGE/XREAD return them, skipping those of `after`'s
    entry up to and including its place."""
    found = []
    for entry_id, fields in raw:
        entry = codec.text(entry_id)
        try:
            batch = codec.loads(fields.get(b"e") or fields.get("e") or b"[]")
        except codec.DECODE_ERRORS:
            continue
        for n, data in enumerate(batch if isinstance(batch, list) else []):
            if after is not None and entry == after[0] and n <= after[1]:
                continue
            if isinstance(data, dict):
                found.append(Told(event_id(entry, n), data))
    return found


def newest_id(connection: Any) -> str:
    """The id of the newest event held ("" when there is none): where a reader rendered now
    resumes from."""
    told = entries(connection.xrevrange(keys.EVENTS, count=1))
    return told[-1].id if told else ""
