"""The worker engine's side of Redis: end a batch of tasks and claim the next ones in one script.

RQ's worker spends 58 commands in 22 round trips on one job (heartbeats, busy/idle flapping, an
execution record with three indexes, a WATCH before the success write). Here a worker sends the
tasks its children finished and how many children are free, and one script, in one round trip:

- writes each success as RQ's worker does (status, ended_at, the finished registry, the
  expiry), with its history event, and releases its dependents and its concurrency slot in the
  same atomic step (the functions of app.jobs.release). The return value goes in the job hash's
  `result` field, which RQ's `Job.restore` reads, rather than RQ 3's stream per job: a stream
  costs 4.7 KB for one entry, a field its bytes (`return_value()` and rq-dashboard, which read only
  the stream, show none);
- pops up to that many ready tasks, high priority first, and starts each as RQ's worker does
  (status, started_at, worker_name, the started registry), counting the attempt.

A started task's entry in RQ's started registry is scored with the worker's lease; the worker
renews all of its leases in one round trip per heartbeat. If the worker dies, its entries lapse
and RQ's registry cleanup retries or fails the tasks, as it does for RQ's own workers; every
engine worker looks for lapsed leases each second (`lapsed`), so that happens within seconds.
A run gets RQ's execution record (what `rq info`, rq-dashboard and `/api/workers` show as a
worker's current jobs) only once a heartbeat finds it still running: tasks of milliseconds,
the bulk, never pay for one.

Failures, timeouts and cancellations are rare and go through RQ's own failure handling.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hiredis import pack_command
from redis import Redis
from redis.exceptions import NoScriptError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import as_text
from rq.worker import BaseWorker, WorkerStatus

from app import codec, keys
from app.defaults import FINISHED_BUCKET_TTL_S
from app.errors import BadJSON
from app.history import EventName
from app.jobs import release
from app.jobs.job import RESULT_FIELD, forbidden
from app.model import ErrorType

_ENGINE = """
local worker, lease_score, want = ARGV[B + 1], tonumber(ARGV[B + 2]), tonumber(ARGV[B + 3])
local result_ttl_default = ARGV[B + 4]
local wip_prefix, finished_prefix, result_field, executions_key = ARGV[B + 5], ARGV[B + 6], ARGV[B + 7], ARGV[B + 8]
local started_event, completed_event, bucket, bucket_ttl = ARGV[B + 9], ARGV[B + 10], ARGV[B + 11], ARGV[B + 12]
local execution_base, now_s = ARGV[B + 13], tonumber(ARGV[B + 14])

-- RQ's time format (rq.utils.utcformat) of a Redis TIME reply.
local function utc(seconds, micros)
    local days = math.floor(seconds / 86400)
    local rem = seconds - days * 86400
    local z = days + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local day = doy - math.floor((153 * mp + 2) / 5) + 1
    local month = mp < 10 and mp + 3 or mp - 9
    local year = yoe + era * 400 + (month <= 2 and 1 or 0)
    return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day, math.floor(rem / 3600),
        math.floor(rem % 3600 / 60), rem % 60, micros)
end

-- The time of this step from Redis's clock, read as the script runs. Workers read their own
-- clocks before their scripts queue up behind one another in Redis, so with those a child's
-- start could read earlier than the end of the parent that released it.
local clock = redis.call('TIME')
local clock_s, clock_us = tonumber(clock[1]), tonumber(clock[2])
now, now_ms, now_s = utc(clock_s, clock_us), clock_s * 1000 + math.floor(clock_us / 1000), clock_s + clock_us / 1e6
local execution_prefix, woken = ARGV[B + 15], ARGV[B + 16] == '1'
local n_queues = tonumber(ARGV[B + 17])
local at = B + 18
local queues = {unpack(ARGV, at, at + n_queues - 1)}
at = at + n_queues
local n_done = tonumber(ARGV[at])
at = at + 1

