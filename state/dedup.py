"""Webhook dedup in Redis: ``{p}tg:update:{update_id}`` flags (24 h)."""

from __future__ import annotations

import redis.asyncio as aioredis

from state.redis import Prefixed, redis_errors

UPDATE_DEDUP_TTL_S = 24 * 3600


class RedisUpdateDedup(Prefixed):
    """Webhook ``update_id`` dedup: Telegram redelivers an update until it gets a 200."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "", ttl_s: int = UPDATE_DEDUP_TTL_S) -> None:
        super().__init__(client, prefix)
        self.ttl_s = ttl_s

    def _key(self, update_id: int) -> str:
        return f"{self.p}tg:update:{update_id}"

    async def seen(self, update_id: int) -> bool:
        """True when ``update_id`` was seen before (skip it); marks it seen otherwise."""
        with redis_errors("update dedup"):
            fresh = await self.client.set(self._key(update_id), 1, nx=True, ex=self.ttl_s)
        return not fresh

    async def forget(self, update_id: int) -> None:
        """Let a redelivery through (processing failed before anything was done)."""
        with redis_errors("update dedup"):
            await self.client.delete(self._key(update_id))


__all__ = [
    "UPDATE_DEDUP_TTL_S",
    "RedisUpdateDedup",
]
