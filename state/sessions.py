"""Sessions in Redis (:class:`RedisSessionStore`), the per-process cache in front of it
(:class:`SessionCache`), and the ``session_events`` rows for the lake.

- ``{p}session:user:{uid}`` hash (ms timestamps), ``{p}sessions:by_expiry`` sorted
  set (uid by expiry ms; ended sessions leave it), ``{p}sessions:seq`` hash (uid →
  number of sessions ever started). A session key expires in Redis
  ``SESSION_GRACE`` (2 days) after the session ends, longer than the daily sweep, so
  the sweeper still has the session to write its ``expired`` event; validity is
  always judged from ``expires_ms``, never from the key's presence.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import redis.asyncio as aioredis

from core.sessions import (
    SESSION_TTL,
    EndReason,
    Session,
    SessionEvent,
    event_rows,
    is_active,
    new_token,
)
from state.redis import Prefixed, as_str, from_ms, pairs, redis_errors, to_ms

SESSION_GRACE = timedelta(days=2)


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
    h = {as_str(k): as_str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else pairs(raw)
    if not h:
        return None
    ended_ms = h.get("ended_ms") or None
    return Session.model_construct(
        id=h["id"],
        user_id=int(h["user_id"]),
        chat_id=int(h["chat_id"]),
        created_at=from_ms(h["created_ms"]),
        expires_at=from_ms(h["expires_ms"]),
        last_seen_at=from_ms(h["last_seen_ms"]),
        ended_at=from_ms(ended_ms) if ended_ms else None,
        end_reason=EndReason(h["end_reason"]) if h.get("end_reason") else None,
        seq=int(h.get("seq") or 1),
    )


class SessionStart(NamedTuple):
    session: Session
    created: bool
    previous: Session | None
    """The user's previous session when a new one replaced it (events: ``start_events``)."""


class RedisSessionStore(Prefixed):
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
        now_ms = to_ms(now)
        exp = now_ms + self.ttl_ms
        args: list[int | str] = [user_id, now_ms, exp, exp + self.grace_ms, self.token(), chat_id]
        with redis_errors(f"starting a session for {user_id}"):
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
        with redis_errors(f"reading the session of {user_id}"):
            raw = await self.client.hgetall(self._key(user_id))
        return _session(raw)

    async def get_active(self, user_id: int, now: datetime) -> Session | None:
        session = await self.get(user_id)
        return session if is_active(session, now) else None

    async def validate(self, user_id: int, now: datetime, *, extend_every_s: float = 0.0) -> Session | None:
        """The user's session (any state) in one round trip, extended to ``now + TTL`` when
        active and last extended at least ``extend_every_s`` ago."""
        now_ms = to_ms(now)
        exp = now_ms + self.ttl_ms
        args = [user_id, now_ms, exp, exp + self.grace_ms, int(extend_every_s * 1000)]
        with redis_errors(f"validating the session of {user_id}"):
            raw = await self._validate(keys=[self._key(user_id), self.expiry_key], args=args)
        return _session(raw)

    async def extend(self, user_id: int, now: datetime) -> Session | None:
        """Extend the active session to ``now + 7 days`` (key expiry and index too); None if not active."""
        session = await self.validate(user_id, now)
        return session if is_active(session, now) else None

    async def end(self, user_id: int, reason: EndReason | str, now: datetime) -> Session | None:
        """End the user's session; returns it when this call ended it (write its ``end_event``).

        A session that had already expired ends as ``expired`` at its expiry time."""
        args = [user_id, to_ms(now), EndReason(reason).value, self.grace_ms]
        with redis_errors(f"ending the session of {user_id}"):
            res = await self._end(keys=[self._key(user_id), self.expiry_key], args=args)
        if not res or int(res[0]) != 1:
            return None
        return _session(res[1])

    async def sweep(self, now: datetime, *, batch: int = 1000) -> list[Session]:
        """End every session expired by ``now``; returns them (each gets an ``expired`` event)."""
        out: list[Session] = []
        while True:
            with redis_errors("sweeping sessions"):
                res = await self._sweep(
                    keys=[self.expiry_key], args=[to_ms(now), batch, f"{self.p}session:user:", self.grace_ms]
                )
            out.extend(s for s in map(_session, res) if s is not None)
            if len(res) < batch:
                # fewer ended than fetched can also mean some were re-scored; one more pass is cheap
                with redis_errors("sweeping sessions"):
                    left = await self.client.zcount(self.expiry_key, "-inf", to_ms(now))
                if not left:
                    return out

    async def count_active(self, now: datetime) -> int:
        with redis_errors("counting sessions"):
            return int(await self.client.zcount(self.expiry_key, f"({to_ms(now)}", "+inf"))

    async def active_user_ids(self, now: datetime) -> list[int]:
        """Users with an active session (for broadcasts and the directory)."""
        with redis_errors("listing sessions"):
            members: list[Any] = list(
                await self.client.zrangebyscore(self.expiry_key, f"({to_ms(now)}", "+inf")
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


__all__ = [
    "SESSION_EVENTS",
    "SESSION_EVENTS_DATASET",
    "SESSION_GRACE",
    "RedisSessionStore",
    "SessionCache",
    "SessionStart",
    "session_events_table",
]
