"""Every tuning constant of the core, each with its reason: limits on input, budgets of work per
request or pass, lengths of locks and claims. What an operator sets is in Settings instead."""

from __future__ import annotations

# -- Inputs -----------------------------------------------------------------------------------------

MAX_MS = 10 * 365 * 86_400_000
"""Ten years, the most any duration or delay may be: past it a due time overflows what dates can
hold, and a timeout overflows the worker's alarm; such a value is a mistake anyway."""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have (the body itself is level 1)."""

MAX_INT_DIGITS = 100
"""Longest integer a request may hold, in digits. Integers of any size up to it are stored and read
back exactly (Python's own integers; the encoder falls back where orjson stops at 64 bits); a longer
one is refused rather than costing the parser quadratic time."""

# -- Submission -------------------------------------------------------------------------------------

MAX_BATCH = 10_000
"""Most tasks one batch may hold: a 10,000-task DAG is checked and written in well under a second."""
MAX_NDJSON_BATCH = 100_000
"""An NDJSON batch is validated as it streams in and answered with a summary, so it may hold more."""

SUMMARY_OVER = 1_000
"""A batch of more tasks is answered with a summary (counts by status) unless the client asks for
the tasks (`Prefer: return=representation` or `return=minimal`)."""

CLAIM_TTL_MS = 30_000
"""A claim outlives any write it precedes (a 10,000-task batch writes in well under a second); one
left by a crashed API process lapses by itself, and the same submission then goes through."""

CANCEL_ATTEMPTS = 200
"""How often one cancel reads a task's state again when it changed under it (queued, taken, running,
ended) before it gives up with a 409."""

CANCEL_RETRY_S = 0.005
"""How long the API waits, without holding a thread, before asking again to cancel a task a worker
took from its queue that instant (it is STARTED within milliseconds)."""

TAKEN_WAIT_S = 1.0
"""How long the API keeps asking (every CANCEL_RETRY_S) before a task taken from its queue is
given up on with a 409; its own budget, not CANCEL_ATTEMPTS, which bounds the reads inside one
cancel."""

DELETE_WAIT_S = 10.0
"""How long `DELETE` of a running task waits for it to stop before removing its record anyway."""

DELETE_POLL_S = 0.05
"""How often, meanwhile, it looks whether the task has stopped."""

# -- Listing ----------------------------------------------------------------------------------------

MAX_LIST_LIMIT = 1000
"""Largest page `GET /api/tasks` serves."""

SCAN_BUDGET = 5000
"""Most index entries one filtered list request examines; past it the page ends early with a
cursor, so a rare status never turns a request into a scan of every task."""

# -- History and stats ------------------------------------------------------------------------------

MAX_EVENTS = 100
"""Per task; a task retried or re-armed forever keeps its newest events."""

EVENT_ENTRIES_KEPT = 10_000
"""Entries the event stream keeps (about: Redis trims whole nodes); an entry holds the events of
one step, at most EVENTS_PER_ENTRY. A client resuming from an older one is told it missed some."""
EVENTS_PER_ENTRY = 100
"""Most events one stream entry holds: a 10,000-task batch is told in 100 entries, not one."""
EVENTS_KEEPALIVE_S = 15
"""How often `GET /api/events` sends a comment line when nothing happens, so proxies keep it open."""

HISTOGRAM_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
"""Upper bounds of the histograms of wait, run and lag times (seconds), and of request durations."""

FINISHED_BUCKET_S = 10
"""Width of the counters of finished tasks behind `/api/stats` throughput."""

WINDOW_S = 60
"""The window `/api/stats` reports throughput over."""

FINISHED_BUCKET_TTL_S = 120
"""How long a counter of finished tasks lives: twice the window `/api/stats` reads."""

UNREADABLE_SHOWN = 20
"""How many ids of unreadable records `/api/stats` lists (it counts them all)."""

MEMORY_SAMPLES = 90
"""Redis memory readings kept for the forecast (one a maintenance pass: 15 minutes at 10 s)."""
FORECAST_WINDOW_S = 600
"""The growth of Redis's memory is measured over this long (at least a minute of it)."""
MEMORY_WARN_FRACTION = 0.8
"""`/health` warns past this share of `maxmemory`..."""
MEMORY_WARN_FULL_IN_S = 86_400
"""... or when the memory's growth would reach it within this long."""

# -- Storage ----------------------------------------------------------------------------------------

SMALL_DATA = 512
"""Job data up to this size is stored as is: zlib would set up a 32 KiB window to save a few
dozen bytes, the largest single cost of a job in a batch. RQ compresses what it writes and reads
both (`Job.restore` takes data that does not inflate as it is; JSON never starts like zlib)."""

# -- The reconciler ---------------------------------------------------------------------------------

LOST_AFTER_S = 30
"""A queued task is only suspected lost after this long, so a pop in progress is never mistaken."""

WALK_BUDGET = 2000
"""Index entries one pass examines; the walk goes on from there in the next pass."""

SEARCH_BUDGET = 100
"""Queue searches (LPOS, linear in the queue's length) one pass may make."""

# -- Locks and clients ------------------------------------------------------------------------------

MAINTENANCE_LOCK_S = 60
"""How long the worker that cleans RQ's registries holds the lock: RQ's own 899 s would stop every
cleanup (and so the rescue of dead workers' tasks) for 15 minutes after a worker died holding it."""

REDIS_CONNECT_TIMEOUT_S = 2
"""A client gives up connecting this soon when Redis is away, so a request gets a 503, not a hang."""

REDIS_SOCKET_TIMEOUT_S = 5
"""Longest one Redis reply may take before the request fails (and may be retried)."""

REDIS_HEALTH_CHECK_S = 30
"""An idle connection is checked before use after this long, so a restarted Redis is noticed."""

TIMER_MAX_EARLY_S = 1.0
"""How early rq-scheduler hands over a timer at most (it compares whole seconds)."""
