"""Groups the bot was added to, with their settings (:class:`RedisGroupStore`).

``{p}groups:{chat_id}`` hashes (title, type, active, added_by, added_at, pushes_on,
min_net_bps, lang) and a ``{p}groups`` set of ids. The bot writes them; the
distribution engine's directory reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StoreUnavailable
from state.redis import as_str


@dataclass(slots=True)
class Group:
    chat_id: int
    title: str = ""
    type: str = "group"
    active: bool = True
    added_by: int = 0
    added_at: str = ""
    pushes_on: bool = True
    min_net_bps: int = 0
    lang: str | None = None
    """The language of the group's pushes (None: English; records of older releases)."""


class RedisGroupStore:
    """Groups the bot is in: ``{p}groups:{chat_id}`` hash, ``{p}groups`` set of ids."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        self.client = client
        self.p = f"{prefix}:" if prefix else ""

    def _key(self, chat_id: int) -> str:
        return f"{self.p}groups:{chat_id}"

    @property
    def ids_key(self) -> str:
        return f"{self.p}groups"

    async def register(
        self, chat_id: int, title: str, type_: str, added_by: int, now: datetime, *, lang: str | None = None
    ) -> None:
        """Added (or re-added): active again; settings a previous stay left are kept. ``lang``:
        the language of the group's pushes (the one of whoever added the bot; a record
        without it: English)."""
        mapping = {
            "title": title,
            "type": type_,
            "active": "1",
            "added_by": str(added_by),
            "added_at": now.astimezone(UTC).isoformat(),
        }
        if lang:
            mapping["lang"] = lang
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(chat_id), mapping=mapping)  # type: ignore[arg-type]
                pipe.hsetnx(self._key(chat_id), "pushes_on", "1")
                pipe.hsetnx(self._key(chat_id), "min_net_bps", "0")
                pipe.sadd(self.ids_key, chat_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: registering group {chat_id} failed: {exc}") from exc

    async def deactivate(self, chat_id: int) -> None:
        try:
            await self.client.hset(self._key(chat_id), "active", "0")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: updating group {chat_id} failed: {exc}") from exc

    async def get(self, chat_id: int) -> Group | None:
        try:
            raw = await self.client.hgetall(self._key(chat_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading group {chat_id} failed: {exc}") from exc
        if not raw:
            return None
        h = {as_str(k): as_str(v) for k, v in raw.items()}
        return Group(
            chat_id=chat_id,
            title=h.get("title", ""),
            type=h.get("type", "group"),
            active=h.get("active") == "1",
            added_by=int(h.get("added_by") or 0),
            added_at=h.get("added_at", ""),
            pushes_on=h.get("pushes_on", "1") == "1",
            min_net_bps=int(h.get("min_net_bps") or 0),
            lang=h.get("lang") or None,
        )

    async def set(self, chat_id: int, **fields: bool | int) -> None:
        values = {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in fields.items()}
        try:
            await self.client.hset(self._key(chat_id), mapping=values)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: updating group {chat_id} failed: {exc}") from exc

    async def count(self) -> int:
        try:
            return int(await self.client.scard(self.ids_key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: counting groups failed: {exc}") from exc


__all__ = ["Group", "RedisGroupStore"]
