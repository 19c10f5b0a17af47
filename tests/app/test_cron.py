"""Cron next-fire computation, DST changes included."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from app import cron
from app.errors import BadCron, BadTimezone

UTC = timezone.utc


def fires(expression: str, tz: str, after: datetime, count: int) -> list[datetime]:
    tab, zone = cron.parse(expression), cron.zone(tz)
    out = []
    for _ in range(count):
        after = cron.next_fire(tab, zone, after)
        out.append(after)
    return out


def test_daily_in_a_zone_keeps_wall_clock_time_across_spring_forward() -> None:
    # Berlin jumps 02:00 CET -> 03:00 CEST on 2026-03-29.
    got = fires("0 9 * * *", "Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert got == [
        datetime(2026, 3, 28, 8, tzinfo=UTC),  # 09:00 CET
        datetime(2026, 3, 29, 7, tzinfo=UTC),  # 09:00 CEST
        datetime(2026, 3, 30, 7, tzinfo=UTC),
    ]


def test_a_time_skipped_by_spring_forward_fires_after_the_jump() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    # 02:30 does not exist on 2026-03-29: it fires at 03:30 CEST (01:30 UTC), then normally.
    assert got == [datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    # Berlin goes 03:00 CEST -> 02:00 CET on 2026-10-25: 02:30 happens twice.
    got = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert got == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_fire_times_strictly_increase_through_fall_back() -> None:
    got = fires("*/30 * * * *", "America/New_York", datetime(2026, 11, 1, 4, 0, tzinfo=UTC), 8)
    assert all(b > a for a, b in itertools.pairwise(got))


def test_utc_every_five_minutes() -> None:
    got = fires("*/5 * * * *", "UTC", datetime(2026, 1, 1, 0, 2, tzinfo=UTC), 2)
    assert got == [datetime(2026, 1, 1, 0, 5, tzinfo=UTC), datetime(2026, 1, 1, 0, 10, tzinfo=UTC)]


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "61 * * * *", "x * * * *", ""])
def test_bad_expressions(expression: str) -> None:
    with pytest.raises(BadCron):
        cron.parse(expression)


def test_bad_timezone() -> None:
    with pytest.raises(BadTimezone):
        cron.zone("Mars/Olympus")


def test_an_expression_that_never_fires_is_refused() -> None:
    with pytest.raises(BadCron, match="never fires"):
        cron.parse("0 0 31 2 *")