-- The ends: id, execution, result (its JSON, or '' for none), started, ended (epoch s),
-- and '1' if a heartbeat published the run as an RQ execution (which then goes).
local ended, working = 0, 0
for i = 1, n_done do
    local id, execution, value, started, finished = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
    if ARGV[at + 5] == '1' then
        redis.call('DEL', execution_prefix .. id .. ':' .. execution)
        redis.call('SREM', executions_key, id .. ':' .. execution)
    end
    at = at + 6
    local key = job_prefix .. id
    local f = redis.call('HMGET', key, 'status', 'worker_name', 'origin', 'result_ttl', 'rate_limit_key',
        'rate_limit_concurrency', 'rqflow_attempts', 'dependency_ids', 'description', 'started_at', history_field)
    -- Only a task this worker still runs: one canceled, deleted or given up on meanwhile is left as it is.
    if f[1] == 'started' and f[2] == worker then
        local ttl = tonumber(f[4]) or tonumber(result_ttl_default)
        local event = {now_ms, completed_event, tonumber(f[7]) or cjson.null, worker}
        -- The result in the job hash, RQ's own field for it (which `Job.restore` reads), not a
        -- stream per task: Redis gives a stream 4.7 KB to hold one entry. The history goes in
        -- the same write.
        local done = {'status', 'finished', 'ended_at', now, 'last_heartbeat', now,
            history_field, with_event(f[11] or nil, event)}
        if value ~= '' then done[9], done[10] = result_field, value end
        redis.call('HSET', key, unpack(done))
        redis.call('ZREM', wip_prefix .. f[3], id .. ':' .. execution)
        tell(key, event, {'finished', f[9], nil, f[10]})
        local dependents = redis.call('SMEMBERS', key .. ':dependents')
        if ttl and ttl > 0 then
            redis.call('EXPIRE', key, ttl)
            -- The dependency keys exist only for a task with dependents or dependencies (most
            -- have neither: two commands saved per task).
            if #dependents > 0 then redis.call('EXPIRE', key .. ':dependents', ttl) end
            if f[8] and f[8] ~= '' and f[8] ~= '[]' then
                redis.call('EXPIRE', job_prefix .. ':' .. id .. ':dependencies', ttl)
            end
            redis.call('ZADD', finished_prefix .. f[3], now_s + ttl, id)
        end
        release(dependents)
        if f[5] and f[5] ~= '' and tonumber(f[6]) then free_slot(id, f[5], f[6]) end
        ended = ended + 1
        working = working + (tonumber(finished) - tonumber(started))
    end
end
-- The minute's count of finished tasks gets its expiry when the first end creates it. The
-- worker's own counts (RQ's successful_job_count, total_working_time) go with its heartbeat.
if ended > 0 and redis.call('INCRBY', bucket, ended) == ended then
    redis.call('EXPIRE', bucket, bucket_ttl)
end

