"""Outbound webhook endpoints in Redis (:class:`RedisWebhookStore`) and the address check
that both the bot (at registration) and the sender (at send time) run (:func:`resolve_checked`).

Keys (``p`` = ``prefix + ":"``):

- ``{p}webhook:{id}`` hash: one endpoint (``core.outbound.Endpoint.to_record``; ``v`` its
  record version; a record of an older version reads with defaults for what it lacks).
- ``{p}webhooks:user:{user_id}`` set: that user's endpoint ids.
- ``{p}webhooks:users`` hash: user id → ``user`` or ``admin`` (an admin registered one of
  their endpoints: delivered whatever the user's tier), for every user with at least one
  enabled endpoint: the queue shards read it every few seconds to know whom to hand pushes
  for (users without endpoints cost them one set lookup).
- ``{p}webhooks:sent:{endpoint}:{delivery}`` string with a TTL: a delivery POSTed with a
  2xx answer; never POSTed to that endpoint again while it lives (a restart included).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from core.outbound import (
    Endpoint,
    IPNetwork,
    Target,
    literal_address,
    parse_ranges,
    parse_url,
    url_refusal,
)
from state.keys import WEBHOOK_USERS_KEY
from state.redis import as_str, redis_errors

SECRET_PREFIX = "whsec_"
ID_PREFIX = "wh_"
RESOLVE_TIMEOUT_S = 5.0


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    return ID_PREFIX + secrets.token_hex(5)


# -- addresses -------------------------------------------------------------------------------


class Refused(ValueError):
    """A URL the policy refuses: ``reason`` is a code (``loopback``, ``https_required``, …)."""

    def __init__(self, reason: str, url: str = "") -> None:
        super().__init__(f"{reason}: {url}" if url else reason)
        self.reason = reason


async def resolve(host: str, port: int, *, timeout_s: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is itself), for TCP."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_checked(url: str, allowed: Sequence[IPNetwork]) -> tuple[Target, list[str]]:
    """Parse, resolve and check ``url``: its target and the checked addresses, or
    :class:`Refused` saying why (``core.outbound.url_refusal``)."""
    target = parse_url(url)
    if isinstance(target, str):
        raise Refused(target, url)
    addresses = await resolve(target.host, target.port)
    why = url_refusal(target, addresses, allowed)
    if why is not None:
        raise Refused(why, url)
    return target, addresses


def allowed_ranges(values: Sequence[str]) -> list[IPNetwork]:
    return parse_ranges(values)


# -- the registry ----------------------------------------------------------------------------


class RedisWebhookStore:
    """Users' endpoints (module docstring for the keys). Errors → ``StoreUnavailable``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        self.client = client
        self.p = f"{prefix}:" if prefix else ""

    def key(self, endpoint_id: str) -> str:
        return f"{self.p}webhook:{endpoint_id}"

    def user_key(self, user_id: int) -> str:
        return f"{self.p}webhooks:user:{user_id}"

    @property
    def users_key(self) -> str:
        return f"{self.p}{WEBHOOK_USERS_KEY}"

    def sent_key(self, endpoint_id: str, delivery: str) -> str:
        return f"{self.p}webhooks:sent:{endpoint_id}:{delivery}"

    # -- reading
    async def get(self, endpoint_id: str) -> Endpoint | None:
        with redis_errors("reading a webhook"):
            raw = await self.client.hgetall(self.key(endpoint_id))
        if not raw:
            return None
        return Endpoint.from_record({as_str(k): as_str(v) for k, v in raw.items()})

    async def of_user(self, user_id: int) -> list[Endpoint]:
        with redis_errors("reading webhooks"):
            ids = sorted(as_str(i) for i in await self.client.smembers(self.user_key(user_id)))
            if not ids:
                return []
            pipe = self.client.pipeline(transaction=False)
            for endpoint_id in ids:
                pipe.hgetall(self.key(endpoint_id))
            raws = await pipe.execute()
        out = [Endpoint.from_record({as_str(k): as_str(v) for k, v in raw.items()}) for raw in raws if raw]
        return sorted(out, key=lambda e: e.created_at)

    async def users(self) -> dict[int, bool]:
        """User id → whether an admin registered one of their endpoints, for every user with
        an enabled endpoint (what the queue shards hand pushes over for)."""
        with redis_errors("reading webhook users"):
            raw = await self.client.hgetall(self.users_key)
        return {int(as_str(k)): as_str(v) == "admin" for k, v in raw.items()}

    async def all(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        with redis_errors("reading webhook users"):
            ids = [int(as_str(k)) for k in await self.client.hkeys(self.users_key)]
            ids += [
                int(as_str(k).rsplit(":", 1)[1])
                async for k in self.client.scan_iter(match=f"{self.p}webhooks:user:*", count=500)
            ]
        for uid in sorted(set(ids)):
            out += await self.of_user(uid)
        return out

    # -- writing
    async def add(
        self,
        user_id: int,
        url: str,
        now: datetime,
        *,
        created_by: int | None = None,
        limit: int | None = None,
    ) -> Endpoint | None:
        """A new endpoint with a fresh secret; None when the user has ``limit`` already."""
        if limit is not None and len(await self.of_user(user_id)) >= limit:
            return None
        endpoint = Endpoint(
            id=new_id(),
            user_id=user_id,
            url=url,
            secret=new_secret(),
            created_at=now.astimezone(UTC),
            created_by=user_id if created_by is None else created_by,
        )
        with redis_errors("adding a webhook"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.key(endpoint.id), mapping=endpoint.to_record())  # type: ignore[arg-type]
            pipe.sadd(self.user_key(user_id), endpoint.id)
            await pipe.execute()
        await self._refresh_user(user_id)
        return endpoint

    async def remove(self, user_id: int, endpoint_id: str) -> bool:
        """Remove one of ``user_id``'s endpoints; False when they have none by that id."""
        with redis_errors("removing a webhook"):
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(self.user_key(user_id), endpoint_id)
            pipe.delete(self.key(endpoint_id))
            removed, _ = await pipe.execute()
        await self._refresh_user(user_id)
        return bool(removed)

    async def remove_user(self, user_id: int) -> int:
        """Every endpoint of a user (``/forget``); how many."""
        ids = [e.id for e in await self.of_user(user_id)]
        for endpoint_id in ids:
            await self.remove(user_id, endpoint_id)
        return len(ids)

    async def set_enabled(
        self, endpoint_id: str, enabled: bool, *, reason: str = "", now: datetime | None = None
    ) -> Endpoint | None:
        endpoint = await self.get(endpoint_id)
        if endpoint is None:
            return None
        fields = {"disabled": "0" if enabled else "1", "disabled_reason": "" if enabled else reason}
        fields["disabled_at"] = "" if enabled or now is None else now.astimezone(UTC).isoformat()
        if enabled:
            fields["failures"] = "0"
        with redis_errors("updating a webhook"):
            await self.client.hset(self.key(endpoint_id), mapping=fields)  # type: ignore[arg-type]
        await self._refresh_user(endpoint.user_id)
        return await self.get(endpoint_id)

    async def note_delivered(
        self, endpoint: Endpoint, delivery: str, status: int, now: datetime, ttl_s: float
    ) -> None:
        """A 2xx: the delivery is remembered (never POSTed again to it), failures reset."""
        with redis_errors("recording a webhook delivery"):
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.sent_key(endpoint.id, delivery), "1", ex=max(1, int(ttl_s)))
            pipe.hset(
                self.key(endpoint.id),
                mapping={
                    "failures": "0",
                    "last_status": str(status),
                    "last_at": now.astimezone(UTC).isoformat(),
                },
            )
            pipe.hincrby(self.key(endpoint.id), "delivered", 1)
            await pipe.execute()

    async def delivered(self, endpoint_id: str, delivery: str) -> bool:
        with redis_errors("reading a webhook delivery"):
            return bool(await self.client.exists(self.sent_key(endpoint_id, delivery)))

    async def note_failed(self, endpoint: Endpoint, status: str, now: datetime) -> int:
        """A failed delivery (after its retries): the consecutive failures now."""
        with redis_errors("recording a webhook failure"):
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.key(endpoint.id))
            pipe.hincrby(self.key(endpoint.id), "failures", 1)
            pipe.hset(
                self.key(endpoint.id),
                mapping={"last_status": status, "last_at": now.astimezone(UTC).isoformat()},
            )
            exists, failures, _ = await pipe.execute()
            if not exists:  # removed meanwhile: the increments made a stub; take it away
                await self.client.delete(self.key(endpoint.id))
                return 0
        return int(failures)

    async def _refresh_user(self, user_id: int) -> None:
        """``{p}webhooks:users`` for this user: present while an enabled endpoint is left."""
        endpoints = await self.of_user(user_id)
        enabled = [e for e in endpoints if not e.disabled]
        with redis_errors("updating webhook users"):
            if enabled:
                flag = "admin" if any(e.by_admin for e in enabled) else "user"
                await self.client.hset(self.users_key, str(user_id), flag)
            else:
                await self.client.hdel(self.users_key, str(user_id))


__all__ = [
    "ID_PREFIX",
    "SECRET_PREFIX",
    "RedisWebhookStore",
    "Refused",
    "allowed_ranges",
    "new_id",
    "new_secret",
    "resolve",
    "resolve_checked",
]
