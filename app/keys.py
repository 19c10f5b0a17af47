"""Every Redis key, queue name and job field rqflow adds to what RQ keeps, each with why it exists.

RQ's own keys (`rq:job:<id>`, `rq:queue:<name>`, registries) are RQ's; we only name here what we add.
"""

from __future__ import annotations

from app.defaults import FINISHED_BUCKET_S

PREFIX = "rqflow"

QUEUES: tuple[str, ...] = ("high", "default", "low")
"""One RQ queue per priority; workers listen on them in this order, so `high` is always served first."""

ENTRY_POINT = "workers.entry.run_task"
"""The only function an rqflow job may name. Workers refuse every other callable."""

TASK_INDEX = f"{PREFIX}:tasks"
"""Sorted set (all scores 0, ordered by member) of `<created µs>:<task id>`: newest-first listing
with a cursor that never skips or repeats, as RQ keeps no index of all jobs."""


def type_index(task_type: str) -> str:
    """Like TASK_INDEX but for one task type, so `?type=` filters without a scan."""
    return f"{TASK_INDEX}:type:{task_type}"


def schedule_runs_index(schedule_id: str) -> str:
    """Like TASK_INDEX but for the runs of one schedule, so `?schedule_id=` filters without a scan."""
    return f"{TASK_INDEX}:schedule:{schedule_id}"


SCHEDULE_INDEX = f"{PREFIX}:schedules"
"""Sorted set of schedule ids by creation time (ms), for listing."""


def schedule_key(schedule_id: str) -> str:
    """Hash of one schedule: its definition (JSON), run count, last and next fire times."""
    return f"{PREFIX}:schedule:{schedule_id}"


HELD = f"{PREFIX}:held"
"""Sorted set of tasks held for their start time (id -> due ms): counts SCHEDULED tasks without
a scan, and lets the repair pass find one whose timer was lost."""

TIMERS = "rq:scheduler:scheduled_jobs"
"""rq-scheduler's own sorted set. rqflow puts one-shot timers in it (score = due time in whole
seconds, as rq-scheduler compares them) and the `rqscheduler` process fires them."""

TIMER_QUEUE = "rqflow-timers"
"""Origin of timer jobs: the queue rq-scheduler "enqueues" them to, which FireQueue intercepts."""

TIMER_FUNC = "scheduler.fire.fire"
"""The function a timer job names; no worker ever runs it (FireQueue fires timers itself)."""


SWEEP_LOCK = f"{PREFIX}:lock:dependency-sweep"
"""Held by the one worker that runs the dependency sweep in a maintenance pass, so N workers do
not all walk every pending task."""


# Fields rqflow adds to RQ's job hash. RQ's `Job.save()` writes only its own fields with HSET,
# so these survive every save RQ makes, and vanish with the job when it expires or is deleted.
FIELD_ATTEMPTS = "rqflow_attempts"
"""How many times a worker started the task (HINCRBY at each start)."""
FIELD_ERROR = "rqflow_error"
"""JSON `{type, message}` of the last failed attempt."""
FIELD_FINGERPRINT = "rqflow_fingerprint"
"""Hash of the normalized submission, to tell an idempotent repeat from a conflicting one."""
FIELD_SPEC = "rqflow_spec"
"""JSON of the task's fields that RQ does not keep (name, priority, retry policy, ...)."""
FIELD_HISTORY = "rqflow_history"
"""The task's events after its submission, one JSON array a line, newest last (app.history)."""


def rate_limit_key(task_type: str) -> str:
    """RQ RateLimit key of a task type: RQ keeps `rq:rl:<key>` and the slots under it."""
    return f"type:{task_type}"


def history_key(task_id: str) -> str:
    """Where a task's events were kept before they moved into its job hash (FIELD_HISTORY): a
    stream of its own, 4.7 KB for two events. Read, and deleted with the task, for records written
    then."""
    return f"{PREFIX}:history:{task_id}"


def finished_bucket(epoch_s: float) -> str:
    """Counter of tasks that ended (any way) in one FINISHED_BUCKET_S window; expires on its own."""
    return f"{PREFIX}:finished:{int(epoch_s) // FINISHED_BUCKET_S}"


MEMORY_SAMPLES = f"{PREFIX}:memory"
"""List of `<epoch s>:<used_memory>` readings, newest first, that the workers' maintenance pass
takes: the growth `/health` and `/api/stats` forecast from."""


def rate_limit_bucket(client: str) -> str:
    """A client's GCRA state for the API's rate limit (app.jobs.ratelimit): its next theoretical
    arrival time, expiring when it has been idle for the limit's period."""
    return f"{PREFIX}:ratelimit:{client}"


PRUNE_CURSORS = f"{PREFIX}:retention:cursors"
"""Hash: for each list index, the last entry the retention pass checked (app.jobs.retention)."""

CLAIMS = f"{PREFIX}:claims"
"""Sorted set of task ids being written by a submission now, scored by when the claim lapses: a
concurrent submission of the same id cannot create it twice."""


REPAIRS = f"{PREFIX}:repairs"
"""Hash of counters, one field per kind of repair the reconciler made (shown in /api/stats)."""

REPAIR_CURSOR = f"{PREFIX}:repair:cursor"
"""Where the reconciler's walk over the task index stopped; it goes on from there next pass."""

UNREADABLE = f"{PREFIX}:unreadable"
"""Set of `task:<id>` and `schedule:<id>` records a read found undecodable (and left out of a list):
counted in /api/stats so that a damaged record is seen, not silently missing."""


EVENTS = f"{PREFIX}:events"
"""Stream of what happens to tasks, schedules and workers (app.jobs.events), written in the same step
as the change it tells of; `GET /api/events` reads it. Each entry holds a JSON array of events."""

METRICS = f"{PREFIX}:metrics"
"""Hash of the counters and histogram buckets that tasks' events add to, whichever process on
whichever machine makes them (app.jobs.metrics reads it for `/metrics`)."""

HTTP_METRICS = f"{PREFIX}:metrics:http"
"""Hash of the API's request counts and durations, which each API process adds to once a second."""


def wake_key(queue: str) -> str:
    """A queue's doorbell: a sorted set of one member, added whenever a task is pushed onto the
    queue, which an idle engine worker waits on (BZPOPMIN) instead of popping the queue itself.
    Waiting on the queue with BLPOP took the task out of Redis before it was started, and a
    worker killed in that instant lost it; the doorbell can be lost, the task cannot."""
    return f"{PREFIX}:wake:{queue}"


def lease_sweep_lock(queue: str) -> str:
    """Held for a few seconds by the one worker retrying or failing a queue's runs whose lease
    lapsed, so that no two handle the same dead worker's task."""
    return f"{PREFIX}:lock:lapsed:{queue}"
