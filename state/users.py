"""The user records in Redis (:class:`RedisUserStore`) and their change stream.

- ``{p}user:{id}`` hash, one field per ``User`` field as JSON: top-level fields by
  name, preferences as ``pref.<name>``, API keys as ``key.<exchange>`` (ciphertext
  only). ``{p}users`` set of ids. ``{p}users:changes`` stream of
  ``{user_id, field}``: ``field`` is ``*`` for a whole-record write, ``-`` for a
  deletion, else the comma-separated top-level fields changed (``preferences``,
  ``tier``, ``api_keys``, …). ``touch`` (last seen) emits nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from core.accounts import (
    Preferences,
    StoredApiKey,
    Tier,
    User,
)
from core.errors import StoreUnavailable
from state.redis import Prefixed, as_str, pairs, redis_errors

CHANGES_MAXLEN = 100_000


_DUMMY_USER = User(
    id=0, created_at=datetime(2000, 1, 1, tzinfo=UTC), last_seen_at=datetime(2000, 1, 1, tzinfo=UTC)
)
_USER_SCALARS = [name for name in User.model_fields if name not in ("preferences", "api_keys", "id")]

# KEYS: user hash, ids set, changes stream. ARGV: uid, field label ("" = no event),
# maxlen, n_set, <n_set field/value pairs>, <fields to delete>.
# Returns -1 when the user does not exist, else the number of fields deleted.
_UPDATE_USER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local nset = tonumber(ARGV[4])
if nset > 0 then
  local args = {}
  for j = 1, nset * 2 do args[j] = ARGV[4 + j] end
  redis.call('HSET', KEYS[1], unpack(args))
end
local deleted = 0
for j = 5 + nset * 2, #ARGV do deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[j]) end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'user_id', ARGV[1], 'field', ARGV[2])
end
return deleted
"""

