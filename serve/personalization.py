"""What the admin sees of the engagement model (docs/personalization.md): its state in Redis,
for ``GET /api/personalization`` and ``arbflow personalize``."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from core.personalization import UserModel
from core.settings import Settings
from state.personalization import RedisModelStore

TOP = 8
"""Affinities shown for one user (the strongest, either sign)."""


async def model_state(
    client: aioredis.Redis, settings: Settings, user_id: int | None = None
) -> dict[str, Any]:
    """The settings, the last model's meta (``version`` 0: none yet) and, with ``user_id``, that
    user's model (``null``: none, the user is neutral: their pushes keep today's order)."""
    store = RedisModelStore(client)
    meta: dict[str, Any] = dict(await store.meta())
    for name in ("version", "users", "affinities"):
        if name in meta:
            meta[name] = int(meta[name])
    for name in ("global_rate", "took_ms", "half_life_days"):
        if name in meta:
            meta[name] = float(meta[name])
    meta.setdefault("version", 0)
    out: dict[str, Any] = {
        "settings": settings.personalization.model_dump(),
        "model": meta,
    }
    if user_id is not None:
        raw = await store.get(user_id)
        user: dict[str, Any] | None = None
        if raw is not None:
            try:
                m = UserModel.from_record(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                user = {"user_id": user_id, "error": "the stored record does not decode (neutral)"}
            else:
                user = {
                    "user_id": user_id,
                    "base_rate": m.base,
                    "events": m.events,
                    "top": [{"feature": f, "affinity": round(v, 3)} for f, v in m.top(TOP)],
                }
        out["user"] = user
    return out


__all__ = ["model_state"]
