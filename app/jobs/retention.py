"""Retention: how many ended tasks stay, and the list indexes kept free of tasks that are gone.

A task that ends gets its expiry (`RQFLOW_RESULT_TTL_S`, FAILED ones `RQFLOW_FAILED_TTL_S`) from
whatever ends it, as RQ does. On top of that, at most `RQFLOW_KEEP_FINISHED` tasks of each ended
status are kept: RQ's registry of that status (one per queue, scored by the task's expiry, so
oldest first within one TTL) says which go, and `TRIM` removes each with everything of it: its
job hash (history and result inside), its dependency sets, the streams of records written before,
its registry entry and its entries in the list indexes. A task that expired on its own leaves its
index entries behind; `PRUNE` walks each index from a cursor kept in Redis and drops them.

Both work in steps of at most `STEP` tasks (a few milliseconds of Redis each), repeated by the
workers' maintenance pass (`run`) within a time budget, so even a million tasks to trim never
stall Redis for more than a step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from rq.job import Job
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.results import Result

from app import codec, keys

STEP = 200
"""Tasks one script call removes (or index entries it checks) at most."""

PRUNE_STEPS = 5
"""Steps of index entries each pass checks per index. Only tasks that expire before
RQFLOW_KEEP_FINISHED is reached leave entries behind (fewer than the cap over the TTL: a few
hundred an hour with the defaults), so a slow walk keeps up; walking every index to its end each
pass would read a million entries every ten seconds for nothing."""

STATUSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "COMPLETED": (FinishedJobRegistry.key_template, ("finished",)),
    "FAILED": (FailedJobRegistry.key_template, ("failed", "stopped")),
    "CANCELED": (CanceledJobRegistry.key_template, ("canceled",)),
}
"""Each ended status: RQ's registry of it (a key template per queue), and the RQ statuses a task
in it has (a registry entry whose task has moved on, retried say, is dropped and the task kept)."""

_REMOVE = """
local job_prefix, task_index, type_prefix, runs_prefix, history_prefix, results_prefix =
    ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

-- rqflow's list index member of a task created at `t` (RQ's time format): its creation in
-- microseconds, as app.jobs.store.index_member computes it (the same IEEE double operations).
local function member(t, id)
    local y, mo, d, h, mi, s, frac = string.match(t, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)')
    if not y then return nil end
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    if mo <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
    local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
    local micros = tonumber(string.sub(frac .. '000000', 1, 6))
    local total = ((days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)) * 1e6 + micros) / 1e6
    return string.format('%020.0f', math.floor(total * 1e6)) .. ':' .. id
end

