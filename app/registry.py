"""Task types: a handler registered by a decorator with its defaults, and the registry that holds them.

Modules that define types are imported by name (built-ins plus `RQFLOW_TASK_MODULES`); the API and
the workers load the same registry, so both agree on what exists and on each type's defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from app.errors import UnknownTaskType
from app.model import Backoff
from app.settings import Settings, TypeLimits

SECRET_SETTINGS = frozenset({"api_keys", "redis_url"})
"""Settings no task handler may read."""

BUILTIN_MODULES: tuple[str, ...] = ("workers.builtin",)
"""Modules whose types every rqflow process registers, referred to by name so the core never
imports handler code."""


@dataclass(frozen=True)
class TaskContext:
    """What a handler learns about the run it is part of."""

    task_id: str
    type: str
    attempt: int
    """1 on the first run; a handler can tell a retry (or a re-run after a lost worker) by it."""
    max_attempts: int
    duration_ms: int | None
    settings: Mapping[str, Any]
    """The settings the type declared it reads (`task_type(settings=...)`), and no others: a
    handler never sees the API keys or the Redis URL."""


Handler = Callable[[dict[str, Any], TaskContext], Any]


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Handler
    max_attempts: int = 3
    timeout_ms: int = 300_000
    backoff: Backoff = field(default_factory=Backoff)
    concurrency: int | None = None
    """Most tasks of this type running at once across the whole cluster; None: no limit."""
    description: str = ""
    settings: tuple[str, ...] = ()
    """Names of the Settings fields its handler reads (see TaskContext.settings)."""

    def settings_for_handler(self, settings: Settings) -> Mapping[str, Any]:
        return MappingProxyType({name: getattr(settings, name) for name in self.settings})

    def with_limits(self, limits: TypeLimits) -> TaskType:
        return replace(
            self,
            max_attempts=limits.max_attempts or self.max_attempts,
            timeout_ms=limits.timeout_ms or self.timeout_ms,
            concurrency=limits.concurrency or self.concurrency,
        )


_declared: dict[str, TaskType] = {}
"""Every type declared so far in this process, in the order their modules were imported."""


def task_type(
    name: str,
    *,
    max_attempts: int = 3,
    timeout_ms: int = 300_000,
    backoff: Backoff | None = None,
    concurrency: int | None = None,
    settings: Iterable[str] = (),
) -> Callable[[Handler], Handler]:
    """Declare the decorated function as the handler of task type `name`.

    The handler is called as `handler(payload, context)` and returns a JSON-serializable result;
    `context.settings` holds the Settings fields named in `settings` (never a secret).
    """
    if not 1 <= max_attempts <= 100:
        raise ValueError("max_attempts must be within 1..100")
    wanted = tuple(settings)
    unknown = sorted(set(wanted) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"task type {name!r} asks for settings that do not exist: {', '.join(unknown)}")
    secret = sorted(set(wanted) & SECRET_SETTINGS)
    if secret:
        raise ValueError(f"task type {name!r} may not read secret settings: {', '.join(secret)}")

    def register(handler: Handler) -> Handler:
        existing = _declared.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"task type {name!r} is declared twice")
        _declared[name] = TaskType(
            name=name,
            handler=handler,
            max_attempts=max_attempts,
            timeout_ms=timeout_ms,
            backoff=backoff or Backoff(),
            concurrency=concurrency,
            description=(handler.__doc__ or "").strip().split("\n")[0],
            settings=wanted,
        )
        return handler

    return register


class Registry(Mapping[str, TaskType]):
    """The task types one process knows, with `RQFLOW_TYPE_LIMITS` already applied."""

    def __init__(self, types: Iterable[TaskType]) -> None:
        self._types = {t.name: t for t in types}

    def __getitem__(self, name: str) -> TaskType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def get_type(self, name: str) -> TaskType:
        """The type named `name`; raises UnknownTaskType when there is none."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTaskType(name, known=sorted(self._types)) from None


def load_registry(modules: Iterable[str] = (), limits: Mapping[str, TypeLimits] | None = None) -> Registry:
    """Import the built-in and the named modules, then build the registry of what they declared."""
    for module in (*BUILTIN_MODULES, *modules):
        importlib.import_module(module)
    limits = limits or {}
    unknown = sorted(set(limits) - set(_declared))
    if unknown:
        raise ValueError(f"RQFLOW_TYPE_LIMITS names unknown task types: {', '.join(unknown)}")
    return Registry(t.with_limits(limits[t.name]) if t.name in limits else t for t in _declared.values())
