"""One typed Settings object, read from `RQFLOW_*` environment variables at the entry points."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.defaults import MAX_MS

EMBEDDED_REDIS_PORT = 6399
"""Port of the Redis that `make run` starts; not 6379, so a system Redis is never used by mistake."""


class TypeLimits(BaseModel):
    """Per-type overrides of a task type's defaults, from `RQFLOW_TYPE_LIMITS`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_ms: int | None = Field(default=None, ge=1, le=MAX_MS)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an rqflow process can be told. Each field is `RQFLOW_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="RQFLOW_", frozen=True, extra="ignore")

    redis_url: str | None = None
    """`redis://`, `rediss://` or `unix://` URL. Unset: the embedded Redis that `make run` starts."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_processes: int = Field(default=1, ge=1, le=64)
    """API processes serving the port (uvicorn's workers). One does as well as two on two cores
    next to two workers (`python -m bench.submit`); more pay where the API has cores of its own."""
    workers: int = Field(default=2, ge=1)
    api_keys: Annotated[list[str], NoDecode] = []
    allow_public_without_keys: bool = False
    """Bind beyond loopback with no API keys. Off: the API refuses to start that way."""
    type_limits: dict[str, TypeLimits] = {}
    task_modules: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    max_batch_body_bytes: int = Field(default=33_554_432, ge=1)
    """For `POST /api/tasks/batch`: 10,000 tasks of up to ~3 KB each."""
    result_ttl_s: int = Field(default=604_800, ge=1)
    """How long a COMPLETED or CANCELED task (with its result and history) is kept."""
    failed_ttl_s: int = Field(default=2_592_000, ge=1)
    """How long a FAILED task is kept: longer, since someone has to look at it."""
    rate_limit: str | None = None
    """`100/s`, `6000/min`, `50000/h`: per API key, or per client address where no keys are set;
    a batch counts each of its tasks. Unset: no limit."""
    max_unfinished: int = Field(default=1_000_000, ge=0)
    """Tasks stored and not finished (PENDING, SCHEDULED, QUEUED) past which submissions get 503
    and store nothing (0: no cap): a client that piles up work faster than workers run it is
    told so long before Redis is full."""
    max_payload_bytes: int = Field(default=262_144, ge=0)
    """One task's payload, as JSON; larger gets 413 (0: no cap but the body limit)."""
    keep_finished: int = Field(default=100_000, ge=1)
    """At most this many tasks of each ended status (COMPLETED, FAILED, CANCELED) are kept, the
    oldest going first, whatever their TTL (BullMQ's removeOnComplete/removeOnFail count): at
    ~1.5 KB a task, 150 MB of Redis a status at most."""
    http_allowed_hosts: Annotated[list[str], NoDecode] = []
    """Hosts the built-in `http_request` type may call; empty means it may call none."""
    var_dir: Path = Path("var")
    """Where the embedded Redis keeps its data and `make run` its process-manager files."""
    embedded_redis_port: int = Field(default=EMBEDDED_REDIS_PORT, ge=1, le=65535)
    processes: Annotated[list[str], NoDecode] = ["web", "worker", "scheduler"]
    """Which Procfile processes `make run` starts (add `dashboard` for rq-dashboard)."""
    scheduler_interval_s: float = Field(default=0.25, gt=0, le=1)
    """How often `rqscheduler` looks for due timers (the Procfile passes it as --interval)."""
    heartbeat_s: int = Field(default=2, ge=1, le=60)
    """How often a busy worker proves it is alive (RQ's job monitoring interval). One heartbeat
    renews the leases of all of an engine worker's tasks at once, so a short one is cheap."""
    worker_lost_after_s: int = Field(default=5, ge=3)
    """A running task whose worker stopped proving it is alive this long is re-run (or failed):
    with the defaults, an engine worker's tasks are back in play at most 8 s after it died."""
    maintenance_s: int = Field(default=10, ge=1)
    """How often workers run RQ's maintenance and rqflow's repairs (RQ's default is 600 s)."""
    shutdown_grace_s: int = Field(default=25, ge=0)
    """On SIGTERM a worker lets its running task finish this long, then requeues it."""
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    """Tasks one engine worker (workers.engine.EngineWorker) runs at once, each in a child process
    of its own. The default, one per core, measured best for CPU-bound tasks; tasks that mostly
    wait (I/O, sleeps) want more."""
    child_max_tasks: int = Field(default=10_000, ge=1)
    """An engine child is replaced after this many tasks (what leaks in task code stays bounded)."""
    child_max_memory_mb: int = Field(default=1024, ge=16)
    """An engine child whose resident memory passes this after a task is replaced."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Any case (`debug` too); every process's level, RQ's worker lines included."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object a line (app.logs), for log search; `text`: readable lines."""

    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins (`https://console.example.com`) whose pages may call the API from a browser; none
    by default, and then no CORS headers are sent."""

    _csv = field_validator(
        "api_keys", "task_modules", "http_allowed_hosts", "processes", "cors_origins", mode="before"
    )(_split_csv)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; call only from entry points and pass the result on."""
    return Settings()
