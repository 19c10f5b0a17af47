"""The API's rate limit, shared by every API process on every machine: GCRA in one Redis script.

GCRA (the generic cell rate algorithm) keeps one number per client, the theoretical arrival time
(TAT) of its next request: a limit of `count` per `period_s` lets a request of cost `c` in when
its TAT, moved on by `c` intervals of `period_s / count`, is at most `period_s` ahead of now. So a
client may spend the whole of `count` at once, and then `count` per period, evenly, never more;
nothing is kept per request, and the key expires when the client has been idle for its period.
Time is Redis's own (`TIME`), so API processes whose clocks differ still agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from app import keys

_GCRA = """
local interval_us, period_us, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local new_tat = tat + cost * interval_us
-- Microseconds of epoch pass 2^31 and tostring's 14 digits: written with %.0f.
local function whole(x) return string.format('%.0f', x) end
if new_tat - now > period_us then
    -- Refused, and nothing spent: how long until it would fit, what is left, when all is back.
    return {0, whole(new_tat - now - period_us), whole(math.floor((period_us - (tat - now)) / interval_us)),
        whole(tat - now)}
end
if cost > 0 then redis.call('SET', KEYS[1], whole(new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000))) end
return {1, '0', whole(math.floor((period_us - (new_tat - now)) / interval_us)), whole(new_tat - now)}
"""

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`100/s`, `6000/min`, `50000/h`; ValueError otherwise."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*", text.lower())
        if not found or found.group(3) not in _UNITS or int(found.group(1)) < 1:
            raise ValueError(f"a rate limit reads like 100/s or 6000/min, not {text!r}")
        return cls(int(found.group(1)), int(found.group(2) or 1) * _UNITS[found.group(3)])


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float
    """How long until the refused request would fit (0 when allowed)."""
    remaining: int
    """Requests (of cost 1) the client may still make at once."""
    reset_s: float
    """How long until the client's whole allowance is back."""


class RateLimiter:
    def __init__(self, connection: AsyncRedis, rate: Rate) -> None:
        self.rate = rate
        self._script = connection.register_script(_GCRA)
        self._interval_us = rate.period_s * 1_000_000 / rate.count
        self._period_us = rate.period_s * 1_000_000

    async def take(self, client: str, cost: int = 1) -> Verdict:
        """Spend `cost` of `client`'s allowance, or nothing if it does not fit."""
        raw = await self._script(
            keys=[keys.rate_limit_bucket(client)], args=[math.ceil(self._interval_us), self._period_us, cost]
        )
        allowed, wait_us, remaining, reset_us = (int(float(v)) for v in raw)
        return Verdict(bool(allowed), wait_us / 1e6, max(remaining, 0), reset_us / 1e6)
