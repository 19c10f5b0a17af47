"""Each task's history: a capped Redis stream of its events, oldest first, kept as long as the task."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from app import codec, keys
from app.clock import from_ms
from app.defaults import MAX_EVENTS

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


def record(
    target: Any,
    task_id: str,
    event: EventName,
    *,
    attempt: int | None = None,
    worker: str | None = None,
    error: dict[str, str] | None = None,
    detail: str | None = None,
    ttl_s: int | None = None,
) -> None:
    """Append an event on `target` (a pipeline, so it commits with the change it describes).

    Terminal events start the stream's expiry, so it lives exactly as long as the task's own record
    (a task brought back by a retry or re-arm gets PERSIST where that happens).
    """
    fields: dict[str, str | int] = {"event": event.value, "at_ms": int(time.time() * 1000)}
    if attempt:
        fields["attempt"] = attempt
    if worker:
        fields["worker"] = worker
    if error:
        fields["error"] = json.dumps({"type": error.get("type", ""), "message": error.get("message", "")})
    if detail:
        fields["detail"] = detail
    key = keys.history_key(task_id)
    target.xadd(key, fields, maxlen=MAX_EVENTS, approximate=False)
    if event in TERMINAL_EVENTS and ttl_s:
        target.expire(key, ttl_s)


def events(entries: list[Any] | None) -> list[Event]:
    """The events of a task's stream, from what XRANGE returned for it. An entry that does not
    decode (written by hand or by another version) is left out with a warning."""
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
