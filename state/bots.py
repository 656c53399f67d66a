"""Which bot of the pool each chat talks to (docs/bot-pool.md), in Redis.

``{p}tg:bot_of`` is one hash: field = chat id (a user's private chat id is the user's id;
a group's or channel's id is negative), value = the bot's id. The bot shards write it from
the bot an update came to (:meth:`RedisBotBindings.bind`); the queue shards read it to send
a chat's pushes through its bot (:meth:`RedisBotBindings.bots_of`). A chat without a field
(every chat of a release before the pool, or of a deployment with one bot) is the primary
bot's: nothing needs migrating.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from core.bots import token_of
from core.errors import StoreUnavailable
from state.keys import BOT_BINDINGS_KEY
from state.redis import Prefixed, redis_errors


class RedisBotBindings(Prefixed):
    """The chat → bot hash (see the module doc)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "") -> None:
        super().__init__(client, prefix)
        self.key = f"{self.p}{BOT_BINDINGS_KEY}"

    async def bind(self, chat_id: int, bot: int) -> bool:
        """Bind ``chat_id`` to ``bot``; True when that changed the binding."""
        with redis_errors(f"binding chat {chat_id} to bot {bot}"):
            old = await self.client.hget(self.key, str(int(chat_id)))
            if old is not None and int(old) == int(bot):
                return False
            await self.client.hset(self.key, str(int(chat_id)), str(int(bot)))
            return True

    async def bot_of(self, chat_id: int) -> int | None:
        """The bot ``chat_id`` is bound to; None: none (the primary)."""
        return (await self.bots_of([chat_id]))[0]

    async def bots_of(self, chat_ids: Sequence[int]) -> list[int | None]:
        """Each chat's bot, in order (None: not bound, the primary); one round trip."""
        if not chat_ids:
            return []
        with redis_errors("reading the chats' bots"):
            raw = await self.client.hmget(self.key, [str(int(c)) for c in chat_ids])
        return [None if v is None else int(v) for v in raw]

    async def token_for(self, chat_id: int, pool: Sequence[str]) -> str:
        """The token of ``pool`` (the primary first) of the bot ``chat_id`` talks to: its binding,
        else the primary (no binding, a bot no longer in the pool, or Redis unavailable: a
        notice still goes, through the primary)."""
        if len(pool) < 2:
            return pool[0] if pool else ""
        try:
            bound = await self.bot_of(chat_id)
        except StoreUnavailable:
            return pool[0]
        return token_of(pool, bound)

    async def forget(self, chat_id: int) -> int:
        """Drop the binding (``/forget``); 1 when there was one."""
        with redis_errors(f"forgetting chat {chat_id}'s bot"):
            return int(await self.client.hdel(self.key, str(int(chat_id))))

    async def counts(self) -> dict[int, int]:
        """Chats bound per bot (a scan of the hash: for ``/healthz`` and reports, not hot paths)."""
        out: dict[int, int] = {}
        with redis_errors("counting the chats per bot"):
            async for _field, value in self.client.hscan_iter(self.key, count=1000):
                bot = int(value)
                out[bot] = out.get(bot, 0) + 1
        return out


__all__ = ["RedisBotBindings"]
