"""A task's fields are declared once (TaskSpec, Task, TaskChanges in app.model); storage, reading
back, showing and changing follow the declaration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone

import pytest

from app.jobs import spec as spec_fields
from app.model import CALL_FIELDS, TYPE_DEFAULTS, Backoff, Edge, Priority, Task, TaskChanges, TaskSpec
from app.registry import TaskType

EVERY_FIELD_SET = TaskSpec(
    type="t",
    id="a",
    payload={"k": [1, 2.5, "x"]},
    duration_ms=5,
    dependencies=(Edge("p"), Edge("q", allow_failure=True)),
    priority=Priority.HIGH,
    run_at=datetime(2031, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc),
    delay_ms=None,
    max_attempts=4,
    backoff=Backoff(initial_ms=10, factor=3.0, max_ms=99, jitter=False),
    timeout_ms=7000,
    name="named",
    schedule_id="s1",
)


def test_the_declarations_agree() -> None:
    """Every TaskSpec field is either RQ's (the id, the type, what the handler is called with) or
    kept in the spec; Task shows each of them; a change names only fields a spec has."""
    spec_names = {f.name for f in fields(TaskSpec)}
    assert spec_names == {"id", "type", *CALL_FIELDS, *spec_fields.STORED}
    assert spec_names <= {f.name for f in fields(Task)}
    assert {f.name for f in fields(TaskChanges)} <= spec_names
    assert set(TYPE_DEFAULTS) <= set(spec_fields.STORED) & {f.name for f in fields(TaskType)}


def test_every_stored_field_reads_back_as_it_was_given() -> None:
    values = {name: getattr(EVERY_FIELD_SET, name) for name in spec_fields.STORED}
    # Every field but delay_ms (run_at excludes it) is set, so a value lost on the way shows.
    assert [n for n, v in values.items() if v is None] == ["delay_ms"]
    assert spec_fields.decode(spec_fields.encode(values)) == values
    for name, value in values.items():
        assert spec_fields.encode_one(name, value) == spec_fields.encode(values).get(name)


def test_fields_at_the_value_an_absent_one_reads_as_are_not_stored() -> None:
    task_type = TaskType("t", handler=lambda ctx: None, max_attempts=1)
    values = spec_fields.resolved(TaskSpec(type="t"), task_type)
    stored = spec_fields.encode(values)
    # What every task has (its resolved timeout) stays; None, defaults and empty lists go.
    assert stored == {"timeout_ms": task_type.timeout_ms}
    assert spec_fields.decode(stored) == values


def test_the_type_fills_in_what_a_submission_leaves_out() -> None:
    task_type = TaskType("t", handler=lambda ctx: None, max_attempts=9, timeout_ms=1234)
    values = spec_fields.resolved(TaskSpec(type="t"), task_type)
    assert (values["max_attempts"], values["timeout_ms"], values["backoff"]) == (9, 1234, task_type.backoff)
    assert spec_fields.resolved(EVERY_FIELD_SET, task_type)["max_attempts"] == 4


def test_a_record_missing_fields_reads_with_defaults() -> None:
    values = spec_fields.decode({})
    assert values["priority"] is Priority.DEFAULT
    assert values["dependencies"] == ()
    assert values["backoff"] == Backoff()


def test_a_field_without_a_stored_form_is_refused_when_declared() -> None:
    """A new field of a kind the spec cannot store fails at import, not in production."""

    @dataclass(frozen=True)
    class Unknown:
        x: int = 0

    with pytest.raises(TypeError, match="Unknown"):
        spec_fields._codecs(Unknown)
    assert spec_fields._codecs(int | None) == (None, None)
