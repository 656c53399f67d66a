"""Cooldowns and pending marks per dedup key in Redis: their keys, the Lua scripts that
write them, and :class:`DeliveryMarks` (what a queue shard writes when an item ends)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import redis.asyncio as aioredis

from core.eligibility import to_ms
from state.keys import COOLDOWN_PREFIX, PENDING_PREFIX

# KEYS: one hash of target -> until ms. ARGV: id1, until1, id2, until2, ... HSET every field
# (in chunks: Lua's unpack has a limit), and keep the key until its latest field expires.
_SET_UNTIL = """
local top = 0
for i = 1, #ARGV, 2000 do
  local args = {}
  for j = i, math.min(i + 1999, #ARGV), 2 do
    args[#args + 1] = ARGV[j]
    args[#args + 1] = ARGV[j + 1]
    local u = tonumber(ARGV[j + 1])
    if u > top then top = u end
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
local ttl = redis.call('PTTL', KEYS[1])
local t = redis.call('TIME')
local left = top - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if ttl < 0 or left > ttl then redis.call('PEXPIREAT', KEYS[1], top) end
return #ARGV / 2
"""

# KEYS: the cooldown hash, the pending hash. ARGV: until_ms, id... A push was sent: its
# cooldown starts and its pending mark goes, at once.
_CHARGE = """
local top = tonumber(ARGV[1])
for i = 2, #ARGV, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #ARGV) do
    args[#args + 1] = ARGV[j]
    args[#args + 1] = ARGV[1]
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
local ttl = redis.call('PTTL', KEYS[1])
local t = redis.call('TIME')
local left = top - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if ttl < 0 or left > ttl then redis.call('PEXPIREAT', KEYS[1], top) end
for i = 2, #ARGV, 1000 do
  redis.call('HDEL', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV - 1
"""


def cooldown_key(dedup_key: str, prefix: str = "") -> str:
    return f"{prefix}:{COOLDOWN_PREFIX}{dedup_key}" if prefix else f"{COOLDOWN_PREFIX}{dedup_key}"


def pending_key(dedup_key: str, prefix: str = "") -> str:
    return f"{prefix}:{PENDING_PREFIX}{dedup_key}" if prefix else f"{PENDING_PREFIX}{dedup_key}"


class DeliveryMarks:
    """What a queue shard writes when an item ends: a sent push starts the cooldown of its
    (target, dedup key) and drops its pending mark; an item that ends unsent only drops
    the mark. One pipelined round trip for everything a flush has."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self._charge = client.register_script(_CHARGE)

    async def apply(
        self,
        charged: Mapping[tuple[str, int], Sequence[int]],
        released: Mapping[str, Sequence[int]],
    ) -> None:
        """``charged``: (dedup key, cooldown until ms) -> targets sent to; ``released``:
        dedup key -> targets whose item ended unsent."""
        if not charged and not released:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for (key, until_ms), ids in charged.items():
                if ids:
                    await self._charge(
                        keys=[cooldown_key(key, self.prefix), pending_key(key, self.prefix)],
                        args=[until_ms, *ids],
                        client=pipe,
                    )
            for key, ids in released.items():
                if ids:
                    pipe.hdel(pending_key(key, self.prefix), *[str(i) for i in ids])
            await pipe.execute()


MarkStore = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Per dedup key: target ids, until (epoch ms) and their rows in the frame (-1: not in it)."""


def live_marks(store: MarkStore, dedup_key: str, now: datetime) -> tuple[np.ndarray, np.ndarray]:
    """The ids marked for ``dedup_key`` at ``now``, and their rows (-1: not in the frame);
    the expired ones leave ``store``."""
    entry = store.get(dedup_key)
    if entry is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids, until, rows = entry
    live = until > to_ms(now)
    if not live.all():
        ids, until, rows = ids[live], until[live], rows[live]
        if ids.size:
            store[dedup_key] = (ids, until, rows)
        else:
            del store[dedup_key]
    return ids, rows


def drop_marks(store: MarkStore, dedup_key: str, ids: np.ndarray) -> None:
    """Forget the marks of ``ids`` for ``dedup_key``."""
    old = store.get(dedup_key)
    if old is None:
        return
    keep = ~np.isin(old[0], ids)
    if keep.any():
        store[dedup_key] = (old[0][keep], old[1][keep], old[2][keep])
    else:
        del store[dedup_key]
