"""Redis adapters for accounts, sessions, quotas and webhook dedup (Redis is the system of record).

Every store takes a ``redis.asyncio`` client (:func:`redis_client` fails fast and
reconnects by itself) and a key ``prefix`` (empty by default; tests pass a unique one
for isolation). Library errors become :class:`core.errors.StoreUnavailable`. Every
operation is one round trip (a Lua script, a pipeline or a single command) except
:meth:`RedisUserStore.modify_preferences` (optimistic WATCH/MULTI). The Lua scripts
build a few key names from the prefix (sweeps): one Redis (or a hash-tagged prefix),
not a cluster-wide keyspace.

Keys (``p`` = ``prefix + ":"`` when a prefix is given):

- ``{p}user:{id}`` hash, one field per ``User`` field as JSON: top-level fields by
  name, preferences as ``pref.<name>``, API keys as ``key.<exchange>`` (ciphertext
  only). ``{p}users`` set of ids. ``{p}users:changes`` stream of
  ``{user_id, field}``: ``field`` is ``*`` for a whole-record write, ``-`` for a
  deletion, else the comma-separated top-level fields changed (``preferences``,
  ``tier``, ``api_keys``, …). ``touch`` (last seen) emits nothing.
- ``{p}session:user:{uid}`` hash (ms timestamps), ``{p}sessions:by_expiry`` sorted
  set (uid by expiry ms; ended sessions leave it), ``{p}sessions:seq`` hash (uid →
  number of sessions ever started). A session key expires in Redis
  ``SESSION_GRACE`` (2 days) after the session ends, longer than the daily sweep, so
  the sweeper still has the session to write its ``expired`` event; validity is
  always judged from ``expires_ms``, never from the key's presence.
- ``{p}quota:d:{uid}:{YYYYMMDD}`` / ``{p}quota:h:{uid}:{YYYYMMDDHH}`` counters, UTC
  days and hours (a user changing time zone cannot reset a quota, and every user's
  day turns at 00:00 UTC: the bot says so), expiring after their window.
  ``{p}cooldown:{uid}:{dedup_key}`` and ``{p}pushed:{uid}:{opportunity_id}`` flags.
- ``{p}tg:update:{update_id}`` webhook dedup flags (24 h).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, WatchError

from core.accounts import (
    Preferences,
    StoredApiKey,
    Tier,
    TierPolicy,
    User,
    local_day,
    next_local_midnight,
)
from core.errors import StoreUnavailable
from core.sessions import (
    SESSION_TTL,
    EndReason,
    Session,
    SessionEvent,
    event_rows,
    is_active,
    new_token,
)

SESSION_GRACE = timedelta(days=2)
CHANGES_MAXLEN = 100_000
UPDATE_DEDUP_TTL_S = 24 * 3600
PUSHED_TTL_S = 7 * 24 * 3600


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast (and reconnects by itself) when Redis restarts."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        health_check_interval=30,
    )


@contextlib.contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {what} failed: {exc}") from exc


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _pairs(raw: Sequence[Any]) -> dict[str, str]:
    return {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}


class _Prefixed:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.p = f"{prefix}:" if prefix else ""


# -- users ---------------------------------------------------------------------------

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


def _user_from_fields(raw: Mapping[Any, Any]) -> User:
    top: dict[str, Any] = {}
    prefs: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for k, v in raw.items():
        name, value = _s(k), json.loads(_s(v))
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


class RedisUserStore(_Prefixed):
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
        with _redis_errors(f"reading user {user_id}"):
            raw = await self.client.hgetall(self._key(user_id))
        return _user_from_fields(raw) if raw else None

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        with _redis_errors("reading users"):
            async with self.client.pipeline(transaction=False) as pipe:
                for uid in user_ids:
                    pipe.hgetall(self._key(uid))
                raws = await pipe.execute()
        return {uid: _user_from_fields(raw) for uid, raw in zip(user_ids, raws, strict=True) if raw}

    async def create(self, user: User) -> tuple[User, bool]:
        """Store ``user`` unless it exists; returns the stored user and whether it was created."""
        args: list[Any] = [user.id, CHANGES_MAXLEN]
        for name, value in _user_fields(user).items():
            args += [name, value]
        with _redis_errors(f"creating user {user.id}"):
            res = await self._create(keys=self._keys(user.id), args=args)
        if int(res[0]) == 1:
            return user, True
        return _user_from_fields(_pairs(res[1])), False

    async def put(self, user: User) -> None:
        """Replace the whole record (one MULTI/EXEC)."""
        key = self._key(user.id)
        with _redis_errors(f"writing user {user.id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=_user_fields(user))  # type: ignore[arg-type]
                pipe.sadd(self.ids_key, user.id)
                pipe.xadd(self.changes_key, {"user_id": user.id, "field": "*"}, maxlen=CHANGES_MAXLEN)
                await pipe.execute()

    async def delete(self, user_id: int) -> bool:
        with _redis_errors(f"deleting user {user_id}"):
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
        with _redis_errors(f"updating user {user_id}"):
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
        with _redis_errors(f"updating preferences of {user_id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                for attempt in range(attempts):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        if not raw:
                            await pipe.reset()
                            return None
                        current = _user_from_fields(raw).preferences
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
        with _redis_errors("counting users"):
            return int(await self.client.scard(self.ids_key))

    async def iter_ids(self, batch: int = 1000) -> AsyncIterator[int]:
        with _redis_errors("listing users"):
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
        with _redis_errors("reading user changes"):
            res = await self.client.xread({self.changes_key: after}, count=count, block=block_ms)
        out: list[UserChange] = []
        last = after
        streams: list[Any] = list(res or [])
        for _stream, entries in streams:
            for sid, fields in entries:
                f = {_s(k): _s(v) for k, v in fields.items()}
                last = _s(sid)
                out.append(UserChange(last, int(f["user_id"]), f["field"]))
        return last, out


# -- sessions --------------------------------------------------------------------------

_SESSION_HELPERS = """
local function tomap(flat)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end
local function ended(h) return h['ended_ms'] ~= nil and h['ended_ms'] ~= '' end
"""

# KEYS: session hash, by_expiry zset, seq hash.
# ARGV: uid, now_ms, exp_ms, pexpireat_ms, token, chat_id.
# Returns {1, new, previous} when a session was created, {0, current} when one was active
# (then extended to exp_ms).
_START = (
    _SESSION_HELPERS
    + """
