"""The open opportunities in Redis: what ``/opportunities`` and ``GET /api/opportunities``
read, what a restarted pair coordinator restores, and the recently closed ones for the
cooldown (:class:`RedisOpportunityStore`). Their lake rows: :mod:`pipeline.opportunities`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.candidates import OppKey
from core.errors import StoreUnavailable
from core.lifecycle import ClosedOpportunity, EventType, LifecycleEvent, OpenOpportunity
from core.models import OpportunityKind
from pipeline.opportunities import _json

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pair(buy: str | None, sell: str | None) -> str:
    """Unordered exchange pair: a coordinator owns both directions."""
    a, b = sorted((buy or "", sell or ""))
    return f"{a}|{b}"


def _key_str(key: OppKey) -> str:
    return "|".join(key)


DEFAULT_STALE_AFTER_S: dict[str, float] = {
    "spot_spread": 3.0,
    "funding_rate": 61.0,
    "technical": 121.0,
}
"""``Settings().stale_after()`` with every default (freshness + 1 s of hysteresis)."""

KIND_ORDER: tuple[str, ...] = tuple(k.value for k in OpportunityKind)
"""Kinds in the order a mixed read returns them (each ranked by its own index)."""


class RedisOpportunityStore:
    """Open opportunities in Redis (``redis.asyncio``); errors become ``StoreUnavailable``.

    Keys under ``prefix`` (default ``opps``):

    - ``{p}:open`` hash ``opportunity_id → JSON`` (:meth:`OpenOpportunity.to_dict`, with
      ``seen_at`` since this release);
    - ``{p}:open:seen`` sorted set ``opportunity_id → wall-clock ms`` a coordinator last
      saw it live (refreshed while it stays live, :meth:`touch`);
    - ``{p}:open:by_net:{kind}`` sorted sets by ``net_bps``, one per kind: spot ``net_bps``
      is an instant edge, funding ``net_bps`` a return over the funding horizon, so kinds
      are never ranked in one index (``{p}:open:by_net``, the mixed index of older
      releases, is no longer written; closes still remove from it);
    - ``{p}:open:pair:{a}|{b}`` set of ids, ``a ≤ b`` (both directions of a pair);
    - ``{p}:closed:{kind}|{symbol}|{buy}|{sell}`` JSON of a closed one, TTL = cooldown;
    - ``{p}:closed:pair:{a}|{b}`` sorted set of closed keys by close time (ms).

    Readers (:meth:`open_opportunities`, :meth:`open_by_kind`, :meth:`get`) drop an entry
    last seen live longer ago than ``stale_after_s[kind]`` (``Settings.stale_after()``):
    its coordinator would have closed it by then, so it is dead data (the detector or its
    Redis writes are down). The last-seen time is the ``seen`` score, else the body's
    ``seen_at``, else (a record of an older release) its ``updated_at``. ``stale_after_s``
    None: the bounds of the default settings; ``{}``: no bound (the open set as it is).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "opps",
        cooldown_s: float = 60.0,
        stale_after_s: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.cooldown_s = cooldown_s
        self.stale_after_s = dict(DEFAULT_STALE_AFTER_S if stale_after_s is None else stale_after_s)
        self.clock = clock

    @classmethod
    def from_settings(
        cls, client: aioredis.Redis, settings: Settings, *, prefix: str = "opps"
    ) -> RedisOpportunityStore:
        return cls(
            client,
            prefix=prefix,
            cooldown_s=settings.opportunities.cooldown_s,
            stale_after_s=settings.stale_after(),
        )

    # -- keys
    @property
    def _open(self) -> str:
        return f"{self.prefix}:open"

    @property
    def _seen(self) -> str:
        return f"{self.prefix}:open:seen"

    def _by_net(self, kind: str | None = None) -> str:
        return f"{self.prefix}:open:by_net" + (f":{kind}" if kind else "")

    def _open_pair(self, pair: str) -> str:
        return f"{self.prefix}:open:pair:{pair}"

    def _closed(self, key: OppKey) -> str:
        return f"{self.prefix}:closed:{_key_str(key)}"

    def _closed_pair(self, pair: str) -> str:
        return f"{self.prefix}:closed:pair:{pair}"

    # -- writes
    async def apply(self, events: Sequence[LifecycleEvent], *, seen_ms: int | None = None) -> None:
        """Write a tick's events in one pipelined round trip (MULTI/EXEC).

        ``seen_ms``: wall-clock ms the opened/updated ones were seen live (default: now).
        Applying the same events again leaves the same state (a failed write is retried).
        """
        if not events:
            return
        seen_ms = int(self.clock() * 1000) if seen_ms is None else seen_ms
        seen_at = datetime.fromtimestamp(seen_ms / 1000, UTC)
        ttl_ms = max(1, int(self.cooldown_s * 1000))
        pipe = self.client.pipeline(transaction=True)
        for ev in events:
            cand = ev.candidate
            kind = cand.kind.value
            pair = _pair(cand.buy_exchange, cand.sell_exchange)
            oid = ev.opportunity_id
            net = cand.net_bps if cand.net_bps == cand.net_bps else 0.0
            if ev.event is EventType.CLOSED:
                closed = ClosedOpportunity(oid, cand, ev.opened_at, ev.at)
                pipe.hdel(self._open, oid)
                pipe.zrem(self._seen, oid)
                pipe.zrem(self._by_net(), oid)
                pipe.zrem(self._by_net(kind), oid)
                pipe.srem(self._open_pair(pair), oid)
                if self.cooldown_s > 0:
                    at_ms = int(ev.at.timestamp() * 1000)
                    pipe.set(self._closed(cand.key), _json(closed.to_dict()), px=ttl_ms)
                    pipe.zadd(self._closed_pair(pair), {_key_str(cand.key): at_ms})
                    pipe.zremrangebyscore(self._closed_pair(pair), "-inf", f"({at_ms - ttl_ms}")
                    pipe.pexpire(self._closed_pair(pair), ttl_ms)
                continue
            opened_at = ev.opened_at
            body = OpenOpportunity(oid, cand, opened_at, ev.at, ev.reopened, seen_at).to_dict()
            pipe.hset(self._open, oid, _json(body))
            pipe.zadd(self._seen, {oid: seen_ms})
            pipe.zadd(self._by_net(kind), {oid: net})
            pipe.sadd(self._open_pair(pair), oid)
            if ev.event is EventType.OPENED:
                pipe.delete(self._closed(cand.key))
                pipe.zrem(self._closed_pair(pair), _key_str(cand.key))
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: writing {len(events)} opportunity events failed: {exc}") from exc

    async def touch(self, ids: Sequence[str], seen_ms: int | None = None) -> None:
        """Mark open opportunities as seen live at ``seen_ms`` (wall-clock ms, default now)."""
        if not ids:
            return
        seen_ms = int(self.clock() * 1000) if seen_ms is None else seen_ms
        try:
            await self.client.zadd(self._seen, dict.fromkeys(ids, seen_ms))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: refreshing {len(ids)} open opportunities failed: {exc}") from exc

    # -- reads
    def _fresh(self, body: dict[str, Any], seen_ms: float | None, now_s: float) -> bool:
        """Whether an entry was seen live within its kind's bound (and ``body`` gets ``seen_at``)."""
        if seen_ms is not None:
            seen_s = seen_ms / 1000.0
            body["seen_at"] = datetime.fromtimestamp(seen_s, UTC).isoformat()
        else:
            stamp = body.get("seen_at") or body.get("updated_at") or body.get("opened_at")
            if not stamp:
                return True  # no time at all: cannot judge (the start reconcile closes it)
            try:
                seen_s = _dt_any(stamp).timestamp()
            except (TypeError, ValueError):
                return True
        bound = self.stale_after_s.get(
            str(body.get("kind")), max(self.stale_after_s.values(), default=math.inf)
        )
        return now_s - seen_s <= bound

    async def _bodies(self, ids: Sequence[bytes | str]) -> list[tuple[dict[str, Any], float | None]]:
        names = [_s(i) for i in ids]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self._open, names)
        pipe.zmscore(self._seen, names)
        bodies, scores = await pipe.execute()
        return [(json.loads(b), sc) for b, sc in zip(bodies, scores, strict=True) if b is not None]

    async def _ranked(self, kind: str, limit: int, now_s: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start, chunk = 0, max(limit, 50)
        while len(out) < limit:
            ids = cast(
                "list[bytes | str]", await self.client.zrevrange(self._by_net(kind), start, start + chunk - 1)
            )
            if not ids:
                break
            out += [body for body, seen in await self._bodies(ids) if self._fresh(body, seen, now_s)]
            start += chunk
        return out[:limit]

    async def open_opportunities(
        self, kind: OpportunityKind | str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Open opportunities seen live within their bound, best ``net_bps`` first per kind.

        One kind: up to ``limit`` of it. ``None``: up to ``limit`` of each kind, kind
        after kind (spot spreads, funding carries, technical signals), each ranked by its
        own index — edges of different kinds are not comparable.
        """
        if limit <= 0:
            return []
        grouped = await self.open_by_kind(limit, kinds=[OpportunityKind(kind).value] if kind else None)
        return [body for rows in grouped.values() for body in rows]

    async def open_by_kind(
        self, limit: int = 100, *, kinds: Sequence[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """``{kind: [open opportunities, best net_bps first]}`` for every kind (or ``kinds``)."""
        now_s = self.clock()
        try:
            return {k: await self._ranked(k, limit, now_s) for k in (kinds or KIND_ORDER)}
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading open opportunities failed: {exc}") from exc

    async def get(self, opportunity_id: str) -> dict[str, Any] | None:
        """One open opportunity, None when it is not open (or not seen live within its bound)."""
        try:
            found = await self._bodies([opportunity_id])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading opportunity {opportunity_id} failed: {exc}") from exc
        if not found:
            return None
        body, seen = found[0]
        return dict(body) if self._fresh(body, seen, self.clock()) else None

    async def count(self) -> int:
        """Entries in the open set (stale ones not swept yet included)."""
        try:
            return int(await self.client.hlen(self._open))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: counting open opportunities failed: {exc}") from exc

    async def all_open(self) -> list[OpenOpportunity]:
        """Every entry of the open set, stale or not, with ``seen_at`` from the ``seen`` scores.

        For the start reconcile and the stop sweep; a malformed body is skipped (logged).
        """
        try:
            raw = {_s(k): v for k, v in (await self.client.hgetall(self._open)).items()}
            ids = list(raw)
            scores = await self.client.zmscore(self._seen, ids) if ids else []
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading the open set failed: {exc}") from exc
        out = []
        for oid, score in zip(ids, scores, strict=True):
            try:
                opp = OpenOpportunity.from_dict(json.loads(raw[oid]))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("open opportunity %s unreadable: %s", _s(oid), exc)
                continue
            if score is not None:
                opp = replace(opp, seen_at=datetime.fromtimestamp(score / 1000, UTC))
            out.append(opp)
        return out

    def is_stale(self, opp: OpenOpportunity, now_s: float | None = None) -> bool:
        now_s = self.clock() if now_s is None else now_s
        bound = self.stale_after_s.get(opp.candidate.kind.value, math.inf)
        return now_s - opp.last_seen.timestamp() > bound

    async def open_pairs(self) -> list[tuple[str, str]]:
        """Exchange pairs with an entry in the open set (a restarted detector ticks them)."""
        pairs: set[tuple[str, str]] = set()
        try:
            async for key in self.client.scan_iter(match=self._open_pair("*"), count=500):
                a, _, b = _s(key).rsplit(":", 1)[-1].partition("|")
                pairs.add((a or b, b or a))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: listing open pairs failed: {exc}") from exc
        return sorted(pairs)

    async def for_pair(self, buy: str | None, sell: str | None) -> list[OpenOpportunity]:
        """Open opportunities of an exchange pair, both directions (to restore a tracker)."""
        try:
            ids = await self.client.smembers(self._open_pair(_pair(buy, sell)))
            if not ids:
                return []
            ordered = sorted(_s(i) for i in ids)
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self._open, ordered)
            pipe.zmscore(self._seen, ordered)
            bodies, scores = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading opportunities of {buy}/{sell} failed: {exc}") from exc
        out = []
        for body, score in zip(bodies, scores, strict=True):
            if body is None:
                continue
            opp = OpenOpportunity.from_dict(json.loads(body))
            if score is not None:
                opp = replace(opp, seen_at=datetime.fromtimestamp(score / 1000, UTC))
            out.append(opp)
        return out

    async def recent_closed(self, key: OppKey) -> ClosedOpportunity | None:
        """The opportunity of ``key`` closed within the cooldown, if any."""
        try:
            body = await self.client.get(self._closed(key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: reading closed opportunity {key} failed: {exc}") from exc
        return None if body is None else ClosedOpportunity.from_dict(json.loads(body))

    async def recent_closed_for_pair(
        self, buy: str | None, sell: str | None, now: datetime | None = None
    ) -> list[ClosedOpportunity]:
        """Every opportunity of the pair closed within the cooldown (to restore a tracker)."""
        now_ms = int((now.timestamp() if now else time.time()) * 1000)
        since = now_ms - int(self.cooldown_s * 1000)
        try:
            pair = self._closed_pair(_pair(buy, sell))
            keys = cast("list[bytes | str]", await self.client.zrangebyscore(pair, since, "+inf"))
            if not keys:
                return []
            bodies = await self.client.mget([f"{self.prefix}:closed:{_s(k)}" for k in keys])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(
                f"redis: reading closed opportunities of {buy}/{sell} failed: {exc}"
            ) from exc
        return [ClosedOpportunity.from_dict(json.loads(b)) for b in bodies if b is not None]


def _dt_any(value: Any) -> datetime:
    out = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return out if out.tzinfo else out.replace(tzinfo=UTC)


__all__ = ["DEFAULT_STALE_AFTER_S", "KIND_ORDER", "RedisOpportunityStore"]
