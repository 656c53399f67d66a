"""A queue shard's state: its settings, the tier policies, its queues and heap, the dedup
sets and marks, the counters, and the ports it sends through (:class:`Notifier`,
:class:`Limiter`).

:class:`ShardBase` holds them; :class:`~actors.queues.persistence.ShardPersistence`
(the Redis log and the rows), :class:`~actors.queues.sending.ShardSending` (the pump and
the sends) and :class:`~actors.queues.shard.QueueShard` (intake, life, reporting) add the
behaviour, each on the one before."""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import pyarrow as pa
import redis.asyncio as aioredis

from actors.directory import DeliveryMarks
from actors.edits import SentPush, SentPushes
from actors.missed import MissedDigests
from actors.queues.batches import shard_name
from actors.queues.bots import ChatBots
from actors.ratelimit import configured_rate
from core.accounts import Tier, TierPolicy, tier_policies
from core.experiments import NO_ASSIGNMENT, Assignment, assign
from core.flood import DepartureWindow
from core.missed import MissedDigest
from core.notifications import Digest, Notification, SendResult
from core.queueing import ChatQueue, QueueItem
from core.settings import Settings
from pipeline.deliveries import Audience
from state.quotas import RedisQuotaStore
from state.redis import PipelineBatcher

if TYPE_CHECKING:
    from actors.outbound import OutboundHandoff
    from actors.queues.shard import QueueShard


SEND_CONCURRENCY = 100
"""Requests in flight per shard: the connections of aiogram's HTTP session (its default), so that no
request counted as departed waits for a connection."""


class Notifier(Protocol):
    async def send(
        self,
        chat_id: int | str,
        item: Notification | Digest | MissedDigest,
        *,
        silent: bool,
        tz: str = "UTC",
        now: datetime | None = None,
        lang: str | None = None,
    ) -> SendResult: ...

    async def edit(
        self,
        chat_id: int | str,
        message_id: int,
        item: Notification | Digest,
        *,
        tz: str,
        sent: datetime,
        closed: Mapping[str, float],
        lang: str | None = None,
    ) -> SendResult: ...


LimiterRequest = tuple[int | str, bool] | tuple[int | str, bool, float | None]
"""``(chat, is_group[, sent_ago])``, as ``actors.ratelimit.RateLimiter.reserve`` takes it."""


class Limiter(Protocol):
    async def reserve(self, requests: list[LimiterRequest]) -> list[float]: ...

    async def pause(self, retry_after_s: float, chat_id: int | str | None = None) -> None: ...


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def _ts(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


ASSIGNMENTS_MAX = 200_000
"""Users whose experiment assignment a shard remembers (then forgotten all at once: it is a hash away)."""

EDIT_CHUNK_S = 0.03
"""Close edits are reserved in chunks of about this much of the shard's share of the rate (a
new push waits at most about this long behind the edits reserved before it)."""


@dataclass(slots=True)
class ShardStats:
    queued: int = 0
    duplicates: int = 0
    sent: int = 0
    messages: int = 0
    digests: int = 0
    grouped: int = 0
    """Messages that were one group of legs (the same symbol, several venues to one)."""
    joined: int = 0
    """Legs that joined their group's push already sent to the chat (the message edited)."""
    expired: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    """429 answers from Telegram (the rate limiter should keep this at zero)."""
    blocked: int = 0
    failed: int = 0
    dead_letters: int = 0
    ambiguous: int = 0
    redis_errors: int = 0
    expire_calls: int = 0
    """Closes / not-pushable flips the distributor sent here."""
    expire_foreign: int = 0
    """Ids in those calls that this shard never queued (the distributor should send none)."""
    refunds: int = 0
    charged: int = 0
    """Sent items whose cooldown started here."""
    edits: int = 0
    """Sent pushes edited when an opportunity they showed closed ("closed after …")."""
    edits_failed: int = 0
    edits_dropped: int = 0
    """Close edits dropped from a full edit queue (their messages keep their text)."""
    late_slots: int = 0
    """Sends whose slot left the departure window before they could go, and took a new one."""
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))
    first_sends: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=10_000))
    """Per opportunity, its first send from this shard: (detected → queued here, queued → sent) ms."""
    first_sent: set[str] = field(default_factory=set)