local cur = redis.call('HGETALL', KEYS[1])
if #cur > 0 then
  local h = tomap(cur)
  if not ended(h) and tonumber(h['expires_ms']) > tonumber(ARGV[2]) then
    if tonumber(ARGV[3]) > tonumber(h['expires_ms']) then
      redis.call('HSET', KEYS[1], 'expires_ms', ARGV[3], 'last_seen_ms', ARGV[2])
      redis.call('PEXPIREAT', KEYS[1], ARGV[4])
      redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
    end
    return {0, redis.call('HGETALL', KEYS[1])}
  end
end
local seq = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[5], 'user_id', ARGV[1], 'chat_id', ARGV[6], 'created_ms', ARGV[2],
  'expires_ms', ARGV[3], 'last_seen_ms', ARGV[2], 'seq', seq)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1]), cur}
"""
)

# KEYS: session hash, by_expiry zset. ARGV: uid, now_ms, exp_ms, pexpireat_ms, min_gap_ms.
# Returns the session (after extending it when active and last seen >= min_gap ago), or {}.
_VALIDATE = (
    _SESSION_HELPERS
    + """
local cur = redis.call('HGETALL', KEYS[1])
if #cur == 0 then return cur end
local h = tomap(cur)
local now = tonumber(ARGV[2])
if ended(h) or tonumber(h['expires_ms']) <= now then return cur end
local due = now - tonumber(h['last_seen_ms']) >= tonumber(ARGV[5])
if due and tonumber(ARGV[3]) > tonumber(h['expires_ms']) then
  redis.call('HSET', KEYS[1], 'expires_ms', ARGV[3], 'last_seen_ms', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return redis.call('HGETALL', KEYS[1])
end
return cur
"""
)

# KEYS: session hash, by_expiry zset. ARGV: uid, now_ms, reason, grace_ms.
# Returns {1, session} when this call ended it, {0, session} when it was already over, {}.
_END = (
    _SESSION_HELPERS
    + """
local cur = redis.call('HGETALL', KEYS[1])
if #cur == 0 then return {} end
local h = tomap(cur)
if ended(h) then return {0, cur} end
local now = tonumber(ARGV[2])
local at, reason = ARGV[2], ARGV[3]
if tonumber(h['expires_ms']) <= now then at, reason = h['expires_ms'], 'expired' end
redis.call('HSET', KEYS[1], 'ended_ms', at, 'end_reason', reason)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], tonumber(at) + tonumber(ARGV[4]))
return {1, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: by_expiry zset. ARGV: now_ms, limit, session key prefix, grace_ms.
# Ends (reason expired, at their expiry) up to `limit` sessions due by now; returns them.
_SWEEP = (
    _SESSION_HELPERS
    + """
local now = tonumber(ARGV[1])
local uids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, uid in ipairs(uids) do
  local key = ARGV[3] .. uid
  local cur = redis.call('HGETALL', key)
  local h = tomap(cur)
  if #cur > 0 and not ended(h) and tonumber(h['expires_ms']) > now then
    redis.call('ZADD', KEYS[1], h['expires_ms'], uid)
  else
    redis.call('ZREM', KEYS[1], uid)
    if #cur > 0 and not ended(h) then
      redis.call('HSET', key, 'ended_ms', h['expires_ms'], 'end_reason', 'expired')
      redis.call('PEXPIREAT', key, tonumber(h['expires_ms']) + tonumber(ARGV[4]))
      table.insert(out, redis.call('HGETALL', key))
    end
  end
end
return out
"""
)


def _session(raw: Mapping[Any, Any] | Sequence[Any]) -> Session | None:
    h = {_s(k): _s(v) for k, v in raw.items()} if isinstance(raw, Mapping) else _pairs(raw)
    if not h:
        return None
    ended_ms = h.get("ended_ms") or None
    return Session.model_construct(
        id=h["id"],
        user_id=int(h["user_id"]),
        chat_id=int(h["chat_id"]),
        created_at=_dt(h["created_ms"]),
        expires_at=_dt(h["expires_ms"]),
        last_seen_at=_dt(h["last_seen_ms"]),
        ended_at=_dt(ended_ms) if ended_ms else None,
        end_reason=EndReason(h["end_reason"]) if h.get("end_reason") else None,
        seq=int(h.get("seq") or 1),
    )


class SessionStart(NamedTuple):
    session: Session
    created: bool
    previous: Session | None
    """The user's previous session when a new one replaced it (events: ``start_events``)."""


class RedisSessionStore(_Prefixed):
    """One session per user; every method is one Lua script or command."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        ttl: timedelta = SESSION_TTL,
        grace: timedelta = SESSION_GRACE,
        token: Callable[[], str] = new_token,
    ) -> None:
        super().__init__(client, prefix)
        self.ttl_ms = int(ttl.total_seconds() * 1000)
        self.grace_ms = int(grace.total_seconds() * 1000)
        self.token = token
        self._start = client.register_script(_START)
        self._validate = client.register_script(_VALIDATE)
        self._end = client.register_script(_END)
        self._sweep = client.register_script(_SWEEP)

    def _key(self, user_id: int) -> str:
        return f"{self.p}session:user:{user_id}"

    @property
    def expiry_key(self) -> str:
        return f"{self.p}sessions:by_expiry"

    @property
    def seq_key(self) -> str:
        return f"{self.p}sessions:seq"

    async def start_session(self, user_id: int, chat_id: int, now: datetime) -> SessionStart:
        """``/start``: the active session (extended), or a new one. Safe under concurrency:
        concurrent starts of one user run one at a time in Redis and all get one session."""
        now_ms = _ms(now)
        exp = now_ms + self.ttl_ms
        args: list[int | str] = [user_id, now_ms, exp, exp + self.grace_ms, self.token(), chat_id]
        with _redis_errors(f"starting a session for {user_id}"):
            res = await self._start(keys=[self._key(user_id), self.expiry_key, self.seq_key], args=args)
        session = _session(res[1])
        assert session is not None
        previous = _session(res[2]) if int(res[0]) == 1 and len(res) > 2 else None
        return SessionStart(session, int(res[0]) == 1, previous)

    async def start(self, user_id: int, chat_id: int, now: datetime) -> tuple[Session, bool]:
        res = await self.start_session(user_id, chat_id, now)
        return res.session, res.created

    async def get(self, user_id: int) -> Session | None:
        """The user's latest session in any state (active, expired, ended), if Redis still has it."""
        with _redis_errors(f"reading the session of {user_id}"):
            raw = await self.client.hgetall(self._key(user_id))
        return _session(raw)

    async def get_active(self, user_id: int, now: datetime) -> Session | None:
        session = await self.get(user_id)
        return session if is_active(session, now) else None

    async def validate(self, user_id: int, now: datetime, *, extend_every_s: float = 0.0) -> Session | None:
        """The user's session (any state) in one round trip, extended to ``now + TTL`` when
        active and last extended at least ``extend_every_s`` ago."""
        now_ms = _ms(now)
        exp = now_ms + self.ttl_ms
        args = [user_id, now_ms, exp, exp + self.grace_ms, int(extend_every_s * 1000)]
        with _redis_errors(f"validating the session of {user_id}"):
            raw = await self._validate(keys=[self._key(user_id), self.expiry_key], args=args)
        return _session(raw)

    async def extend(self, user_id: int, now: datetime) -> Session | None:
        """Extend the active session to ``now + 7 days`` (key expiry and index too); None if not active."""
        session = await self.validate(user_id, now)
        return session if is_active(session, now) else None

    async def end(self, user_id: int, reason: EndReason | str, now: datetime) -> Session | None:
        """End the user's session; returns it when this call ended it (write its ``end_event``).

        A session that had already expired ends as ``expired`` at its expiry time."""
        args = [user_id, _ms(now), EndReason(reason).value, self.grace_ms]
        with _redis_errors(f"ending the session of {user_id}"):
            res = await self._end(keys=[self._key(user_id), self.expiry_key], args=args)
        if not res or int(res[0]) != 1:
            return None
        return _session(res[1])

    async def sweep(self, now: datetime, *, batch: int = 1000) -> list[Session]:
        """End every session expired by ``now``; returns them (each gets an ``expired`` event)."""
        out: list[Session] = []
        while True:
            with _redis_errors("sweeping sessions"):
                res = await self._sweep(
                    keys=[self.expiry_key], args=[_ms(now), batch, f"{self.p}session:user:", self.grace_ms]
                )
            out.extend(s for s in map(_session, res) if s is not None)
            if len(res) < batch:
                # fewer ended than fetched can also mean some were re-scored; one more pass is cheap
                with _redis_errors("sweeping sessions"):
                    left = await self.client.zcount(self.expiry_key, "-inf", _ms(now))
                if not left:
                    return out

    async def count_active(self, now: datetime) -> int:
        with _redis_errors("counting sessions"):
            return int(await self.client.zcount(self.expiry_key, f"({_ms(now)}", "+inf"))

    async def active_user_ids(self, now: datetime) -> list[int]:
        """Users with an active session (for broadcasts and the directory)."""
        with _redis_errors("listing sessions"):
            members: list[Any] = list(
                await self.client.zrangebyscore(self.expiry_key, f"({_ms(now)}", "+inf")
            )
        return [int(m) for m in members]


class _Entry(NamedTuple):
    session: Session
    fresh_until: float


class SessionCache:
    """The middleware's short local cache in front of :class:`RedisSessionStore`.

    - A positive answer is reused for ``ttl_s`` (default 1 s, on a monotonic clock) and
      only while the session is active at ``now``; negative answers are not cached (a
      ``/start`` is seen at once).
    - Extension writes are coalesced: a session is extended in Redis at most once per
      ``extend_every_s`` (default 60 s) per user, and a cache miss validates and extends
      in one round trip. A session may so expire up to a minute before "last interaction
      + 7 days"; at a 7-day scale that does not matter, and it saves a write per update.
    - ``end``/``invalidate`` drop the local entry; another process's cache may keep a
      stopped session for at most ``ttl_s``. Pushes never rely on this cache.
    """

    def __init__(
        self,
        store: RedisSessionStore,
        *,
        ttl_s: float = 1.0,
        extend_every_s: float = 60.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.extend_every_s = extend_every_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def validate(self, user_id: int, now: datetime) -> Session | None:
        """The user's active session, or None (then ``store.get`` tells expired from never)."""
        mono = self.clock()
        entry = self._entries.get(user_id)
        if entry is not None and mono < entry.fresh_until and is_active(entry.session, now):
            session = entry.session
            if (now - session.last_seen_at).total_seconds() < self.extend_every_s:
                self.hits += 1
                return session
        self.misses += 1
        fresh = await self.store.validate(user_id, now, extend_every_s=self.extend_every_s)
        if fresh is None or not is_active(fresh, now):
            self._entries.pop(user_id, None)
            return None
        self._put(fresh, mono)
        return fresh

    def _put(self, session: Session, mono: float | None = None) -> None:
        mono = self.clock() if mono is None else mono
        self._entries[session.user_id] = _Entry(session, mono + self.ttl_s)
        self._entries.move_to_end(session.user_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def prime(self, session: Session) -> None:
        """Cache a session just started (``/start``)."""
        self._put(session)

    def invalidate(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._entries.clear()

    async def start(self, user_id: int, chat_id: int, now: datetime) -> SessionStart:
        res = await self.store.start_session(user_id, chat_id, now)
        self.prime(res.session)
        return res

    async def end(self, user_id: int, reason: EndReason | str, now: datetime) -> Session | None:
        self.invalidate(user_id)
        try:
            return await self.store.end(user_id, reason, now)
        finally:
            self.invalidate(user_id)


# -- session events for the lake ---------------------------------------------------------

SESSION_EVENTS_DATASET = "session_events"
_TS = pa.timestamp("ms", tz="UTC")
SESSION_EVENTS = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),  # started|resumed|expired|ended|blocked
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("chat_id", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # the user's n-th session
        pa.field("reason", pa.string()),  # end events: stop|admin|blocked|expired
        pa.field("session_started_at", _TS, nullable=False),
        pa.field("duration_s", pa.float64()),  # end events
    ]
)
"""Arrow schema of the ``session_events`` dataset (``analytics/session_events``)."""


def session_events_table(events: Iterable[SessionEvent]) -> pa.Table:
    """Lake rows for the sink: ``sink.add("session_events", session_events_table(events))``."""
    return pa.Table.from_pydict(event_rows(events), schema=SESSION_EVENTS)


# -- quotas, cooldowns, push dedup -----------------------------------------------------------

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


class RedisQuotaStore(_Prefixed):
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
        with _redis_errors(f"consuming quota of {user_id}"):
            ok, d, h = await self._consume(keys=self._keys(user_id, now, tz), args=args)
        return QuotaResult(bool(ok), _left(policy.daily_quota, int(d)), _left(policy.hourly_quota, int(h)))

    async def try_consume_many(
        self, requests: Sequence[tuple[int, TierPolicy] | tuple[int, TierPolicy, str]], now: datetime
    ) -> list[QuotaResult]:
        """``try_consume`` for many users in one pipelined round trip; each request is
        ``(user id, policy)`` or ``(user id, policy, tz)`` (the zone of their daily window)."""
        with _redis_errors("consuming quotas"):
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
        with _redis_errors(f"reading quota of {user_id}"):
            d, h = await self.client.mget(self._keys(user_id, now, tz))
        return _left(policy.daily_quota, int(d or 0)), _left(policy.hourly_quota, int(h or 0))

    async def used(self, user_id: int, now: datetime, *, tz: str = "UTC") -> tuple[int, int]:
        with _redis_errors(f"reading quota of {user_id}"):
            d, h = await self.client.mget(self._keys(user_id, now, tz))
        return int(d or 0), int(h or 0)

    async def refund(self, user_id: int, consumed_at: datetime, n: int = 1, *, tz: str = "UTC") -> None:
        """Give back what a push that was finally not sent took (same day/hour as consumed)."""
        with _redis_errors(f"refunding quota of {user_id}"):
            await self._refund(keys=self._keys(user_id, consumed_at, tz), args=[n])

    def _cooldown_key(self, user_id: int, dedup_key: str) -> str:
        return f"{self.p}cooldown:{user_id}:{dedup_key}"

    async def try_cooldown(self, user_id: int, dedup_key: str, cooldown_s: float) -> bool:
        """True (and the cooldown starts) unless ``dedup_key`` is cooling down for this user."""
        with _redis_errors(f"cooldown of {user_id}"):
            res = await self.client.set(
                self._cooldown_key(user_id, dedup_key), 1, nx=True, px=max(1, int(cooldown_s * 1000))
            )
        return bool(res)

    async def cooldown_left(self, user_id: int, dedup_key: str) -> float:
        """Seconds left of the cooldown (0 when none)."""
        with _redis_errors(f"cooldown of {user_id}"):
            ms = await self.client.pttl(self._cooldown_key(user_id, dedup_key))
        return max(0, int(ms)) / 1000

    async def update_dedup(self, user_id: int, opportunity_id: str, ttl_s: int = PUSHED_TTL_S) -> bool:
        """Claim the push of ``opportunity_id`` to ``user_id``: True once, False ever after."""
        with _redis_errors(f"push dedup of {user_id}"):
            res = await self.client.set(f"{self.p}pushed:{user_id}:{opportunity_id}", 1, nx=True, ex=ttl_s)
        return bool(res)


class RedisUpdateDedup(_Prefixed):
    """Webhook ``update_id`` dedup: Telegram redelivers an update until it gets a 200."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "", ttl_s: int = UPDATE_DEDUP_TTL_S) -> None:
        super().__init__(client, prefix)
        self.ttl_s = ttl_s

    def _key(self, update_id: int) -> str:
        return f"{self.p}tg:update:{update_id}"

    async def seen(self, update_id: int) -> bool:
        """True when ``update_id`` was seen before (skip it); marks it seen otherwise."""
        with _redis_errors("update dedup"):
            fresh = await self.client.set(self._key(update_id), 1, nx=True, ex=self.ttl_s)
        return not fresh

    async def forget(self, update_id: int) -> None:
        """Let a redelivery through (processing failed before anything was done)."""
        with _redis_errors("update dedup"):
            await self.client.delete(self._key(update_id))


# -- /forget ----------------------------------------------------------------------------


async def erase_user(client: aioredis.Redis, user_id: int, *, prefix: str = "") -> int:
    """Delete everything Redis holds about ``user_id`` (``/forget``); returns how many keys
    and hash fields went.

    The user record (preferences, API keys), the session and its place in the expiry
    index, the push quotas, cooldowns and exactly-once flags, the items kept for the "missed
    while delayed" digest (``missed:<id>``, never prefixed: the shards'), and the user's entries in the
    eligibility cooldown and pending hashes. The directory drops the user through the change
    stream (one ``-`` entry, an id without personal data, trimmed with the stream). Queued
    pushes are the queue shards' to drop (``Distributor.forget``).
    """
    from actors.directory import COOLDOWN_PREFIX, PENDING_PREFIX

    p = f"{prefix}:" if prefix else ""
    uid = int(user_id)
    users, sessions = RedisUserStore(client, prefix=prefix), RedisSessionStore(client, prefix=prefix)
    gone = int(await users.delete(uid))
    with _redis_errors(f"erasing the data of {uid}"):
        keys: list[Any] = [sessions._key(uid), f"missed:{uid}"]  # + the "missed while delayed" items
        for kind in ("quota:d", "quota:h", "cooldown", "pushed"):
            keys += [k async for k in client.scan_iter(match=f"{p}{kind}:{uid}:*", count=1000)]
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete(*keys)
            pipe.zrem(sessions.expiry_key, uid)
            deleted, _ = await pipe.execute()
        gone += int(deleted)
        for pattern in (f"{p}{COOLDOWN_PREFIX}*", f"{p}{PENDING_PREFIX}*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                gone += int(await client.hdel(key, str(uid)))
    return gone


__all__ = [
    "SESSION_EVENTS",
    "SESSION_EVENTS_DATASET",
    "QuotaResult",
    "RedisQuotaStore",
    "RedisSessionStore",
    "RedisUpdateDedup",
    "RedisUserStore",
    "SessionCache",
    "SessionStart",
    "UserChange",
    "erase_user",
    "redis_client",
    "session_events_table",
]
