from __future__ import annotations

import random
from dataclasses import FrozenInstanceError

import pytest

from app.model import Backoff, Priority, TaskSpec, TaskStatus, assemble, assembler


def test_terminal_statuses() -> None:
    assert {s for s in TaskStatus if s.is_terminal} == {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED}


def test_backoff_is_exponential_and_capped() -> None:
    backoff = Backoff(initial_ms=1000, factor=2, max_ms=5000, jitter=False)
    assert [backoff.delay_ms(n) for n in range(1, 6)] == [1000, 2000, 4000, 5000, 5000]


def test_jitter_stays_between_half_and_all_of_the_nominal_wait() -> None:
    backoff = Backoff(initial_ms=1000, factor=2, max_ms=300_000, jitter=True)
    rng = random.Random(7)
    waits = [backoff.delay_ms(3, rng) for _ in range(500)]
    assert all(2000 <= w <= 4000 for w in waits)
    assert max(waits) - min(waits) > 1000  # it really spreads


def test_fingerprint_is_stable_and_sensitive() -> None:
    spec = TaskSpec(type="t", id="a", payload={"b": 1, "a": 2}, priority=Priority.HIGH)
    assert (
        spec.fingerprint() == TaskSpec(type="t", id="a", payload={"a": 2, "b": 1}, priority=Priority.HIGH).fingerprint()
    )
    assert (
        spec.fingerprint() != TaskSpec(type="t", id="a", payload={"a": 2, "b": 2}, priority=Priority.HIGH).fingerprint()
    )


def test_fingerprints_stay_what_stored_tasks_were_given() -> None:
    """Idempotent repeats compare against fingerprints stored by earlier versions: the hash of a
    submission must not change when the code that computes it does."""
    from datetime import datetime, timezone

    from app.model import Edge

    full = TaskSpec(
        type="t",
        id="a",
        payload={"b": [1, {"c": 2}]},
        duration_ms=5,
        dependencies=(Edge("p"), Edge("q", True)),
        priority=Priority.HIGH,
        run_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
        max_attempts=2,
        backoff=Backoff(10, 3.0, 100, False),
        timeout_ms=7,
        name="n",
        schedule_id="s",
    )
    assert full.fingerprint() == "2d9f9cd9c810f6decb5646da1d1cc777c52aebe5d730f74329d8f50ea4746d15"
    assert TaskSpec(type="t").fingerprint() == "12ff1a2a2fbff518464fed742b89d455f12a11f2ec5f1d3326aa3def9d845ad7"


def test_assemble_makes_the_same_frozen_instance_as_the_constructor() -> None:
    made = assemble(TaskSpec, {"type": "t", "id": "a", "priority": Priority.HIGH})
    assert made == TaskSpec(type="t", id="a", priority=Priority.HIGH)
    assert hash(made.dependencies) == hash(())
    with pytest.raises(FrozenInstanceError):
        made.id = "b"  # type: ignore[misc]
    # A field with a default factory gets a fresh value each time, as with the constructor.
    assert made.payload == {} and made.payload is not assemble(TaskSpec, {"type": "t"}).payload


def test_assemble_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(TypeError, match=r"unknown fields \['kind'\], missing fields \['type'\]"):
        assemble(TaskSpec, {"kind": "t"})


def test_an_assembler_makes_what_assemble_makes_and_checks_its_fields_once_made() -> None:
    build = assembler(TaskSpec, ("type", "id", "priority"))
    made = build(["t", "a", Priority.HIGH])
    assert made == assemble(TaskSpec, {"type": "t", "id": "a", "priority": Priority.HIGH})
    assert made.payload == {} and made.payload is not build(["t", None, Priority.LOW]).payload
    with pytest.raises(FrozenInstanceError):
        made.id = "b"  # type: ignore[misc]
    with pytest.raises(ValueError):  # values for other fields than it was made for
        build(["t", "a"])
    with pytest.raises(TypeError, match=r"unknown fields \['kind'\], missing fields \['type'\]"):
        assembler(TaskSpec, ("kind",))
