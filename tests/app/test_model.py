from __future__ import annotations

import random

from app.model import Backoff, Priority, TaskSpec, TaskStatus


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
