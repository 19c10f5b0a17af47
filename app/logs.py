"""Logging for every rqflow process: readable lines by default, one JSON object a line with
RQFLOW_LOG_FORMAT=json, for log search.

A line about a task carries what applies of `task_id`, `type`, `attempt`, `worker`,
`duration_ms` and `error` (passed as `extra=`); a line written while the API answers a request
carries its `request_id`. Payloads, results and keys are never logged: only those named fields
and the message are written.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being answered (the API sets it), for every line logged meanwhile."""

FIELDS = ("task_id", "type", "attempt", "worker", "duration_ms", "error", "request_id")
"""What a line may carry besides its message."""

OWN_HANDLERS = (
    "rq",
    "rq.worker",
    "rq.scheduler",
    "rq_scheduler",
    "rq_scheduler.scheduler",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)
"""Loggers that RQ's, rq-scheduler's and uvicorn's command lines give handlers of their own: those
are dropped so that every line goes through the one handler, in the one format."""


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class _NoResults(logging.Filter):
    """RQ's worker logs every job's return value at DEBUG (`Worker %s: result: %r`, rq/worker/base.py);
    a result is the user's data, never the log's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "rq.worker" and str(record.msg).startswith("Worker %s: result:") and record.args:
            record.args = (*tuple(record.args)[:1], "<not logged>")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(
            f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None) is not None
        )
        return f"{text} [{extra}]" if extra else text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """rqflow's handler, told apart from others (a test runner's) when configured again."""


def configure(level: str = "INFO", form: str = "text") -> None:
    """rqflow's one handler on the root logger, in `form` ("text" or "json"); idempotent."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    handler.addFilter(_WithRequestId())
    handler.addFilter(_NoResults())
    root = logging.getLogger()
    for ours in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(ours)
    root.addHandler(handler)
    root.setLevel(level)
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
