"""The engagement model in Redis (:class:`RedisModelStore`), one record per user.

- ``{p}personal:users`` hash: field = user id, value = the user's model as JSON
  (``{"b": base rate, "n": events, "a": [{"f": feature, "v": affinity}, …]}``,
  ``core.personalization.UserModel.from_record``). A user without a field has no model: their
  pushes are not scored and keep the order of priority, then newest.
- ``{p}personal:meta`` hash: ``version`` (incremented by each write), ``computed_at``
  (ISO-8601), ``users``, ``affinities``, ``global_rate``, ``took_ms``, ``half_life_days``.

A new model replaces the old one whole: its records are written to ``{p}personal:next`` and
renamed over ``personal:users`` in one MULTI with the meta (a reader sees the old model or
the new, never a mix). Readers poll ``version`` (one HGET) and re-read only when it moved.
``/forget`` deletes the user's field (``state.erase``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from state.redis import Prefixed, as_str, redis_errors

USERS_KEY, META_KEY, NEXT_KEY = "personal:users", "personal:meta", "personal:next"
CHUNK = 2000
"""Records written per HSET (and read per HSCAN page)."""


class RedisModelStore(Prefixed):
    """The per-user models and their meta; see the module doc for the keys."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        super().__init__(client, prefix)

    @property
    def users_key(self) -> str:
        return f"{self.p}{USERS_KEY}"

    @property
    def meta_key(self) -> str:
        return f"{self.p}{META_KEY}"

    @property
    def next_key(self) -> str:
        return f"{self.p}{NEXT_KEY}"

    async def replace(
        self, records: Sequence[tuple[int, str]], computed_at: datetime, **meta: float | int | str
    ) -> int:
        """Replace every user's model with ``records`` ((user id, JSON) pairs); returns the new
        version."""
        with redis_errors("writing the engagement model"):
            await self.client.delete(self.next_key)
            for i in range(0, len(records), CHUNK):
                chunk = {str(uid): body for uid, body in records[i : i + CHUNK]}
                await self.client.hset(self.next_key, mapping=chunk)  # type: ignore[arg-type]
            fields: dict[str, str] = {"computed_at": computed_at.isoformat(), "users": str(len(records))}
            fields.update({k: str(v) for k, v in meta.items()})
            async with self.client.pipeline(transaction=True) as pipe:
                if records:
                    pipe.rename(self.next_key, self.users_key)
                else:
                    pipe.delete(self.users_key)
                pipe.hset(self.meta_key, mapping=fields)  # type: ignore[arg-type]
                pipe.hincrby(self.meta_key, "version", 1)
                res = await pipe.execute()
        return int(res[-1])

    async def version(self) -> int:
        """The model's version (0: none was ever written)."""
        with redis_errors("reading the engagement model's version"):
            raw = await self.client.hget(self.meta_key, "version")
        return int(raw) if raw is not None else 0

    async def meta(self) -> dict[str, str]:
        with redis_errors("reading the engagement model's meta"):
            raw: Mapping[Any, Any] = await self.client.hgetall(self.meta_key)
        return {as_str(k): as_str(v) for k, v in raw.items()}

    async def get(self, user_id: int) -> str | None:
        """One user's record (JSON), or None."""
        with redis_errors(f"reading the model of {user_id}"):
            raw = await self.client.hget(self.users_key, str(int(user_id)))
        return None if raw is None else as_str(raw)

    async def iter_records(self) -> AsyncIterator[list[tuple[int, str]]]:
        """Every record, a page at a time (HSCAN)."""
        cursor: int = 0
        while True:
            with redis_errors("reading the engagement model"):
                cursor, page = await self.client.hscan(self.users_key, cursor, count=CHUNK)
            if isinstance(page, dict) and page:
                yield [(int(as_str(k)), as_str(v)) for k, v in page.items()]
            if not cursor:
                return

    async def forget(self, user_id: int) -> int:
        with redis_errors(f"erasing the model of {user_id}"):
            return int(await self.client.hdel(self.users_key, str(int(user_id))))


__all__ = ["META_KEY", "NEXT_KEY", "USERS_KEY", "RedisModelStore"]