-- Remove a task and everything of it, its index entries included.
local function remove(id)
    local key = job_prefix .. id
    local f = redis.call('HMGET', key, 'created_at', 'description', 'rqflow_spec')
    redis.call('DEL', key, key .. ':dependents', job_prefix .. ':' .. id .. ':dependencies',
        history_prefix .. id, results_prefix .. id)
    local m = f[1] and member(f[1], id)
    if not m then return end
    redis.call('ZREM', task_index, m)
    -- rqflow describes a job as '<type> <id>'.
    local description = f[2] or ''
    if string.sub(description, -#id - 1) == ' ' .. id then
        redis.call('ZREM', type_prefix .. string.sub(description, 1, -#id - 2), m)
    end
    local ok, spec = pcall(cjson.decode, f[3] or '')
    if ok and type(spec) == 'table' and type(spec.schedule_id) == 'string' then
        redis.call('ZREM', runs_prefix .. spec.schedule_id, m)
    end
end
"""

TRIM = (
    _REMOVE
    + """
-- KEYS: one ended status's registries (one per queue). ARGV (after the prefixes): how many to
-- keep, how many to remove at most, then the RQ statuses a task in them has.
local keep, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local statuses = {}
for i = 9, #ARGV do statuses[ARGV[i]] = true end
local total = 0
for _, registry in ipairs(KEYS) do total = total + redis.call('ZCARD', registry) end
local removed = 0
while total > keep and removed < budget do
    local oldest, oldest_id, oldest_score
    for _, registry in ipairs(KEYS) do
        local first = redis.call('ZRANGE', registry, 0, 0, 'WITHSCORES')
        if first[1] and (oldest_score == nil or tonumber(first[2]) < oldest_score) then
            oldest, oldest_id, oldest_score = registry, first[1], tonumber(first[2])
        end
    end
    redis.call('ZREM', oldest, oldest_id)
    if statuses[redis.call('HGET', job_prefix .. oldest_id, 'status') or ''] then remove(oldest_id) end
    total, removed = total - 1, removed + 1
end
return removed
"""
)

PRUNE = """
-- KEYS: a list index, the hash of cursors. ARGV: the job key prefix, how many entries to check.
-- Drops the entries whose job is gone, from the cursor on; returns how many it dropped, and 1
-- once it reached the index's end (the next call starts over).
local after = redis.call('HGET', KEYS[2], KEYS[1])
local from = after and ('(' .. after) or '-'
local members = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, tonumber(ARGV[2]))
local dropped = 0
for _, m in ipairs(members) do
    local id = string.sub(m, string.find(m, ':', 1, true) + 1)
    if redis.call('EXISTS', ARGV[1] .. id) == 0 then
        redis.call('ZREM', KEYS[1], m)
        dropped = dropped + 1
    end
end
if #members < tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[2], KEYS[1])
    return {dropped, 1}
end
redis.call('HSET', KEYS[2], KEYS[1], members[#members])
return {dropped, 0}
"""


@dataclass(frozen=True)
class Pass:
    """What one retention pass did."""

    trimmed: int
    pruned: int


class Retention:
    def __init__(self, connection: Redis, queues: Iterable[str], types: Iterable[str], keep_finished: int) -> None:
        self.connection = connection
        self.queues = list(queues)
        self.types = list(types)
        """The registered task types, whose indexes are pruned (a scan of the keyspace for them
        would walk every task's key)."""
        self.keep_finished = keep_finished
        self._trim = connection.register_script(TRIM)
        self._prune = connection.register_script(PRUNE)
        self._prefixes = [
            Job.redis_job_namespace_prefix,
            keys.TASK_INDEX,
            keys.type_index(""),
            keys.schedule_runs_index(""),
            keys.history_key(""),
            Result.get_key(""),
        ]

    def trim(self, status: str, budget: int = STEP) -> int:
        """Remove up to `budget` of the oldest tasks of `status` beyond `keep_finished`."""
        template, rq_statuses = STATUSES[status]
        registries = [template.format(queue) for queue in self.queues]
        removed = self._trim(keys=registries, args=[*self._prefixes, self.keep_finished, budget, *rq_statuses])
        return int(removed)

    def prune(self, index: str, count: int = STEP) -> tuple[int, bool]:
        """Check the next `count` entries of a list index and drop those whose task is gone;
        returns how many it dropped, and whether it reached the index's end."""
        dropped, done = self._prune(keys=[index, keys.PRUNE_CURSORS], args=[Job.redis_job_namespace_prefix, count])
        return int(dropped), bool(done)

    def indexes(self) -> list[str]:
        """The list indexes: all tasks, each registered type's, each schedule's runs."""
        found = [keys.TASK_INDEX, *(keys.type_index(t) for t in self.types)]
        schedules = self.connection.zrange(keys.SCHEDULE_INDEX, 0, -1)
        found += [keys.schedule_runs_index(codec.text(s)) for s in schedules]  # type: ignore[arg-type]
        return found

    def run(self, budget_s: float) -> Pass:
        """Trim every ended status in steps until done, and walk PRUNE_STEPS steps of every index,
        within `budget_s`; the next pass goes on where this one stopped."""
        deadline = time.monotonic() + budget_s
        trimmed = pruned = 0
        for status in STATUSES:
            while time.monotonic() < deadline:
                removed = self.trim(status)
                trimmed += removed
                if removed < STEP:
                    break
        for index in self.indexes():
            for _ in range(PRUNE_STEPS):
                if time.monotonic() >= deadline:
                    break
                dropped, done = self.prune(index)
                pruned += dropped
                if done:
                    break
        return Pass(trimmed, pruned)
