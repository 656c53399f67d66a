"""What the bot's handlers need, passed as aiogram workflow data (``dp["deps"]``), never globals.

- :class:`BotDeps`: settings, the Redis stores, the key vault, the event sink, the clock.
  :func:`build_deps` wires them from a Redis URL; tests build one with a key prefix and
  a fake clock.
- :class:`EventSink`: where lake rows go (``session_events``, ``audit``).
  :class:`NullEventSink` keeps them in memory (tests, the demo without a lake);
  :class:`RaySinkEvents` forwards to the Parquet sink actor (``sink.add.remote``).
- :data:`AUDIT`: the Arrow schema of the ``audit`` dataset; :func:`audit_table` builds rows.
- :class:`RedisGroupStore`: groups the bot was added to (``{p}groups:{chat_id}`` hashes
  and a ``{p}groups`` id set), with their settings.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.crypto import KeyVault, vault_from_settings
from bot.stores import RedisQuotaStore, RedisSessionStore, RedisUserStore, SessionCache, redis_client
from core.accounts import DEFAULT_TIERS, Preferences, Tier, TierPolicy, User, effective_tier
from core.errors import StoreUnavailable
from core.settings import Settings
from pipeline.open_set import RedisOpportunityStore

if TYPE_CHECKING:
    from pipeline.sources.permissions import KeyCheck

log = logging.getLogger(__name__)

AUDIT_DATASET = "audit"
_TS = pa.timestamp("ms", tz="UTC")
AUDIT = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("actor_id", pa.int64(), nullable=False),
        pa.field("chat_id", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # "/start", "cb:sp", "onboard:kinds", …
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),  # "" when nothing to say; never a secret
    ]
)
"""Arrow schema of the ``audit`` dataset (``audit-logs/``)."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    ts: datetime
    actor_id: int
    chat_id: int
    action: str
    ok: bool
    detail: str = ""


def audit_table(rows: Iterable[AuditRow]) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pydict(
        {
            "ts": [r.ts.astimezone(UTC) for r in rows],
            "actor_id": [r.actor_id for r in rows],
            "chat_id": [r.chat_id for r in rows],
            "action": [r.action for r in rows],
            "ok": [r.ok for r in rows],
            "detail": [r.detail[:500] for r in rows],
        },
        schema=AUDIT,
    )


# -- event sink ------------------------------------------------------------------------------


@runtime_checkable
class EventSink(Protocol):
    async def emit(self, dataset: str, table: pa.Table) -> None: ...