class ShardBase:
    """One shard's state and the two helpers every layer uses (:meth:`_push`, :meth:`_policy`)."""

    def __init__(
        self,
        settings: Settings,
        index: int,
        *,
        client: aioredis.Redis,
        notifier: Notifier,
        limiter: Limiter,
        emit: Callable[[str, pa.Table], Awaitable[None] | None] | None = None,
        on_blocked: Callable[[int | str, int | None], Awaitable[None]] | None = None,
        is_open: Callable[[Sequence[str]], Awaitable[set[str]]] | None = None,
        on_outcomes: Callable[[list[tuple[int, str]]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        chat_bots: ChatBots | None = None,
    ) -> None:
        self.settings = settings
        self.chat_bots = chat_bots or ChatBots.single()
        """Which bot of the pool each chat's pushes go through (docs/bot-pool.md)."""
        self.dist = settings.distribution
        self.index = index
        self.prefix = shard_name(index)
        self.client = client
        self.notifier = notifier
        self.limiter = limiter
        self.emit = emit
        self.on_blocked = on_blocked
        self.is_open = is_open
        self.on_outcomes = on_outcomes
        """Told the (target, dedup key) pairs charged or released, after they are in Redis
        (the distributor's directory re-reads them)."""
        self.clock = clock
        self.experiments = [e for e in settings.experiments if e.enabled]
        """The notification-strategy experiments running (``ARBFLOW_EXPERIMENTS``; docs/experiments.md)."""
        self._assignments: dict[int, Assignment] = {}
        self.policies: dict[Tier, TierPolicy] = tier_policies(self.dist.tiers)
        free = self.policies[Tier.FREE]
        m = self.dist.group_multiplier
        self.group_policy = free.model_copy(
            update={
                "daily_quota": None if free.daily_quota is None else int(free.daily_quota * m),
                "hourly_quota": None if free.hourly_quota is None else int(free.hourly_quota * m),
            }
        )
        self.rate = configured_rate(settings) * max(1, len(self.chat_bots.bots))
        """Messages/s of the pool: each bot has the configured rate of its own."""
        self.budget = max(8, math.ceil(1.5 * self.rate / max(1, self.dist.shards)))
        """Sends scheduled at once: about 1.5 s of this shard's share of the global rate, so
        slots are reserved just ahead of time and a new urgent push does not queue behind
        minutes of reservations."""
        self.chats: dict[int | str, ChatQueue] = {}
        self.zones: dict[int | str, str] = {}
        """Each chat's IANA zone as the last batch for it said (interned; absent: UTC)."""
        self.langs: dict[int | str, str] = {}
        """Each chat's language as the last batch for it said (interned; absent: English)."""
        self.sent = SentPushes()
        """Pushes sent, to edit when what they showed closes (:mod:`actors.edits`)."""
        self._edits: set[asyncio.Task[None]] = set()
        self._edit_queue: deque[SentPush] = deque()
        """Pushes to edit (what they showed closed), oldest first: the pump's spare room."""
        self._edit_ids: set[int] = set()
        self._edits_until = 0.0
        """No new chunk of edits is reserved before this (the last chunk's slots)."""
        self._edit_chunk = max(1, math.ceil(self.rate * EDIT_CHUNK_S / max(1, self.dist.shards)))
        self.notifications: dict[str, Notification] = {}
        self.remaining: Counter[str] = Counter()
        """Chats not finished per batch; a batch's Redis record is deleted at zero."""
        self.batches_of: dict[str, set[str]] = defaultdict(set)
        self.known: dict[str, set[int | str]] = defaultdict(set)
        """(opportunity → chats) ever queued here while its batch lives: the dedup set."""
        self.closed: dict[str, str] = {}
        """Queued-here ids closed or no longer pushable (→ the expiry reason), oldest first; an
        id leaves with its last batch, and at most :data:`CLOSED_MAX` are kept."""
        self.dedup_keys: dict[str, str] = {}
        """Each queued opportunity's dedup key (its cooldown and pending marks)."""
        self.unsent: dict[str, set[int | str]] = defaultdict(set)
        """Chats whose item for the id expired unsent: a re-offer of the id may queue them again."""
        self.cooled: dict[tuple[int, str], int] = {}
        """(target, dedup key) → end of the cooldown (ms) this shard started by sending: never
        sent again before it ends, even while Redis and the distributor do not know yet."""
        self.marks = DeliveryMarks(client)
        self._charged: dict[tuple[str, int], list[int]] = defaultdict(list)
        """(dedup key, cooldown s) → targets sent to since the last flush."""
        self._released: dict[str, list[int]] = defaultdict(list)
        """dedup key → targets whose item ended unsent since the last flush."""
        self._refunds: list[tuple[int, int, str]] = []
        """(target, ms its quota was drawn, the zone of its daily window) of items that drew
        it and ended unsent."""
        self._touched: list[tuple[int, str]] = []
        self.busy: set[int | str] = set()
        self.departures = DepartureWindow()
        """The moments of the slots the limiter gave lately (are they near this shard's share?)."""
        self._bot_windows: dict[int, DepartureWindow] = {}
        """With a pool, the other bots' departure windows (Telegram counts each bot's own)."""
        self.ended: dict[int | str, float] = {}
        self._ended_cap = 4096
        """Chat → when its last send's answer came (``clock``): the limiter spaces the chat's next
        message from there (``sent_ago``), so a late send does not crowd the next one."""
        self.heap: list[tuple[int, str, int | str]] = []
        self.rows: list[dict[str, Any]] = []
        self.stats_ = ShardStats()
        self.wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._emits: set[asyncio.Task[Any]] = set()
        self._send_slots = asyncio.Semaphore(SEND_CONCURRENCY)
        self._inflight_writes = PipelineBatcher(client)
        self._done_writes = PipelineBatcher(client, transaction=True)
        """The marks before and after each send, shared by the sends of one loop turn."""
        self._pending_done: dict[str, list[int | str]] = defaultdict(list)
        self.quotas = RedisQuotaStore(client)
        self.parked: dict[int | str, list[tuple[int, str, int | str]]] = defaultdict(list)
        """Heap entries of chats with a send in flight, back on the heap when it ends."""
        self.events: dict[str, dict[str, Any]] = {}
        """Each batch's opportunity event (for dead letters)."""
        self.outbound: OutboundHandoff | None = None
        """Pushes of users with outbound webhooks, handed to this shard's webhook sender when
        they end (:mod:`actors.outbound`; the actor sets it)."""
        self.missed = MissedDigests(cast("QueueShard", self))  # the layers make one QueueShard
        """What closed while a tier delay held it, and its digest (:mod:`actors.missed`)."""

    # -- keys -------------------------------------------------------------------------------
    @property
    def batches_key(self) -> str:
        return f"{self.prefix}:batches"

    def done_key(self, batch: str) -> str:
        return f"{self.prefix}:done:{batch}"

    def inflight_key(self, batch: str) -> str:
        return f"{self.prefix}:inflight:{batch}"

    def _push(self, item: QueueItem) -> None:
        queue = self.chats.get(item.chat)
        if queue is None:
            queue = self.chats[item.chat] = ChatQueue()
        queue.add(item)
        heapq.heappush(self.heap, (item.due_ms, item.opportunity_id, item.chat))

    def _window(self, chat: int | str) -> DepartureWindow:
        """The departure window of the bot ``chat``'s pushes go through."""
        bot = self.chat_bots.of(chat)
        if bot is None or bot == self.chat_bots.primary:
            return self.departures
        window = self._bot_windows.get(bot)
        if window is None:
            window = self._bot_windows[bot] = DepartureWindow()
        return window

    def strategy_for(self, user_id: int | None) -> Assignment:
        """The user's experiment, variant and strategy (:func:`core.experiments.assign`,
        remembered per user; groups and channels, ``None``, take part in none)."""
        if user_id is None or not self.experiments:
            return NO_ASSIGNMENT
        found = self._assignments.get(user_id)
        if found is None:
            if len(self._assignments) >= ASSIGNMENTS_MAX:
                self._assignments.clear()
            found = self._assignments[user_id] = assign(user_id, self.experiments)
        return found

    def _assignment(self, item: QueueItem) -> Assignment:
        """The assignment of an item's user (a private chat's), else none."""
        if item.audience != Audience.USER:
            return NO_ASSIGNMENT
        return self.strategy_for(item.user_id)

    def _policy(self, item: QueueItem) -> TierPolicy | None:
        if item.audience == Audience.CHANNEL:
            return None
        if item.audience == Audience.GROUP:
            return self.group_policy
        try:
            return self.policies[Tier(item.tier)]
        except ValueError:
            return self.policies[Tier.FREE]
