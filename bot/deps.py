"""What the bot's handlers need, passed as aiogram workflow data (``dp["deps"]``), never globals.

- :class:`BotDeps`: settings, the Redis stores, the key vault, the event sink, the clock.
  :func:`build_deps` wires them from a Redis URL; tests build one with a key prefix and
  a fake clock.
- :class:`EventSink`: where lake rows go (``session_events``, ``audit``).
  :class:`NullEventSink` keeps them in memory (tests, the demo without a lake);
  :class:`RaySinkEvents` forwards to the Parquet sink actor (``sink.add.remote``).

The stores are the online state's (:mod:`state`); what runs in the actors (the
distributor's directory for ``/admin why``, its replay and ``/forget``) reaches the bot
only through the small ports below, which serve/ wires (:mod:`serve.handlers`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa
import redis.asyncio as aioredis

from bot.crypto import KeyVault, vault_from_settings
from core.accounts import DEFAULT_TIERS, Preferences, Tier, TierPolicy, User, effective_tier
from core.settings import Settings
from pipeline.open_set import RedisOpportunityStore
from state.audit import AUDIT_DATASET, AuditRow, audit_table
from state.groups import RedisGroupStore
from state.keys import DEAD_LETTERS_KEY
from state.quotas import RedisQuotaStore
from state.redis import redis_client
from state.sessions import RedisSessionStore, SessionCache
from state.users import RedisUserStore
from state.webhooks import RedisWebhookStore

if TYPE_CHECKING:
    from pipeline.sources.permissions import KeyCheck

log = logging.getLogger(__name__)

# -- ports (serve/ wires them with what runs in the actors) ---------------------------------


class Explainer(Protocol):
    """``/admin why``: the eligibility layer (0 = eligible) and the reason deciding one user
    for one opportunity (an opportunity event's fields)."""

    async def __call__(self, user_id: int, opportunity: Mapping[str, Any], /) -> tuple[int, str]: ...


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
    explainer: Explainer | None = None
    """``/admin why``: the distributor's answer (``dist:engine``) where one runs, else a
    directory of this Redis loaded for the question; serve/ wires it
    (:func:`serve.handlers.local_explainer`). None: ``/admin why`` cannot answer."""

    forgetter: Callable[[int], Awaitable[Any]] | None = None
    """``/forget``: the running distributor drops the user's directory row and queued pushes."""

    replayer: Callable[[int], Awaitable[int]] | None = None
    """``/admin replay``: put up to N dead letters back in their queues (the distributor)."""

    webhooks: RedisWebhookStore | None = None
    """``/webhooks``: the users' outbound webhook endpoints (:mod:`state.webhooks`)."""

    webhook_tester: Callable[[str], Awaitable[dict[str, Any]]] | None = None
    """``/webhooks test``: one sample POST (``actors.outbound.probe_endpoint``); serve/ wires it."""

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

        return int(await self.users.client.llen(DEAD_LETTERS_KEY))

    async def explain(self, user_id: int, opportunity: Mapping[str, Any]) -> tuple[int, str]:
        """The eligibility layer (0 = eligible) and reason deciding ``user_id`` for it."""
        if self.explainer is None:
            raise LookupError("no eligibility explainer wired (serve.handlers.local_explainer)")
        return await self.explainer(user_id, opportunity)

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
        webhooks=RedisWebhookStore(client, prefix=prefix),
        vault=vault or vault_from_settings(settings),
        events=events,
        clock=clock,
        bot_username=bot_username,
        client=client if own else None,
    )


__all__ = [
    "BotDeps",
    "EventSink",
    "Explainer",
    "NullEventSink",
    "RaySinkEvents",
    "build_deps",
    "utc_now",
]