-- Start a task popped from its queue; false if it is not there to run (canceled or deleted).
local claimed, n_claimed = {ended, tostring(working)}, 0
local function start(id)
    local key = job_prefix .. id
    local f = redis.call('HMGET', key, 'status', 'origin', 'data', 'timeout', 'rqflow_spec',
        'success_callback_name', 'failure_callback_name', 'stopped_callback_name', 'description', 'enqueued_at',
        'rqflow_attempts', history_field)
    if f[1] ~= 'queued' then return false end
    local attempt = (tonumber(f[11]) or 0) + 1
    local event = {now_ms, started_event, attempt, worker}
    -- No PERSIST: a queued task's job never has an expiry (rqflow sets no RQ `ttl`, and a retry
    -- of a finished task persists it, app.jobs.tasks). The attempt and history in the same write.
    redis.call('HSET', key, 'status', 'started', 'started_at', now, 'last_heartbeat', now, 'worker_name', worker,
        'rqflow_attempts', attempt, history_field, with_event(f[12] or nil, event))
    n_claimed = n_claimed + 1
    local execution = execution_base .. '-' .. n_claimed
    redis.call('ZADD', wip_prefix .. f[2], lease_score, id .. ':' .. execution)
    tell(key, event, {'started', f[9], f[10]})
    local callbacks = (f[6] or '') .. (f[7] or '') .. (f[8] or '')
    for _, v in ipairs({id, f[2], f[3], f[4] or '', f[5] or '', attempt, execution .. '|' .. callbacks}) do
        claimed[#claimed + 1] = v
    end
    return true
end

-- The queues in priority order. A worker woken by a queue's doorbell rings it again for the
-- next idle worker when it leaves tasks behind.
for _, queue in ipairs(queues) do
    while n_claimed < want do
        local id = redis.call('LPOP', queue_prefix .. queue)
        if not id then break end
        start(id)
    end
    if woken and redis.call('LLEN', queue_prefix .. queue) > 0 then
        redis.call('ZADD', wake_prefix .. queue, 0, 'w')
    end
end
flush()
return claimed
"""

SCRIPT = (
    release.PRELUDE
    + release.FUNCTIONS
    + f"local B = {release.ARGC}\nlocal history_field = '{keys.FIELD_HISTORY}'\n"
    + _ENGINE
)


@dataclass(frozen=True)
class Claimed:
    """A task this worker started: what its handler is called with, and where its run is kept."""

    id: str
    origin: str
    execution: str
    attempt: int
    max_attempts: int
    timeout_s: int
    task_type: str
    payload: Any
    duration_ms: int | None
    refused: str | None
    """Why the job may not run (it names anything but rqflow's entry point, or callbacks)."""
    refused_as: str = ErrorType.FORBIDDEN_JOB.value
    """The error type it then fails with (RQ's DeserializationError for data that does not decode)."""


@dataclass(frozen=True)
class Ended:
    """A run that returned: its value as JSON text, and when it started and ended (epoch s)."""

    id: str
    execution: str
    result_json: bytes
    started: float
    ended: float
    published: bool = False
    """A heartbeat published it as an RQ execution (`Engine.heartbeat`)."""


@dataclass(frozen=True)
class Running:
    """A run in progress, as a heartbeat renews it: its lease, and its RQ execution record."""

    origin: str
    id: str
    execution: str
    started: float
    """Epoch s."""


class Engine:
    """One worker's claims and ends (see the module's doc)."""

    def __init__(self, connection: Redis, queues: Sequence[str], worker_name: str, lease_s: int, result_ttl_s: int):
        self.connection = connection
        self.queues = list(queues)
        self.wake_keys = [keys.wake_key(q) for q in self.queues]
        self.worker_name = worker_name
        self.lease_s = lease_s
        self.result_ttl_s = result_ttl_s
        self.script = connection.register_script(SCRIPT)
        self._runs = 0
        self.successful = 0
        self.working_s = 0.0
        """Tasks ended well and their run time since the last heartbeat, which adds them to RQ's
        counts on the worker."""
        self._fixed = [
            StartedJobRegistry.key_template.format(""),
            FinishedJobRegistry.key_template.format(""),
            RESULT_FIELD,
            WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name),
            EventName.STARTED.value,
            EventName.COMPLETED.value,
        ]
        # RQ's execution records are "rq:execution:<job id>:<execution id>".
        self._execution_prefix = Execution("", "", connection).key.removesuffix(":")

    def step(self, ended: Sequence[Ended], want: int, woken: bool = False) -> list[Claimed]:
        """Write `ended`, then start up to `want` tasks; returns the started ones. `woken`: the
        worker was woken by a doorbell (`wait`), which it rings again if it leaves work behind."""
        now = datetime.now(timezone.utc)
        now_s = now.timestamp()
        self._runs += 1
        argv = release.args("", (), now)
        argv += [
            self.worker_name,
            now_s + self.lease_s,
            want,
            self.result_ttl_s,
            *self._fixed,
            keys.finished_bucket(now_s),
            FINISHED_BUCKET_TTL_S,
            f"{self.worker_name}-{self._runs}",
            now_s,
            self._execution_prefix,
            "1" if woken else "",
            len(self.queues),
            *self.queues,
            len(ended),
        ]
        for e in ended:
            # RQ's `result` field holds the serializer's bytes (JSON here); absent for None.
            value = b"" if e.result_json == b"null" else e.result_json
            argv += [e.id, e.execution, value, e.started, e.ended, "1" if e.published else ""]
        flat = self._run(argv)
        self.successful += int(flat[0])
        self.working_s += float(flat[1])
        return [_claimed(flat[i : i + 7]) for i in range(2, len(flat), 7)]

    def _run(self, argv: list[Any]) -> Any:
        """The script, packed by hiredis on a connection of the pool: redis-py's call path checks
        each of the step's ~40 arguments in Python and goes through its retries and observability
        hooks, a third of a worker's CPU per step. The pool still hands out only a connection
        that is open (one Redis closed in a restart is reconnected first). redis-py would also
        send a step again after a connection error, although the first may have claimed tasks;
        here the error goes to the worker's loop, and a claim whose answer was lost lapses with
        its lease."""
        pool = self.connection.connection_pool
        connection = pool.get_connection()
        packed = pack_command(("EVALSHA", self.script.sha, 0, *argv))
        try:
            try:
                connection.send_packed_command([packed])
                return connection.read_response()
            except NoScriptError:  # Redis restarted, or its scripts were flushed
                self.connection.script_load(self.script.script)
                connection.send_packed_command([packed])
                return connection.read_response()
        finally:
            pool.release(connection)  # redis-py closed it if it failed half-way

    def wait(self, timeout_s: float) -> bool:
        """Wait for a doorbell of any of the queues (app.keys.wake_key); True if one rang. Nothing
        is taken off a queue here: the next `step` claims, atomically, whatever is there. Tasks
        queued by RQ's own code ring no doorbell: an idle worker finds them when its wait times
        out (at most a second)."""
        return self.connection.bzpopmin(self.wake_keys, timeout=timeout_s) is not None

    def heartbeat(self, worker: BaseWorker, running: Sequence[Running], busy: bool) -> None:
        """The worker's heartbeat, in one round trip: its own (RQ's), its state, and for every run
        in progress the lease in RQ's started registry and RQ's execution record, so that anyone
        reading the worker (`rq info`, rq-dashboard, `/api/workers`) sees all it runs."""
        now_s = datetime.now(timezone.utc).timestamp()
        score = now_s + self.lease_s
        by_origin: dict[str, dict[str, float]] = {}
        with self.connection.pipeline(transaction=False) as pipe:
            worker.heartbeat(pipeline=pipe)
            worker.set_state(WorkerStatus.BUSY if busy else WorkerStatus.IDLE, pipeline=pipe)
            if self.successful:
                pipe.hincrby(worker.key, "successful_job_count", self.successful)
                pipe.hincrbyfloat(worker.key, "total_working_time", self.working_s)
                self.successful, self.working_s = 0, 0.0
            for run in running:
                composite = f"{run.id}:{run.execution}"
                by_origin.setdefault(run.origin, {})[composite] = score
                record = Execution(run.execution, run.id, self.connection, worker_name=self.worker_name)
                record.created_at = datetime.fromtimestamp(run.started, tz=timezone.utc)
                pipe.hset(record.key, mapping=record.serialize())
                pipe.expire(record.key, self.lease_s)
                pipe.sadd(record.worker_executions_key, composite)
            for origin, members in by_origin.items():
                pipe.zadd(StartedJobRegistry.key_template.format(origin), members, xx=True)
            pipe.execute()

    def due(self, overdue_s: float) -> tuple[list[str], list[str]]:
        """In one round trip: the queues with a run whose lease lapsed (its worker died), and those
        with a retry due more than `overdue_s` ago (no RQ scheduler moved it)."""
        now_s = datetime.now(timezone.utc).timestamp()
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.zrangebyscore(StartedJobRegistry.key_template.format(queue), "-inf", now_s, start=0, num=1)
            for queue in self.queues:
                scheduled = ScheduledJobRegistry.key_template.format(queue)
                pipe.zrangebyscore(scheduled, 0, now_s - overdue_s, start=0, num=1)
            found = pipe.execute()
        n = len(self.queues)
        lapsed = [queue for queue, ids in zip(self.queues, found[:n], strict=True) if ids]
        overdue = [queue for queue, ids in zip(self.queues, found[n:], strict=True) if ids]
        return lapsed, overdue


def _claimed(row: list[Any]) -> Claimed:
    task_id, origin, data, timeout, spec_raw, attempt, tail = row
    execution, _, callbacks = as_text(tail).partition("|")
    task_id, origin = as_text(task_id), as_text(origin)
    refused = f"job {task_id} names callbacks; rqflow runs no callbacks" if callbacks else None
    task_type, payload, duration_ms, refused_as = "", None, None, ErrorType.FORBIDDEN_JOB.value
    try:
        raw = bytes(data or b"")
        if not raw.startswith(b"["):  # RQ compresses only data past a size; JSON data opens a list
            with contextlib.suppress(zlib.error):
                raw = zlib.decompress(raw)
        func_name, instance, args, kwargs = codec.loads(raw)
        # Children call the handler with the kwargs alone, so positional arguments are refused too.
        refused = forbidden(task_id, func_name, instance) or (
            f"job {task_id} passes positional arguments to {func_name!r}" if args else refused
        )
        task_type = str(kwargs.get("task_type", ""))
        payload = kwargs.get("payload", {})
        duration_ms = kwargs.get("duration_ms")
        spec = codec.loads(spec_raw) if spec_raw else {}
    except (BadJSON, ValueError, TypeError, AttributeError) as error:
        refused, spec, refused_as = f"job {task_id}'s data does not decode: {error}", {}, "DeserializationError"
    return Claimed(
        id=task_id,
        origin=origin,
        execution=execution,
        attempt=int(attempt),
        max_attempts=int(spec.get("max_attempts") or 1),
        timeout_s=int(timeout or 0),
        task_type=task_type,
        payload=payload,
        duration_ms=duration_ms,
        refused=refused,
        refused_as=refused_as,
    )
