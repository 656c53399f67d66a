"""``/forget``: everything Redis holds about one user, erased."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from state.keys import BOT_BINDINGS_KEY, COOLDOWN_PREFIX, PENDING_PREFIX
from state.personalization import RedisModelStore
from state.redis import redis_errors
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from state.webhooks import RedisWebhookStore


async def erase_user(client: aioredis.Redis, user_id: int, *, prefix: str = "") -> int:
    """Delete everything Redis holds about ``user_id`` (``/forget``); returns how many keys
    and hash fields went.

    The user record (preferences, API keys), the session and its place in the expiry
    index, the push quotas, cooldowns and exactly-once flags, the items kept for the "missed
    while delayed" digest (``missed:<id>``, never prefixed: the shards'), the user's entries in
    the eligibility cooldown and pending hashes, its bot of the pool (``tg:bot_of``) and its
    outbound webhooks (``state.webhooks``), and its engagement model's record
    (``state.personalization``; its next run ignores their lake rows before the ``forget``). The
    directory drops the user through the change stream (one ``-`` entry, an id without
    personal data, trimmed with the stream). Queued pushes are the queue shards' to drop
    (``Distributor.forget``).
    """
    p = f"{prefix}:" if prefix else ""
    uid = int(user_id)
    users, sessions = RedisUserStore(client, prefix=prefix), RedisSessionStore(client, prefix=prefix)
    gone = int(await users.delete(uid))
    with redis_errors(f"erasing the data of {uid}"):
        keys: list[Any] = [sessions._key(uid), f"missed:{uid}"]  # + the "missed while delayed" items
        for kind in ("quota:d", "quota:h", "cooldown", "pushed"):
            keys += [k async for k in client.scan_iter(match=f"{p}{kind}:{uid}:*", count=1000)]
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete(*keys)
            pipe.zrem(sessions.expiry_key, uid)
            pipe.hdel(f"{p}{BOT_BINDINGS_KEY}", str(uid))  # the bot of the pool it talked to
            deleted, _, unbound = await pipe.execute()
        gone += int(deleted) + int(unbound)
        for pattern in (f"{p}{COOLDOWN_PREFIX}*", f"{p}{PENDING_PREFIX}*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                gone += int(await client.hdel(key, str(uid)))
    gone += await RedisWebhookStore(client, prefix=prefix).remove_user(uid)
    gone += await RedisModelStore(client, prefix=prefix).forget(uid)  # the engagement model's record
    return gone


__all__ = ["erase_user"]
