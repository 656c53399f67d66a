"""Push quotas, cooldowns and exactly-once push flags in Redis (:class:`RedisQuotaStore`).

- ``{p}quota:d:{uid}:{YYYYMMDD}`` / ``{p}quota:h:{uid}:{YYYYMMDDHH}`` counters (the
  user's local day, the UTC hour), expiring after their window.
  ``{p}cooldown:{uid}:{dedup_key}`` and ``{p}pushed:{uid}:{opportunity_id}`` flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import redis.asyncio as aioredis

from core.accounts import (
    TierPolicy,
    local_day,
    next_local_midnight,
)
from state.redis import Prefixed, redis_errors

PUSHED_TTL_S = 7 * 24 * 3600


# KEYS: day counter, hour counter. ARGV: day_limit, hour_limit (-1 = unlimited),
# day_expireat_s, hour_expireat_s, n. Both limits checked; both incremented or neither.
_CONSUME = """
local dl, hl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local d = tonumber(redis.call('GET', KEYS[1]) or '0')
local h = tonumber(redis.call('GET', KEYS[2]) or '0')
if (dl >= 0 and d + n > dl) or (hl >= 0 and h + n > hl) then return {0, d, h} end
d = redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
h = redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIREAT', KEYS[2], ARGV[4])
return {1, d, h}
"""

# KEYS: day counter, hour counter. ARGV: n. Gives back up to n (never below 0).
_REFUND = """
for i = 1, 2 do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if v > 0 then redis.call('DECRBY', KEYS[i], math.min(v, tonumber(ARGV[1]))) end
end
return 1
"""


class QuotaResult(NamedTuple):
    ok: bool
    remaining_day: int | None
    """None: unlimited."""
    remaining_hour: int | None


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(0, limit - used)


_EPOCH_DATE = date(1970, 1, 1)


class RedisQuotaStore(Prefixed):
    """Daily and hourly push quotas, cooldowns and exactly-once push flags.

    The daily window is the user's local day (``tz``: it resets at their midnight; keys
    ``quota:d:<user>:<local YYYYMMDD>``), the hourly one the UTC hour (``quota:h:…``)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        super().__init__(client, prefix)
        self._consume = client.register_script(_CONSUME)
        self._refund = client.register_script(_REFUND)

    def _keys(self, user_id: int, at: datetime, tz: str = "UTC") -> list[str]:
        day = _EPOCH_DATE + timedelta(days=local_day(at, tz))
        return [
            f"{self.p}quota:d:{user_id}:{day:%Y%m%d}",
            f"{self.p}quota:h:{user_id}:{at.astimezone(UTC):%Y%m%d%H}",
        ]

    @staticmethod
    def _expiries(at: datetime, tz: str = "UTC") -> tuple[int, int]:
        hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        # keep each counter a little past its window (clock skew between callers)
        return int((next_local_midnight(at, tz) + timedelta(hours=1)).timestamp()), int(
            (hour + timedelta(hours=1, minutes=5)).timestamp()
        )

    async def try_consume(
        self, user_id: int, policy: TierPolicy, now: datetime, n: int = 1, *, tz: str = "UTC"
    ) -> QuotaResult:
        """Take ``n`` from both the daily and the hourly quota, atomically: both or neither."""
        day_x, hour_x = self._expiries(now, tz)
        args = [
            -1 if policy.daily_quota is None else policy.daily_quota,
            -1 if policy.hourly_quota is None else policy.hourly_quota,
            day_x,
            hour_x,
            n,
        ]
        with redis_errors(f"consuming quota of {user_id}"):
            ok, d, h = await self._consume(keys=self._keys(user_id, now, tz), args=args)
        return QuotaResult(bool(ok), _left(policy.daily_quota, int(d)), _left(policy.hourly_quota, int(h)))

    async def try_consume_many(
        self, requests: Sequence[tuple[int, TierPolicy] | tuple[int, TierPolicy, str]], now: datetime
    ) -> list[QuotaResult]:
        """``try_consume`` for many users in one pipelined round trip; each request is
        ``(user id, policy)`` or ``(user id, policy, tz)`` (the zone of their daily window)."""
        with redis_errors("consuming quotas"):
            async with self.client.pipeline(transaction=False) as pipe:
                for request in requests:
                    uid, policy = request[0], request[1]
                    tz = request[2] if len(request) > 2 else "UTC"
                    day_x, hour_x = self._expiries(now, tz)
                    args = [
                        -1 if policy.daily_quota is None else policy.daily_quota,
                        -1 if policy.hourly_quota is None else policy.hourly_quota,
                        day_x,
                        hour_x,
                        1,
                    ]
                    await self._consume(keys=self._keys(uid, now, tz), args=args, client=pipe)
                res = await pipe.execute()
        return [
            QuotaResult(bool(ok), _left(r[1].daily_quota, int(d)), _left(r[1].hourly_quota, int(h)))
            for (ok, d, h), r in zip(res, requests, strict=True)
        ]

    async def remaining(
        self, user_id: int, policy: TierPolicy, now: datetime, *, tz: str = "UTC"
    ) -> tuple[int | None, int | None]:
        """(left today, left this hour); None = unlimited."""
        with redis_errors(f"reading quota of {user_id}"):
            d, h = await self.client.mget(self._keys(user_id, now, tz))
        return _left(policy.daily_quota, int(d or 0)), _left(policy.hourly_quota, int(h or 0))

    async def used(self, user_id: int, now: datetime, *, tz: str = "UTC") -> tuple[int, int]:
        with redis_errors(f"reading quota of {user_id}"):
            d, h = await self.client.mget(self._keys(user_id, now, tz))
        return int(d or 0), int(h or 0)

    async def refund(self, user_id: int, consumed_at: datetime, n: int = 1, *, tz: str = "UTC") -> None:
        """Give back what a push that was finally not sent took (same day/hour as consumed)."""
        with redis_errors(f"refunding quota of {user_id}"):
            await self._refund(keys=self._keys(user_id, consumed_at, tz), args=[n])

    def _cooldown_key(self, user_id: int, dedup_key: str) -> str:
        return f"{self.p}cooldown:{user_id}:{dedup_key}"

    async def try_cooldown(self, user_id: int, dedup_key: str, cooldown_s: float) -> bool:
        """True (and the cooldown starts) unless ``dedup_key`` is cooling down for this user."""
        with redis_errors(f"cooldown of {user_id}"):
            res = await self.client.set(
                self._cooldown_key(user_id, dedup_key), 1, nx=True, px=max(1, int(cooldown_s * 1000))
            )
        return bool(res)

    async def cooldown_left(self, user_id: int, dedup_key: str) -> float:
        """Seconds left of the cooldown (0 when none)."""
        with redis_errors(f"cooldown of {user_id}"):
            ms = await self.client.pttl(self._cooldown_key(user_id, dedup_key))
        return max(0, int(ms)) / 1000

    async def update_dedup(self, user_id: int, opportunity_id: str, ttl_s: int = PUSHED_TTL_S) -> bool:
        """Claim the push of ``opportunity_id`` to ``user_id``: True once, False ever after."""
        with redis_errors(f"push dedup of {user_id}"):
            res = await self.client.set(f"{self.p}pushed:{user_id}:{opportunity_id}", 1, nx=True, ex=ttl_s)
        return bool(res)


__all__ = [
    "PUSHED_TTL_S",
    "QuotaResult",
    "RedisQuotaStore",
]
