"""Cron expressions in a time zone: parsing and the next fire time, DST included.

Times are computed on the wall clock of the schedule's zone, then placed on the UTC line:
- a wall-clock time skipped by a spring-forward jump fires at the same offset after the jump
  (02:30 on a night that jumps from 02:00 to 03:00 fires at 03:30);
- a wall-clock time that occurs twice in a fall-back night fires once, at its first occurrence;
- fire times always strictly increase.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crontab import CronTab  # type: ignore[import-untyped]

from app.errors import BadCron, BadTimezone


@lru_cache(maxsize=1024)
def parse(expression: str) -> CronTab:
    """The expression, checked (five fields, valid, fires on some date). Cached: the check for a
    date that matches costs up to milliseconds, and every fire of a schedule parses its cron again
    (a CronTab is not changed by use)."""
    fields = expression.split()
    if len(fields) != 5:
        raise BadCron(f"a cron expression has 5 fields (minute hour day month weekday), not {len(fields)}")
    try:
        tab = CronTab(" ".join(fields))
    except ValueError as error:
        raise BadCron(str(error)) from None
    if tab.next(now=datetime(2000, 1, 1), return_datetime=True, default_utc=False) is None:
        raise BadCron("the expression never fires (no date matches it, e.g. February 31st)")
    return tab


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTimezone(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'") from None


def next_fire(tab: CronTab, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC."""
    wall = after.astimezone(tz).replace(tzinfo=None)
    for _ in range(10_000):
        wall = tab.next(now=wall, return_datetime=True, default_utc=False)
        if not isinstance(wall, datetime):
            break
        fire = wall.replace(tzinfo=tz).astimezone(timezone.utc)  # fold=0: first occurrence
        if fire > after:
            return fire
    raise BadCron("the expression never fires")  # parse() refuses such expressions