# KEYS: user hash, ids set, changes stream. ARGV: uid, maxlen, <field/value pairs>.
# Returns {1} when created, {0, <hgetall>} when the user existed.
_CREATE_USER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('HGETALL', KEYS[1])} end
local args = {}
for j = 3, #ARGV do args[j - 2] = ARGV[j] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'user_id', ARGV[1], 'field', '*')
return {1}
"""


_PREF_STORED = {"language": "lang"}
"""Preferences stored under another hash field than their name: ``language`` is ``pref.lang``
because releases before the language setting wrote ``pref.language = "en"`` for every user
(a default, never a choice); that old field is ignored on read."""
_PREF_READ = {stored: name for name, stored in _PREF_STORED.items()}
_PREF_LEGACY = frozenset({"language"})


def _pref_key(name: str) -> str:
    return "pref." + _PREF_STORED.get(name, name)


def _user_fields(user: User) -> dict[str, str]:
    data = user.model_dump(mode="json")
    prefs = data.pop("preferences")
    keys = data.pop("api_keys")
    out = {name: json.dumps(value) for name, value in data.items()}
    out.update({_pref_key(name): json.dumps(value) for name, value in prefs.items()})
    out.update({f"key.{ex}": json.dumps(value) for ex, value in keys.items()})
    return out


def user_from_fields(raw: Mapping[Any, Any]) -> User:
    top: dict[str, Any] = {}
    prefs: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for k, v in raw.items():
        name, value = as_str(k), json.loads(as_str(v))
        if name.startswith("pref."):
            if name[5:] not in _PREF_LEGACY:
                prefs[_PREF_READ.get(name[5:], name[5:])] = value
        elif name.startswith("key."):
            keys[name[4:]] = value
        else:
            top[name] = value
    return User.model_validate({**top, "preferences": prefs, "api_keys": keys})


@dataclass(frozen=True, slots=True)
class UserChange:
    stream_id: str
    user_id: int
    field: str


class RedisUserStore(Prefixed):
    """Users in Redis hashes, with a change stream for the distribution engine's directory."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        super().__init__(client, prefix)
        self._update = client.register_script(_UPDATE_USER)
        self._create = client.register_script(_CREATE_USER)

    def _key(self, user_id: int) -> str:
        return f"{self.p}user:{user_id}"

    @property
    def ids_key(self) -> str:
        return f"{self.p}users"

    @property
    def changes_key(self) -> str:
        return f"{self.p}users:changes"

    def _keys(self, user_id: int) -> list[str]:
        return [self._key(user_id), self.ids_key, self.changes_key]

    async def get(self, user_id: int) -> User | None:
        with redis_errors(f"reading user {user_id}"):
            raw = await self.client.hgetall(self._key(user_id))
        return user_from_fields(raw) if raw else None

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        with redis_errors("reading users"):
            async with self.client.pipeline(transaction=False) as pipe:
                for uid in user_ids:
                    pipe.hgetall(self._key(uid))
                raws = await pipe.execute()
        return {uid: user_from_fields(raw) for uid, raw in zip(user_ids, raws, strict=True) if raw}

    async def create(self, user: User) -> tuple[User, bool]:
        """Store ``user`` unless it exists; returns the stored user and whether it was created."""
        args: list[Any] = [user.id, CHANGES_MAXLEN]
        for name, value in _user_fields(user).items():
            args += [name, value]
        with redis_errors(f"creating user {user.id}"):
            res = await self._create(keys=self._keys(user.id), args=args)
        if int(res[0]) == 1:
            return user, True
        return user_from_fields(pairs(res[1])), False

    async def put(self, user: User) -> None:
        """Replace the whole record (one MULTI/EXEC)."""
        key = self._key(user.id)
        with redis_errors(f"writing user {user.id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=_user_fields(user))  # type: ignore[arg-type]
                pipe.sadd(self.ids_key, user.id)
                pipe.xadd(self.changes_key, {"user_id": user.id, "field": "*"}, maxlen=CHANGES_MAXLEN)
                await pipe.execute()

    async def delete(self, user_id: int) -> bool:
        with redis_errors(f"deleting user {user_id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(user_id))
                pipe.srem(self.ids_key, user_id)
                pipe.xadd(self.changes_key, {"user_id": user_id, "field": "-"}, maxlen=CHANGES_MAXLEN)
                res = await pipe.execute()
        return bool(res[0])

    async def _apply(
        self, user_id: int, label: str, sets: Mapping[str, str], dels: Iterable[str] = ()
    ) -> int:
        args: list[Any] = [user_id, label, CHANGES_MAXLEN, len(sets)]
        for name, value in sets.items():
            args += [name, value]
        args += list(dels)
        with redis_errors(f"updating user {user_id}"):
            return int(await self._update(keys=self._keys(user_id), args=args))

    async def update_preferences(self, user_id: int, **changes: Any) -> bool:
        """Set whole preference fields atomically (one script); False when the user is unknown.

        Values are validated as ``Preferences`` fields (``ValueError`` when invalid).
        For read-modify-write (toggle one kind) use :meth:`modify_preferences`.
        """
        unknown = set(changes) - set(Preferences.model_fields)
        if unknown:
            raise ValueError(f"unknown preference fields: {sorted(unknown)}")
        prefs = Preferences()
        for name, value in changes.items():
            setattr(prefs, name, value)
        dumped = prefs.model_dump(mode="json", include=set(changes))
        sets = {_pref_key(name): json.dumps(value) for name, value in dumped.items()}
        return await self._apply(user_id, "preferences", sets) >= 0

    async def modify_preferences(
        self, user_id: int, fn: Callable[[Preferences], Preferences], *, attempts: int = 50
    ) -> Preferences | None:
        """Read-modify-write of the preferences under WATCH; retried on conflict. None: no such user."""
        key = self._key(user_id)
        with redis_errors(f"updating preferences of {user_id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                for attempt in range(attempts):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        if not raw:
                            await pipe.reset()
                            return None
                        current = user_from_fields(raw).preferences
                        new = fn(current.model_copy(deep=True))
                        before = current.model_dump(mode="json")
                        after = new.model_dump(mode="json")
                        sets = {_pref_key(k): json.dumps(v) for k, v in after.items() if before.get(k) != v}
                        pipe.multi()
                        if sets:
                            pipe.hset(key, mapping=sets)  # type: ignore[arg-type]
                            pipe.xadd(
                                self.changes_key,
                                {"user_id": user_id, "field": "preferences"},
                                maxlen=CHANGES_MAXLEN,
                            )
                        await pipe.execute()
                        return new
                    except WatchError:
                        await asyncio.sleep(random.uniform(0, 0.001 * (attempt + 1)))
        raise StoreUnavailable(f"redis: preferences of {user_id} kept changing under us ({attempts} tries)")

    async def update_fields(self, user_id: int, **changes: Any) -> bool:
        """Set top-level profile fields (``username``, ``onboarding_step``, ``beta_flags``, …)."""
        bad = set(changes) - set(_USER_SCALARS)
        if bad:
            raise ValueError(f"not updatable with update_fields: {sorted(bad)}")
        probe = _DUMMY_USER.model_copy()
        for name, value in changes.items():
            setattr(probe, name, value)
        dumped = probe.model_dump(mode="json", include=set(changes))
        sets = {name: json.dumps(value) for name, value in dumped.items()}
        return await self._apply(user_id, ",".join(sorted(changes)), sets) >= 0

    async def set_tier(self, user_id: int, tier: Tier) -> bool:
        return await self._apply(user_id, "tier", {"tier": json.dumps(Tier(tier).value)}) >= 0

    async def add_api_key(self, user_id: int, key: StoredApiKey) -> bool:
        """Store an API key (ciphertext only); replaces the user's key for that exchange."""
        sets = {f"key.{key.exchange}": key.model_dump_json()}
        return await self._apply(user_id, "api_keys", sets) >= 0

    async def remove_api_key(self, user_id: int, exchange: str) -> bool:
        return await self._apply(user_id, "api_keys", {}, [f"key.{exchange}"]) > 0

    async def touch(self, user_id: int, now: datetime) -> bool:
        """Last seen; no change event (the directory does not need it)."""
        return (
            await self._apply(user_id, "", {"last_seen_at": json.dumps(now.astimezone(UTC).isoformat())}) >= 0
        )

    async def count(self) -> int:
        with redis_errors("counting users"):
            return int(await self.client.scard(self.ids_key))

    async def iter_ids(self, batch: int = 1000) -> AsyncIterator[int]:
        with redis_errors("listing users"):
            async for member in self.client.sscan_iter(self.ids_key, count=batch):
                yield int(member)

    async def iter_users(self, batch: int = 500) -> AsyncIterator[User]:
        """Every user (SSCAN of the id set, one pipelined HGETALL round trip per batch)."""
        chunk: list[int] = []
        async for uid in self.iter_ids(batch):
            chunk.append(uid)
            if len(chunk) >= batch:
                for user in (await self.get_many(chunk)).values():
                    yield user
                chunk = []
        if chunk:
            for user in (await self.get_many(chunk)).values():
                yield user

    async def read_changes(
        self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
    ) -> tuple[str, list[UserChange]]:
        """Change events after stream id ``after``; returns the last id seen and the events."""
        with redis_errors("reading user changes"):
            res = await self.client.xread({self.changes_key: after}, count=count, block=block_ms)
        out: list[UserChange] = []
        last = after
        streams: list[Any] = list(res or [])
        for _stream, entries in streams:
            for sid, fields in entries:
                f = {as_str(k): as_str(v) for k, v in fields.items()}
                last = as_str(sid)
                out.append(UserChange(last, int(f["user_id"]), f["field"]))
        return last, out


__all__ = [
    "CHANGES_MAXLEN",
    "RedisUserStore",
    "UserChange",
    "user_from_fields",
]
