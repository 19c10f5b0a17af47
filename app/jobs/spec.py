"""rqflow's part of a job hash (its `spec` field): every field of a TaskSpec that RQ does not keep.

RQ keeps the task's id (the job id) and what its handler is called with (the job's kwargs,
`model.CALL_FIELDS`); every other field TaskSpec declares is kept here, encoded and decoded by
what its annotation says. So a field added to TaskSpec (and to Task) is stored, read back, shown
and changed with no edit in this package.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from operator import attrgetter
from typing import Any, Union, get_args, get_origin, get_type_hints

from app.graph import edges_from_spec
from app.model import CALL_FIELDS, TYPE_DEFAULTS, Backoff, Edge, TaskSpec

STORED: tuple[str, ...] = tuple(f.name for f in fields(TaskSpec) if f.name not in ("id", "type", *CALL_FIELDS))
"""The TaskSpec fields the spec keeps, in declaration order."""

_MISSING: dict[str, Any] = {
    **{f.name: f.default for f in fields(TaskSpec) if f.name in STORED},
    # What a record written before a field was resolved from its type reads as.
    "max_attempts": 1,
    "backoff": Backoff(),
    "timeout_ms": 0,
}

Codec = Callable[[Any], Any]


def _edges_out(edges: Iterable[Edge]) -> list[dict[str, Any]]:
    return [{"id": e.parent, "allow_failure": e.allow_failure} for e in edges]


def _codecs(annotation: Any) -> tuple[Codec | None, Codec | None]:
    """How a value of this annotation is written to JSON and read back (None: as it is)."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is tuple and get_args(annotation)[0] is Edge:
        return _edges_out, edges_from_spec
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return (lambda v: v.value), annotation
        if issubclass(annotation, datetime):
            return datetime.isoformat, datetime.fromisoformat
        if annotation is Backoff:
            return Backoff.as_dict, (lambda raw: Backoff(**raw))
        if is_dataclass(annotation):
            raise TypeError(f"no stored form for {annotation.__name__}: add one to app.jobs.spec")
    return None, None


_HINTS = get_type_hints(TaskSpec)
_CODECS: dict[str, tuple[Codec | None, Codec | None]] = {n: _codecs(_HINTS[n]) for n in STORED}


_STORED_OF = attrgetter(*STORED)
_ENCODERS = tuple((name, write, _MISSING[name]) for name, (write, _) in _CODECS.items())


def resolved(spec: TaskSpec, task_type: Any) -> dict[str, Any]:
    """The stored fields of `spec`, with those it leaves out taken from its task type."""
    values = dict(zip(STORED, _STORED_OF(spec), strict=True))
    for name in TYPE_DEFAULTS:
        if values[name] is None:
            values[name] = getattr(task_type, name)
    return values


def encode(values: dict[str, Any]) -> dict[str, Any]:
    """Stored fields (as `resolved` gives them) as the JSON kept in the job hash. A field whose
    value is what an absent one reads as (`decode`) is left out: most of a task's fields are
    their defaults, and every byte is kept once per task for as long as the task is."""
    out = {}
    for name, write, missing in _ENCODERS:
        value = values[name]
        if value is missing or value == missing:
            continue
        out[name] = value if write is None or value is None else write(value)
    return out


def encode_one(name: str, value: Any) -> Any:
    """One stored field's JSON (for a change to one field)."""
    write = _CODECS[name][0]
    return value if write is None or value is None else write(value)


def decode(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored fields of a job hash's spec as values, defaults in place of what is absent."""
    out = {}
    for name, (_, read) in _CODECS.items():
        raw = stored.get(name)
        out[name] = _MISSING[name] if raw is None else raw if read is None else read(raw)
    return out


def decode_one(stored: dict[str, Any], name: str) -> Any:
    """One stored field of a job hash's spec as its value (its default when absent)."""
    raw = stored.get(name)
    read = _CODECS[name][1]
    return _MISSING[name] if raw is None else raw if read is None else read(raw)