class NullEventSink:
    """Keeps every table in memory (``tables``); ``rows(dataset)`` reads them back as dicts."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, pa.Table]] = []

    async def emit(self, dataset: str, table: pa.Table) -> None:
        self.tables.append((dataset, table))

    def rows(self, dataset: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, table in self.tables:
            if name == dataset:
                out.extend(table.to_pylist())
        return out


class RaySinkEvents:
    """Forwards tables to the Parquet sink actor: ``await sink.add.remote(dataset, table)``."""

    def __init__(self, sink_handle: Any) -> None:
        self.sink = sink_handle

    async def emit(self, dataset: str, table: pa.Table) -> None:
        await self.sink.add.remote(dataset, table)


# -- groups ----------------------------------------------------------------------------------


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


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        h = {_s(k): _s(v) for k, v in raw.items()}
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


# -- the bundle ------------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BotDeps:
    settings: Settings
    users: RedisUserStore
    sessions: RedisSessionStore
    cache: SessionCache
    quotas: RedisQuotaStore
    opportunities: RedisOpportunityStore
    groups: RedisGroupStore
    vault: KeyVault
    events: EventSink
    clock: Callable[[], datetime] = utc_now
    bot_username: str = ""
    """Empty: asked from ``getMe`` (aiogram caches it per ``Bot``)."""
    tiers: Mapping[Tier, TierPolicy] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    client: aioredis.Redis | None = None
    """The Redis client :func:`build_deps` created (closed by :meth:`aclose`)."""
    explainer: Callable[[int, Mapping[str, Any]], Awaitable[tuple[int, str]]] | None = None
    """``/admin why``: the distributor's answer (``dist:engine``) where one runs; None: a
    directory of this Redis is loaded for the question (fine for small deployments)."""

    forgetter: Callable[[int], Awaitable[Any]] | None = None
    """``/forget``: the running distributor drops the user's directory row and queued pushes."""

    replayer: Callable[[int], Awaitable[int]] | None = None
    """``/admin replay``: put up to N dead letters back in their queues (the distributor)."""

    key_checker: Callable[[str, str, str, str | None], Awaitable[KeyCheck]] | None = None
    """``/apikeys add``: ask the exchange what a key may do (exchange, key, secret, password).
    None: :func:`pipeline.sources.permissions.check_key` with ``settings.market`` (its
    endpoints: the exchanges, or their emulators)."""

    async def check_key(self, exchange: str, api_key: str, secret: str, password: str | None) -> KeyCheck:
        if self.key_checker is not None:
            return await self.key_checker(exchange, api_key, secret, password)
        from pipeline.sources.permissions import check_key  # ccxt loads on first use only

        return await check_key(exchange, self.settings.market, api_key, secret, password)

    async def replay_dead_letters(self, limit: int) -> int | None:
        """How many were replayed; None when no distributor runs to take them."""
        return None if self.replayer is None else await self.replayer(limit)

    async def dead_letters(self) -> int:
        from actors.queues import DEAD_LETTERS_KEY

        return int(await self.users.client.llen(DEAD_LETTERS_KEY))

    async def explain(self, user_id: int, opportunity: Mapping[str, Any]) -> tuple[int, str]:
        """The eligibility layer (0 = eligible) and reason deciding ``user_id`` for it."""
        if self.explainer is not None:
            return await self.explainer(user_id, opportunity)
        return await self.explain_locally(user_id, opportunity)

    async def explain_locally(self, user_id: int, opportunity: Mapping[str, Any]) -> tuple[int, str]:
        """:meth:`explain` from a directory of this Redis loaded for the question."""
        from actors.directory import UserDirectory
        from core.eligibility import OpportunityView

        directory = UserDirectory(self.settings, self.users.client, prefix=self.users.prefix)
        now = self.now()
        await directory.load(now)
        try:
            layer, reason = await directory.why(user_id, OpportunityView.from_event(opportunity), now)
        except KeyError:
            return 1, "session.none"
        return int(layer), str(reason)

    def now(self) -> datetime:
        return self.clock()

    @property
    def exchanges(self) -> list[str]:
        return [e.lower() for e in self.settings.market.exchanges]

    async def symbol_choices(self, prefs: Preferences | None = None) -> list[str]:
        """What the symbol picker offers: the configured symbols; with ``top:N`` (the list
        is discovered at run time) the symbols of the open opportunities. A user's current
        picks are always offered, so they can be removed."""
        from core.universe import universe_size

        configured = list(self.settings.market.symbols)
        if universe_size(configured) is not None:
            configured = sorted({o.candidate.symbol for o in await self.opportunities.all_open()})
        picked = sorted(prefs.symbols - set(configured)) if prefs is not None else []
        return configured + picked

    def tier_of(self, user: User) -> Tier:
        return effective_tier(user.id, user.tier, frozenset(self.settings.superadmin_ids))

    def policy_for(self, user: User) -> TierPolicy:
        return self.tiers[self.tier_of(user)]

    async def emit(self, dataset: str, table: pa.Table) -> None:
        """Send rows to the sink; a sink failure is logged, never a user-facing error."""
        if table.num_rows == 0:
            return
        try:
            await self.events.emit(dataset, table)
        except Exception:  # the lake is best effort from the bot's point of view
            log.exception("could not emit %d %s rows", table.num_rows, dataset)

    async def audit(self, rows: Iterable[AuditRow]) -> None:
        await self.emit(AUDIT_DATASET, audit_table(rows))

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


async def build_deps(
    settings: Settings,
    redis_url: str,
    *,
    events: EventSink,
    prefix: str = "",
    opportunities_prefix: str = "opps",
    clock: Callable[[], datetime] = utc_now,
    bot_username: str = "",
    vault: KeyVault | None = None,
    client: aioredis.Redis | None = None,
) -> BotDeps:
    """Wire the stores on one Redis client. ``prefix`` isolates keys (tests); the open
    opportunities are read where the pipeline writes them (``opportunities_prefix``)."""
    own = client is None
    client = client or redis_client(redis_url)
    sessions = RedisSessionStore(client, prefix=prefix)
    return BotDeps(
        settings=settings,
        users=RedisUserStore(client, prefix=prefix),
        sessions=sessions,
        cache=SessionCache(sessions),
        quotas=RedisQuotaStore(client, prefix=prefix),
        opportunities=RedisOpportunityStore.from_settings(client, settings, prefix=opportunities_prefix),
        groups=RedisGroupStore(client, prefix=prefix),
        vault=vault or vault_from_settings(settings),
        events=events,
        clock=clock,
        bot_username=bot_username,
        client=client if own else None,
    )


__all__ = [
    "AUDIT",
    "AUDIT_DATASET",
    "AuditRow",
    "BotDeps",
    "EventSink",
    "Group",
    "NullEventSink",
    "RaySinkEvents",
    "RedisGroupStore",
    "audit_table",
    "build_deps",
    "utc_now",
]
