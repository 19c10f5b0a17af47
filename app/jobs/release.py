"""Releasing a pending task the moment its last parent ends: one Lua script decides and queues.

RQ moves the dependents of a finished job to a "ready" registry inside the job's transaction and
queues them in a second step that WATCHes that registry, a key shared by every job of the queue;
when another worker touches it meanwhile, RQ skips the job "for now" and it waits for the next
maintenance pass (RQ 3.0 `ReadyJobRegistry.enqueue_jobs`, the two-phase release of rq#2406; its
maintenance lock lasts 899 s). With 8 workers that happened to one dependency hop in ten, for up to
17 s under rqflow's 10 s maintenance.

Here a parent's end queues this script in the same MULTI/EXEC that writes the end
(`TaskJob.set_status`), so the end and the check of every child's parents are one atomic step:
of two parents ending at once, whichever transaction runs second sees both ended and queues the
child, and a child is queued once, since only a PENDING one is touched. The same script serves a
timed task whose time has come, a task retried while its parents run, and the repair sweep.

A child whose type has a concurrency limit goes where RQ's `_enqueue_rate_limited_job` puts it:
into its limit's waiting line, from which free slots are filled oldest first, as RQ's own
acquire script does (the layout of `rq.rate_limit`, pinned by the limits tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from rq.defaults import RQ_KEY_PREFIX
from rq.job import Job
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry
from rq.registry import DeferredJobRegistry
from rq.utils import as_text, utcformat

from app import history, keys
from app.history import EventName

# ARGV: now as RQ writes times, now (ms), parent id (or ""), the key prefixes and names of `_FIXED`,
# then the child ids when there is no parent. Returns the ids it released.
PRELUDE = """
local now, now_ms, parent = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local job_prefix, deferred_prefix, queue_prefix, queues_key, rl_prefix, rl_keys =
    ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local queued_event, wake_prefix = ARGV[10], ARGV[11]
"""
"""The script's arguments (`args`), which a script built on FUNCTIONS starts with."""

FUNCTIONS = (
    history.ADD_EVENT
    + """

-- True when every edge lets the child run: a parent that finished (or expired after finishing)
-- meets every edge, a failed or stopped one only an edge that allows failure, any other none yet.
local function met(spec)
    if type(spec.due_ms) == 'number' and spec.due_ms > now_ms then return false end
    for _, edge in ipairs(type(spec.dependencies) == 'table' and spec.dependencies or {}) do
        local id, allow_failure = edge, false
        if type(edge) == 'table' then id, allow_failure = edge.id, edge.allow_failure == true end
        local status = redis.call('HGET', job_prefix .. tostring(id), 'status')
        if status and status ~= 'finished' then
            if not ((status == 'failed' or status == 'stopped') and allow_failure) then return false end
        end
    end
    return true
end

local function push(id, origin)
    redis.call('SADD', queues_key, queue_prefix .. origin)
    redis.call('RPUSH', queue_prefix .. origin, id)
    redis.call('ZADD', wake_prefix .. origin, 0, 'w')
    redis.call('HSET', job_prefix .. id, 'status', 'queued', 'enqueued_at', now)
end

-- RQ's rate limit: the child joins its limit's waiting line, then free slots are filled oldest first.
-- Free slots of a limit go to its waiting tasks, oldest first.
local function fill(limit, concurrency)
    local allowed, waiting = rl_prefix .. limit .. ':allowed', rl_prefix .. limit .. ':rate_limited'
    while redis.call('ZCARD', allowed) < tonumber(concurrency) do
        local popped = redis.call('ZPOPMIN', waiting)
        if #popped == 0 then break end
        local f = redis.call('HMGET', job_prefix .. popped[1], 'origin', 'status')
        if f[1] and f[2] == 'rate_limited' then
            redis.call('ZADD', allowed, math.floor(now_ms / 1000), popped[1])
            push(popped[1], f[1])
        end
    end
end

local function through_limit(id, limit, concurrency)
    redis.call('SADD', rl_keys, limit)
    redis.call('HSET', rl_prefix .. limit, 'concurrency', concurrency)
    redis.call('HSET', job_prefix .. id, 'status', 'rate_limited')
    redis.call('ZADD', rl_prefix .. limit .. ':rate_limited', math.floor(now_ms / 1000), id)
    fill(limit, concurrency)
end

-- Queue those of `children` that are PENDING and may run now; returns their ids.
local function release(children)
local released = {}
for _, id in ipairs(children) do
    local key = job_prefix .. id
    local f = redis.call('HMGET', key, 'status', 'origin', 'rqflow_spec', 'rate_limit_key', 'rate_limit_concurrency',
        'rqflow_attempts')
    local ok, spec = pcall(cjson.decode, f[3] or '')
    if f[1] == 'deferred' and f[2] and ok and type(spec) == 'table' and met(spec) then
        redis.call('ZREM', deferred_prefix .. f[2], id)
        redis.call('PERSIST', key)
        if f[4] and f[4] ~= '' and tonumber(f[5]) then
            through_limit(id, f[4], f[5])
        else
            push(id, f[2])
        end
        local event = {now_ms, queued_event}
        if tonumber(f[6]) and tonumber(f[6]) > 0 then event[3] = tonumber(f[6]) end
        add_event(key, event)
        released[#released + 1] = id
    end
end
return released
end

-- A limited task's end: its slot is free, and the oldest waiting task of its limit takes it.
local function free_slot(id, limit, concurrency)
    redis.call('ZREM', rl_prefix .. limit .. ':allowed', id)
    fill(limit, concurrency)
end
"""
)
"""What releasing a task means, as Lua functions (`release`, `free_slot`) for scripts that end
tasks in the same call (app.jobs.engine)."""

_FIXED = (
    Job.redis_job_namespace_prefix,
    DeferredJobRegistry.key_template.format(""),
    Queue.redis_queue_namespace_prefix,
    Queue.redis_queues_keys,
    f"{RQ_KEY_PREFIX}:rl:",
    RateLimitRegistry.rl_keys_key,
    EventName.QUEUED.value,
    keys.wake_key(""),
)

ARGC = 3 + len(_FIXED)
"""How many arguments `args` starts a script's ARGV with (a script built on PRELUDE reads its
own from ARGV[ARGC + 1] on)."""

SCRIPT = (
    PRELUDE
    + FUNCTIONS
    + f"""
local released
if parent ~= '' then
    released = release(redis.call('SMEMBERS', job_prefix .. parent .. ':dependents'))
else
    released = release({{unpack(ARGV, {ARGC + 1})}})
end
flush()
return released
"""
)


def args(parent: str, children: Sequence[str], now: datetime | None = None) -> list[Any]:
    now = now or datetime.now(timezone.utc)
    return [utcformat(now), int(now.timestamp() * 1000), parent, *_FIXED, *children]


def after_end(target: Any, parent: str) -> None:
    """Queue the release of `parent`'s dependents on `target`: the pipeline (in MULTI) that writes
    the parent's end, so that both are one atomic step; or a connection, right after that write."""
    target.eval(SCRIPT, 0, *args(parent, ()))


def check(target: Any, children: Sequence[str]) -> None:
    """Queue the release of those of `children` whose parents have all ended well on `target` (a
    pipeline in MULTI, after the write that made them PENDING)."""
    target.eval(SCRIPT, 0, *args("", children))


def run(connection: Redis, children: Sequence[str]) -> list[str]:
    """Release those of `children` that may go now; returns their ids."""
    return [as_text(i) for i in connection.eval(SCRIPT, 0, *args("", children))]
