"""Sharded user queues: ``uq:000`` … ``uq:NNN`` hold every pending push and send it.

Chats are sharded over a fixed number of async actors (``core.queueing.shard_of``;
``ARBFLOW_DISTRIBUTION__SHARDS``, default one per 2 CPUs, 1-8), never one actor per user. A shard:

- takes a fan-out batch from the distributor (:meth:`QueueShard.enqueue`: one
  opportunity, many chats, columnar) and persists it to Redis in one round trip
  before acknowledging, deduplicated by (chat, opportunity);
- runs a pump: what is due for a chat (tier delay, active hours) goes out best
  first, several at once as one digest; an item whose opportunity closed or went
  stale, or stopped being pushable, is dropped (``expired``); quotas are consumed in
  Redis at send time (the same counters ``/opportunities`` draws on; once per item, given
  back when it ends unsent); a sent item starts its target's cooldown for the dedup key
  and any end drops its pending mark (``actors.directory.DeliveryMarks``), after which
  the distributor is told which (target, key) pairs changed; send slots come from the global rate
  limiter (``ratelimit:global``); one send in flight per chat, so a chat's pushes
  keep their order and its 1 msg/s;
- handles outcomes: a 429 pauses the limiter for ``retry_after`` and requeues; a
  403 marks the chat blocked and ends its session; 5xx and timeouts retry with
  backoff up to ``max_retries``, then go to the dead-letter list (an admin replays
  it); every outcome is a ``deliveries`` row.

Durability (Redis, per shard ``uq:NNN``): ``:batches`` holds each fan-out batch
(Arrow IPC) with its opportunity, ``:done:<opp>`` the chats finished for it and
``:inflight:<opp>`` the chats whose send has started. A restarted shard rebuilds
its queues as batches minus done minus in flight; a chat that was in flight when the shard
died may or may not have got its message, so it is not sent again (recorded as
``failed``/``unknown_after_restart``): nothing queued is lost, nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import random
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import ray
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors.directory import DeliveryMarks
from actors.edits import SentPush, SentPushes, moment_ms
from actors.lazy import LazyImpl, drain_emitter, emitter_stats, sink_emitter, stop_task
from actors.missed import MISSED_REASON, MissedDigests
from actors.ratelimit import configured_rate
from core.accounts import Tier, TierPolicy, tier_policies
from core.eligibility import OpportunityView
from core.errors import StoreUnavailable
from core.missed import MissedDigest
from core.notifications import Digest, Notification, SendOutcome, SendResult, is_leg_group, payload_of
from core.queueing import ChatQueue, QueueItem, is_stale, leg_units, retry_delay_s, shard_of, target_of
from core.settings import Settings
from pipeline.deliveries import DELIVERIES, DELIVERIES_DATASET, Audience, DeliveryStatus, deliveries_table
from state.keys import DEAD_LETTERS_KEY
from state.quotas import RedisQuotaStore

log = logging.getLogger(__name__)

DIGEST_MAX = 5
"""At most this many notifications in one digest message; the rest wait their turn."""
SEND_CONCURRENCY = 256
ROW_FLUSH_S = 0.5
CLOSED_MAX = 10_000
"""At most this many closed ids remembered per shard (only ids it queued; oldest go first)."""
COOLED_MAX = 200_000
"""At most this many cooldowns this shard started kept in memory (Redis holds them all)."""
BATCH_SCHEMA = pa.schema(
    [
        pa.field("chat", pa.int64()),
        pa.field("chat_ref", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("audience", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("due_ms", pa.int64()),
        pa.field("silent", pa.bool_()),
        pa.field("tz", pa.string()),
        pa.field("lang", pa.string()),
    ]
)
"""One fan-out batch for one shard: the chats that get one opportunity. ``tz``: the chat's
IANA zone (the push's times are shown in it; null: UTC). Batches persisted by a release
without ``tz`` read as UTC. ``lang``: the chat's language (the push is written in it;
null, or a batch persisted without the column: English)."""


def shard_name(index: int) -> str:
    return f"uq:{index:03d}"


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


class Limiter(Protocol):
    async def reserve(self, requests: list[tuple[int | str, bool]]) -> list[float]: ...

    async def pause(self, retry_after_s: float, chat_id: int | str | None = None) -> None: ...


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def _ts(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_batch(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(body).read_all()


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
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))


class QueueShard:
    """Plain async class: one shard's queues, pump and Redis log (see the module doc)."""

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
    ) -> None:
        self.settings = settings
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
        self.policies: dict[Tier, TierPolicy] = tier_policies(self.dist.tiers)
        free = self.policies[Tier.FREE]
        m = self.dist.group_multiplier
        self.group_policy = free.model_copy(
            update={
                "daily_quota": None if free.daily_quota is None else int(free.daily_quota * m),
                "hourly_quota": None if free.hourly_quota is None else int(free.hourly_quota * m),
            }
        )
        self.budget = max(8, math.ceil(1.5 * configured_rate(settings) / max(1, self.dist.shards)))
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
        self.heap: list[tuple[int, str, int | str]] = []
        self.rows: list[dict[str, Any]] = []
        self.stats_ = ShardStats()
        self.wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._emits: set[asyncio.Task[Any]] = set()
        self._send_slots = asyncio.Semaphore(SEND_CONCURRENCY)
        self._pending_done: dict[str, list[int | str]] = defaultdict(list)
        self.quotas = RedisQuotaStore(client)
        self.parked: dict[int | str, list[tuple[int, str, int | str]]] = defaultdict(list)
        """Heap entries of chats with a send in flight, back on the heap when it ends."""
        self.events: dict[str, dict[str, Any]] = {}
        """Each batch's opportunity event (for dead letters)."""
        self.missed = MissedDigests(self)
        """What closed while a tier delay held it, and its digest (:mod:`actors.missed`)."""

    # -- keys -------------------------------------------------------------------------------
    @property
    def batches_key(self) -> str:
        return f"{self.prefix}:batches"

    def done_key(self, batch: str) -> str:
        return f"{self.prefix}:done:{batch}"

    def inflight_key(self, batch: str) -> str:
        return f"{self.prefix}:inflight:{batch}"

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> int:
        """Rebuild from Redis, then start the pump. Returns the items recovered."""
        recovered = await self.recover()
        if self._pump_task is None:
            loop = asyncio.get_running_loop()
            self._pump_task = loop.create_task(self._pump())
            self._flush_task = loop.create_task(self._flush_loop())
            self.missed.start()
        return recovered

    async def stop(self) -> None:
        for task in (self._pump_task, self._flush_task):
            if not await stop_task(task):
                log.warning("%s: a loop did not stop in time", self.prefix)
        self._pump_task = self._flush_task = None
        await self.missed.stop()
        if self._sends:
            await asyncio.wait(self._sends, timeout=15)
        if self._edits:
            await asyncio.wait(self._edits, timeout=5)
        await self.flush()
        if self._emits:
            await asyncio.wait(self._emits, timeout=15)
        await drain_emitter(self.emit)

    async def recover(self) -> int:
        """Queues = persisted batches minus chats done minus chats in flight (never sent again)."""
        batches = await self.client.hgetall(self.batches_key)
        recovered = 0
        for raw_id, body in batches.items():
            batch_id = _s(raw_id)
            record = json.loads(body)
            table = decode_batch(bytes.fromhex(record["batch"]))
            event = record["event"]
            n = self._remember(batch_id, event)
            pipe = self.client.pipeline(transaction=False)
            pipe.smembers(self.done_key(batch_id))
            pipe.smembers(self.inflight_key(batch_id))
            done_raw, inflight_raw = await pipe.execute()
            done = {_s(c) for c in done_raw}
            inflight = {_s(c) for c in inflight_raw} - done
            self.remaining[batch_id] = 0
            self._note_zones(self._keys(table), table)
            for row in table.to_pylist():
                item = self._item(n, batch_id, row, int(record["queued_ms"]))
                self.known[n.opportunity_id].add(item.chat)
                if str(item.chat) in done:
                    continue
                self.remaining[batch_id] += 1
                if str(item.chat) in inflight:
                    self.stats_.ambiguous += 1
                    self._finish(item, DeliveryStatus.FAILED, reason="unknown_after_restart")
                    continue
                self._push(item)
                recovered += 1
            self._pending_done.setdefault(batch_id, [])  # the flush deletes a finished batch
        if self.is_open is not None and self.notifications:
            open_ids = await self.is_open(list(self.notifications))
            for opp in set(self.notifications) - open_ids:
                self.closed[opp] = "closed"
        log.info("%s: recovered %d queued items, %d ambiguous", self.prefix, recovered, self.stats_.ambiguous)
        self.wake.set()
        return recovered

    # -- enqueue ----------------------------------------------------------------------------
    def _remember(self, batch_id: str, event: Mapping[str, Any]) -> Notification:
        n = Notification.from_event(event)
        self.notifications[n.opportunity_id] = n
        self.events[n.opportunity_id] = dict(event)
        self.dedup_keys[n.opportunity_id] = _dedup_key(event)
        self.batches_of[n.opportunity_id].add(batch_id)
        return n

    def _item(self, n: Notification, batch_id: str, row: Mapping[str, Any], queued_ms: int) -> QueueItem:
        return QueueItem(
            opportunity_id=n.opportunity_id,
            batch=batch_id,
            chat=row["chat_ref"] or row["chat"],
            user_id=row["user_id"],
            audience=row["audience"],
            tier=row["tier"],
            priority=str(n.priority),
            kind=str(n.kind),
            net_bps=float(n.net_bps),
            detected_ms=_ms(n.detected_at) or queued_ms,
            queued_ms=queued_ms,
            due_ms=int(row["due_ms"]),
            silent=bool(row["silent"]),
            attempt=int(row.get("attempt") or 0),
        )

    def _push(self, item: QueueItem) -> None:
        queue = self.chats.get(item.chat)
        if queue is None:
            queue = self.chats[item.chat] = ChatQueue()
        queue.add(item)
        heapq.heappush(self.heap, (item.due_ms, item.opportunity_id, item.chat))

    async def enqueue(self, event: Mapping[str, Any], batch: pa.Table, *, force: bool = False) -> int:
        """Queue one opportunity for ``batch``'s chats (:data:`BATCH_SCHEMA`); returns how many
        were new. Persisted in Redis before it returns, so an acknowledged batch survives a
        restart. ``force`` skips the (chat, opportunity) dedup: a dead letter replayed."""
        opp = str(event["opportunity_id"])
        now_ms = int(self.clock() * 1000)
        if event.get("reoffer") and not force:  # reopened: chats whose item expired may have it again
            self.closed.pop(opp, None)
            again = self.unsent.pop(opp, None)
            if again and opp in self.known:
                self.known[opp] -= again
        keys: list[int | str] = [
            r or c
            for c, r in zip(
                batch.column("chat").to_pylist(), batch.column("chat_ref").to_pylist(), strict=True
            )
        ]
        seen = self.known.get(opp)
        if seen and not force:
            keep = [k not in seen for k in keys]
            dupes = keep.count(False)
            if dupes:
                self.stats_.duplicates += dupes
                batch = batch.filter(pa.array(keep))
                keys = [k for k, ok in zip(keys, keep, strict=True) if ok]
        if not batch.num_rows:
            return 0
        if opp in self.closed and not force:  # a late retry of an id closed meanwhile: nothing to send
            key = _dedup_key(event)
            for row in batch.select(["chat", "user_id", "audience"]).to_pylist():
                target = {Audience.USER: row["user_id"], Audience.GROUP: row["chat"]}.get(row["audience"])
                if target is not None:
                    self._released[key].append(int(target))
                    self._touched.append((int(target), key))
            return 0
        if len(set(keys)) < len(keys):  # one row per chat
            first: dict[int | str, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            batch = batch.take(pa.array(sorted(first.values())))
        batch_id = f"{opp}~{uuid.uuid4().hex[:10]}"
        record = {"event": dict(event), "queued_ms": now_ms, "batch": encode_batch(batch).hex()}
        try:
            await self.client.hset(self.batches_key, batch_id, json.dumps(record, default=str))
        except (RedisError, OSError):
            self.stats_.redis_errors += 1
            raise
        n = self._remember(batch_id, event)
        count = self._add_items(n, batch_id, batch, now_ms)
        self.known[opp].update(keys if len(keys) == count else self._keys(batch))
        self.remaining[batch_id] = count
        self.stats_.queued += count
        self._queued_rows(n, batch, now_ms)
        self.wake.set()
        return count

    @staticmethod
    def _keys(batch: pa.Table) -> list[int | str]:
        refs = batch.column("chat_ref").to_pylist()
        return [r or c for c, r in zip(batch.column("chat").to_pylist(), refs, strict=True)]

    def _add_items(self, n: Notification, batch_id: str, batch: pa.Table, queued_ms: int) -> int:
        """One :class:`QueueItem` per row, column by column (the fan-out's hot loop)."""
        opp, priority, kind = n.opportunity_id, str(n.priority), str(n.kind)
        net, detected = float(n.net_bps), _ms(n.detected_at) or queued_ms
        cols = [batch.column(c).to_pylist() for c in ("user_id", "audience", "tier", "due_ms", "silent")]
        chats, heap, push = self.chats, self.heap, heapq.heappush
        count = 0
        for chat, user_id, audience, tier, due, silent in zip(self._keys(batch), *cols, strict=True):
            item = QueueItem(
                opp,
                batch_id,
                chat,
                user_id,
                audience,
                tier,
                priority,
                kind,
                net,
                detected,
                queued_ms,
                due,
                bool(silent),
            )
            queue = chats.get(chat)
            if queue is None:
                queue = chats[chat] = ChatQueue()
            queue.items[opp] = item
            push(heap, (due, opp, chat))
            count += 1
        self._note_zones(self._keys(batch), batch)
        return count

    def _note_zones(self, chats: Sequence[int | str], batch: pa.Table) -> None:
        if "lang" in batch.schema.names:  # a batch persisted before languages travelled: English
            langs = self.langs
            for chat, lang in zip(chats, batch.column("lang").to_pylist(), strict=True):
                if lang:
                    langs[chat] = sys.intern(lang)
        if "tz" not in batch.schema.names:  # a batch persisted before zones travelled with it
            return
        zones, intern = self.zones, sys.intern
        for chat, tz in zip(chats, batch.column("tz").to_pylist(), strict=True):
            if tz:
                zones[chat] = intern(tz)

    def _queued_rows(self, n: Notification, batch: pa.Table, now_ms: int) -> None:
        """The ``queued`` rows of a fan-out, built columnar."""
        if self.emit is None:
            return
        size = batch.num_rows
        ts = pa.timestamp("ms", tz="UTC")
        given = {
            "queued_at": pa.array([now_ms] * size, pa.int64()).cast(ts),
            "opportunity_id": pa.array([n.opportunity_id] * size),
            "chat_id": batch.column("chat"),
            "chat_ref": batch.column("chat_ref"),
            "user_id": batch.column("user_id"),
            "audience": batch.column("audience"),
            "status": pa.array([DeliveryStatus.QUEUED.value] * size),
            "kind": pa.array([str(n.kind)] * size),
            "tier": batch.column("tier"),
            "priority": pa.array([str(n.priority)] * size),
            "net_bps": pa.array([float(n.net_bps)] * size, pa.float64()),
            "silent": batch.column("silent"),
            "detected_at": pa.array([_ms(n.detected_at) or now_ms] * size, pa.int64()).cast(ts),
            "due_at": batch.column("due_ms").cast(ts),
        }
        columns = [
            given[f.name].cast(f.type) if f.name in given else pa.nulls(size, f.type) for f in DELIVERIES
        ]
        self._emit_now(pa.Table.from_arrays(columns, schema=DELIVERIES))

    def expire(self, opportunity_ids: Sequence[str], reason: str = "closed") -> int:
        """The distributor saw these close (or stop being pushable): what is queued here for
        them expires now, and what comes back later (a retry) expires at its turn. Only ids
        this shard queued are remembered, so the set is bounded by what it holds."""
        self.stats_.expire_calls += 1
        expired = 0
        for opp in dict.fromkeys(opportunity_ids):
            edited = reason == "closed" and opp in self.sent
            if edited:  # what was sent for it says it closed
                self._schedule_edits(self.sent.close(opp, int(self.clock() * 1000)))
            if opp not in self.batches_of:
                if not edited:  # its batches are done here, but this shard sent it
                    self.stats_.expire_foreign += 1
                continue
            self.closed.pop(opp, None)
            self.closed[opp] = reason
            for chat in list(self.known.get(opp, ())):
                queue = self.chats.get(chat)
                item = queue.drop(opp) if queue is not None else None
                if item is not None:
                    self._expire(item, reason)
                    expired += 1
                    if queue is not None and not queue.items:
                        del self.chats[chat]
        while len(self.closed) > CLOSED_MAX:
            del self.closed[next(iter(self.closed))]
        if expired:
            self.wake.set()
        return expired

    def mark_closed(self, opportunity_ids: Sequence[str]) -> int:
        """These closed: :meth:`expire` with reason ``closed``."""
        return self.expire(opportunity_ids, "closed")

    def drop_chat(self, chat: int | str) -> int:
        """The chat's user asked to be forgotten (``/forget``): what is queued for it ends
        ``skipped``/``forgotten`` (a send already under way cannot be called back)."""
        queue = self.chats.pop(chat, None)
        items = queue.drain() if queue is not None else []
        for item in items:
            self._finish(item, DeliveryStatus.SKIPPED, reason="forgotten", layer=1)
        self.zones.pop(chat, None)
        self.langs.pop(chat, None)
        if items:
            self.wake.set()
        return len(items)

    # -- edits on close ---------------------------------------------------------------------
    def _schedule_edits(self, pushes: Sequence[SentPush]) -> None:
        if not pushes:
            return
        loop = asyncio.get_running_loop()
        for push in pushes:
            task = loop.create_task(self._edit(push))
            self._edits.add(task)
            task.add_done_callback(self._edits.discard)

    async def _edit(self, push: SentPush) -> None:
        """One edit, paced by the global limiter like a send; best effort (never retried)."""
        try:
            (delay,) = await self.limiter.reserve([(push.chat, push.group)])
            if delay > 0:
                await asyncio.sleep(delay)
            result = await self.notifier.edit(
                push.chat,
                push.message_id,
                push.payload,
                tz=push.tz,
                sent=datetime.fromtimestamp(push.sent_ms / 1000, UTC),
                closed=dict(push.closed),
                lang=self.langs.get(push.chat),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats_.edits_failed += 1
            log.warning("%s: editing message %s in %s: %r", self.prefix, push.message_id, push.chat, exc)
            return
        if result.outcome is SendOutcome.SENT:
            self.stats_.edits += 1
            return
        self.stats_.edits_failed += 1
        if result.outcome is SendOutcome.RETRY_AFTER:
            with contextlib.suppress(Exception):
                await self.limiter.pause(float(result.retry_after_s or 1.0), push.chat)

    # -- the pump ---------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            try:
                delay = await self._tick()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.stats_.redis_errors += 1
                log.warning("%s: redis unavailable, retrying: %s", self.prefix, exc)
                delay = 0.5
            except Exception:
                log.exception("%s: pump tick failed", self.prefix)
                delay = 0.5
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    def _due_chats(self, now_ms: int, limit: int) -> list[int | str]:
        """Up to ``limit`` chats with something due and no send in flight (a busy chat's
        entries are parked until its send ends)."""
        out: list[int | str] = []
        seen: set[int | str] = set()
        while self.heap and self.heap[0][0] <= now_ms and len(out) < limit:
            entry = heapq.heappop(self.heap)
            chat = entry[2]
            queue = self.chats.get(chat)
            if queue is None or entry[1] not in queue.items or chat in seen:
                continue  # a stale entry: that item left the queue
            if chat in self.busy:
                self.parked[chat].append(entry)
                continue
            seen.add(chat)
            out.append(chat)
        return out

    def _take(self, chat: int | str, now_ms: int) -> list[QueueItem]:
        """What goes to ``chat`` in its next message; expired items are finished on the way."""
        queue = self.chats[chat]
        horizon = now_ms + int(self.dist.digest_window_s * 1000)
        live: list[QueueItem] = []
        while len(live) < DIGEST_MAX:
            items = queue.take_due(horizon, limit=DIGEST_MAX - len(live))
            if not items:
                break
            for item in items:
                if item.opportunity_id in self.closed:
                    self._expire(item, self.closed[item.opportunity_id])
                elif self._cooling(item, now_ms):
                    self._expire(item, "cooldown")
                elif is_stale(item, now_ms, self.dist.max_age_s):
                    self._expire(item, "stale")
                else:
                    live.append(item)
        if not queue.items:
            del self.chats[chat]
        else:  # one heap entry for what comes next
            nxt = min(queue.items.values(), key=lambda i: i.due_ms)
            heapq.heappush(self.heap, (nxt.due_ms, nxt.opportunity_id, chat))
        return live

    def _expire(self, item: QueueItem, reason: str) -> None:
        self.stats_.expired += 1
        if reason != "cooldown":
            self.unsent[item.opportunity_id].add(item.chat)
        missed = None
        if reason == "closed":  # hidden by the tier delay until it closed: for the digest
            opp = item.opportunity_id
            missed = self.missed.note(item, self.notifications.get(opp), self.events.get(opp))
        if missed is not None:
            self._finish(item, DeliveryStatus.EXPIRED, reason=MISSED_REASON, lifetime_s=missed.lifetime_s)
        else:
            self._finish(item, DeliveryStatus.EXPIRED, reason=reason)

    def _cooling(self, item: QueueItem, now_ms: int) -> bool:
        """This item's target was sent its dedup key by this shard and is still in cooldown."""
        target = target_of(item)
        key = self.dedup_keys.get(item.opportunity_id)
        if target is None or key is None:
            return False
        until = self.cooled.get((target, key))
        return until is not None and until > now_ms

    async def _tick(self) -> float:
        now_ms = int(self.clock() * 1000)
        room = self.budget - len(self._sends)
        if room <= 0:  # a send ending wakes the pump
            return 1.0
        jobs = [
            (chat, items) for chat in self._due_chats(now_ms, room) if (items := self._take(chat, now_ms))
        ]
        if jobs and self.dist.grouping_window_s > 0:
            jobs = self._start_joins(jobs, now_ms)
        delays: list[float] = []
        try:
            if jobs:
                jobs = await self._consume_quotas(jobs)
            if jobs:
                delays = await self.limiter.reserve(
                    [(c, its[0].audience != Audience.USER) for c, its in jobs]
                )
        except BaseException:
            # Redis or the rate limiter is away: the items go back and nothing is lost (a
            # quota drawn for them stays drawn; a send is never doubled for it).
            for _chat, items in jobs:
                for item in items:
                    self._push(item)
            raise
        if jobs:
            loop = asyncio.get_running_loop()
            for (chat, items), delay in zip(jobs, delays, strict=True):
                self.busy.add(chat)
                task = loop.create_task(self._send(chat, items, delay))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
        if not self.heap:
            return 1.0
        return max(0.002, min(1.0, (self.heap[0][0] - now_ms) / 1000))

    # -- legs joining the chat's last push ---------------------------------------------------
    def _start_joins(
        self, jobs: list[tuple[int | str, list[QueueItem]]], now_ms: int
    ) -> list[tuple[int | str, list[QueueItem]]]:
        """Legs of the group a chat was just sent (within ``GROUPING_WINDOW_S``) join that push
        (:meth:`_join`: its message is edited) instead of going as a new one; the chat's
        other items wait for the next turn (one message in flight per chat)."""
        window_ms = int(self.dist.grouping_window_s * 1000)
        out: list[tuple[int | str, list[QueueItem]]] = []
        loop = asyncio.get_running_loop()
        for chat, items in jobs:
            push = self.sent.recent(chat, now_ms, window_ms)
            joining: list[QueueItem] = []
            if push is not None:
                shown = list(push.items)
                for item in items:
                    note = self.notifications.get(item.opportunity_id)
                    if item.alone or note is None or not is_leg_group([*shown, note]):
                        continue
                    shown.append(note)
                    joining.append(item)
            if push is None or not joining:
                out.append((chat, items))
                continue
            taken = {id(i) for i in joining}
            for item in items:
                if id(item) not in taken:
                    self._push(item)
            self.busy.add(chat)
            task = loop.create_task(self._join(chat, push, joining))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return out

    async def _join(self, chat: int | str, push: SentPush, items: list[QueueItem]) -> None:
        """Edit ``push`` to list ``items`` too (paced by the global limiter like a send): each
        leg is then ``sent`` with that message's id, drawing no quota (it is the same push),
        and starts its cooldown. When the edit fails, the legs go as a push of their own."""
        try:
            async with self._send_slots:
                (delay,) = await self.limiter.reserve([(chat, push.group)])
                if delay > 0:
                    await asyncio.sleep(delay)
                if not await self._mark_or_requeue(chat, items, "join"):
                    return
                notes = tuple(self.notifications[i.opportunity_id] for i in items)
                result = await self.notifier.edit(
                    chat,
                    push.message_id,
                    payload_of([*push.items, *notes]),
                    tz=push.tz,
                    sent=datetime.fromtimestamp(push.sent_ms / 1000, UTC),
                    closed=dict(push.closed),
                    lang=self.langs.get(chat),
                )
                if result.outcome is not SendOutcome.SENT:
                    if result.outcome is SendOutcome.RETRY_AFTER:
                        with contextlib.suppress(Exception):
                            await self.limiter.pause(float(result.retry_after_s or 1.0), chat)
                    for item in items:  # the message cannot take them: a push of their own
                        item.alone = True
                        await self._requeue(item)
                    return
                now_ms = self.clock() * 1000
                opened = {
                    n.opportunity_id: moment_ms((self.events.get(n.opportunity_id) or {}).get("opened_at"))
                    or _ms(n.detected_at)
                    or int(now_ms)
                    for n in notes
                }
                self.sent.join(push, notes, opened)
                self.stats_.joined += len(items)
                self.stats_.sent += len(items)
                for item in items:
                    latency = now_ms - item.detected_ms
                    self.stats_.latencies_ms.append(latency)
                    self._finish(
                        item,
                        DeliveryStatus.SENT,
                        reason="joined",
                        message_id=push.message_id,
                        sent_ms=now_ms,
                        digest_size=len(push.items),
                        latency_ms=latency,
                    )
                await self._persist_done(chat, items)
        except asyncio.CancelledError:
            raise
        except Exception:  # never lose the legs to a bug in one join
            log.exception("%s: joining a push in %s failed unexpectedly", self.prefix, chat)
            for item in items:
                item.alone = True
                try:
                    await self._requeue(item)
                except Exception:
                    self._push(item)
        finally:
            self.busy.discard(chat)
            for entry in self.parked.pop(chat, []):
                heapq.heappush(self.heap, entry)
            self.wake.set()

    async def _consume_quotas(
        self, jobs: list[tuple[int | str, list[QueueItem]]]
    ) -> list[tuple[int | str, list[QueueItem]]]:
        """Draw one quota unit per push unit (an item, or the legs of one group: its first
        leg draws, :func:`core.queueing.leg_units`) in one round trip; skip the refused."""
        requests: list[tuple[int, TierPolicy, str]] = []
        owners: list[tuple[int, list[QueueItem]]] = []
        for j, (chat, items) in enumerate(jobs):
            tz = self.zones.get(chat) or "UTC"  # a user's day ends at their local midnight
            for unit in leg_units(items, self.notifications):
                item = unit[0]
                policy = self._policy(item)
                if policy is None or policy.unlimited or any(i.charged_ms is not None for i in unit):
                    continue  # a retry drew its quota at its first attempt
                who = (
                    item.user_id
                    if item.audience == Audience.USER and item.user_id is not None
                    else int(item.chat)
                )
                requests.append((who, policy, tz if item.audience == Audience.USER else "UTC"))
                owners.append((j, unit))
        if not requests:
            return jobs
        now = self.clock()
        results = await self.quotas.try_consume_many(requests, datetime.fromtimestamp(now, UTC))
        refused: set[int] = set()
        for (_j, unit), res in zip(owners, results, strict=True):
            if res.ok:
                unit[0].charged_ms = int(now * 1000)  # the other legs ride on it (no refund of theirs)
                continue
            reason = "rate.daily" if res.remaining_day == 0 else "rate.hourly"
            for item in unit:
                refused.add(id(item))
                self._finish(item, DeliveryStatus.SKIPPED, reason=reason, layer=4)
                self.stats_.skipped[reason] += 1
        out = []
        for chat, items in jobs:
            kept = [it for it in items if id(it) not in refused]
            if kept:
                out.append((chat, kept))
        return out

    def _policy(self, item: QueueItem) -> TierPolicy | None:
        if item.audience == Audience.CHANNEL:
            return None
        if item.audience == Audience.GROUP:
            return self.group_policy
        try:
            return self.policies[Tier(item.tier)]
        except ValueError:
            return self.policies[Tier.FREE]

    async def _mark_inflight(self, chat: int | str, items: list[QueueItem]) -> None:
        """Recorded right before the send: a shard that dies now will not send these again."""
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.sadd(self.inflight_key(item.batch), str(chat))
        await pipe.execute()

    async def _mark_or_requeue(self, chat: int | str, items: list[QueueItem], what: str) -> bool:
        """Mark ``items`` in flight before a send or a join; when Redis is away they go back in
        the queue (not sent, not lost) and this says False."""
        try:
            await self._mark_inflight(chat, items)
        except (RedisError, OSError) as exc:
            self.stats_.redis_errors += 1
            log.warning("%s: redis unavailable before a %s, requeued: %s", self.prefix, what, exc)
            for item in items:
                self._push(item)
            return False
        return True

    async def _send(self, chat: int | str, items: list[QueueItem], delay: float) -> None:
        try:
            async with self._send_slots:
                if delay > 0:
                    await asyncio.sleep(delay)
                if not await self._mark_or_requeue(chat, items, "send"):
                    return
                notes = [self.notifications[i.opportunity_id] for i in items]
                payload = payload_of(notes)  # one group of legs: one push ranked by net
                silent = all(i.silent for i in items)
                result = await self.notifier.send(
                    chat,
                    payload,
                    silent=silent,
                    tz=self.zones.get(chat) or "UTC",
                    now=datetime.fromtimestamp(self.clock(), UTC),
                    lang=self.langs.get(chat),
                )
                await self._outcome(chat, items, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose the items to a bug in one send
            log.exception("%s: send to %s failed unexpectedly", self.prefix, chat)
            await self._outcome(chat, items, SendResult(SendOutcome.TRANSIENT, error=repr(exc)))
        finally:
            self.busy.discard(chat)
            for entry in self.parked.pop(chat, []):
                heapq.heappush(self.heap, entry)
            self.wake.set()

    def _note_sent(self, chat: int | str, items: list[QueueItem], message_id: int, sent_ms: int) -> None:
        known = self.notifications
        notes = tuple(known[i.opportunity_id] for i in items if i.opportunity_id in known)
        if not notes:
            return
        opened = {}
        for n in notes:
            event = self.events.get(n.opportunity_id) or {}
            opened[n.opportunity_id] = moment_ms(event.get("opened_at")) or _ms(n.detected_at) or sent_ms
        self.sent.note(
            SentPush(
                chat,
                message_id,
                sent_ms,
                notes,
                self.zones.get(chat) or "UTC",
                items[0].audience != Audience.USER,
                opened,
            )
        )

    async def _outcome(self, chat: int | str, items: list[QueueItem], result: SendResult) -> None:
        now_ms = self.clock() * 1000
        outcome = result.outcome
        if outcome is SendOutcome.SENT:
            self.stats_.messages += 1
            self.stats_.sent += len(items)
            if len(items) > 1:
                notes = [
                    self.notifications[i.opportunity_id]
                    for i in items
                    if i.opportunity_id in self.notifications
                ]
                if len(notes) == len(items) and is_leg_group(notes):
                    self.stats_.grouped += 1
                else:
                    self.stats_.digests += 1
            if result.message_id is not None:
                self._note_sent(chat, items, int(result.message_id), int(now_ms))
            self.missed.note_pushed(chat, [i.opportunity_id for i in items])
            for item in items:
                latency = now_ms - item.detected_ms
                self.stats_.latencies_ms.append(latency)
                self._finish(
                    item,
                    DeliveryStatus.SENT,
                    message_id=result.message_id,
                    sent_ms=now_ms,
                    digest_size=len(items),
                    latency_ms=latency,
                )
            await self._persist_done(chat, items)
            return
        if outcome is SendOutcome.RETRY_AFTER:
            self.stats_.throttled += 1
            wait = float(result.retry_after_s or 1.0)
            with contextlib.suppress(Exception):
                await self.limiter.pause(wait, chat)
            for item in items:
                self._row(item, DeliveryStatus.RETRY, reason="429")
                item.due_ms = int(now_ms + wait * 1000)
                await self._requeue(item)
            return
        if outcome is SendOutcome.BLOCKED:
            self.stats_.blocked += 1
            for item in items:
                self._finish(item, DeliveryStatus.BLOCKED, reason=result.error or "403")
            await self._persist_done(chat, items)
            queue = self.chats.pop(chat, None)
            for item in queue.drain() if queue else []:
                self._finish(item, DeliveryStatus.SKIPPED, reason="context.blocked", layer=6)
            if self.on_blocked is not None:
                with contextlib.suppress(Exception):
                    await self.on_blocked(chat, items[0].user_id)
            return
        if outcome is SendOutcome.TRANSIENT:
            for item in items:
                item.attempt += 1
                if item.attempt > self.dist.max_retries:
                    await self._dead_letter(item, result)
                    continue
                self.stats_.retries += 1
                self._row(item, DeliveryStatus.RETRY, reason=result.error or "transient")
                item.due_ms = int(
                    now_ms
                    + 1000 * retry_delay_s(item.attempt, self.dist.retry_base_s, jitter=random.random())
                )
                await self._requeue(item)
            return
        self.stats_.failed += len(items)
        for item in items:
            self._finish(item, DeliveryStatus.FAILED, reason=result.error or "permanent")
        await self._persist_done(chat, items)

    async def _persist_done(self, chat: int | str, items: list[QueueItem]) -> None:
        """Mark these finished in Redis at once (the flush would within ``ROW_FLUSH_S``): a
        shard that dies right after a send must not take the send for an unknown one."""
        try:
            pipe = self.client.pipeline(transaction=True)
            for item in items:
                pipe.sadd(self.done_key(item.batch), str(chat))
                pipe.srem(self.inflight_key(item.batch), str(chat))
            await pipe.execute()
        except (RedisError, OSError) as exc:  # the flush writes them when Redis is back
            self.stats_.redis_errors += 1
            log.warning("%s: cannot record a finished send yet: %s", self.prefix, exc)

    async def _requeue(self, item: QueueItem) -> None:
        """Back in the queue, no longer in flight (its attempts persisted with the batch)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(self.inflight_key(item.batch), str(item.chat))
        await pipe.execute()
        self._push(item)

    async def _dead_letter(self, item: QueueItem, result: SendResult) -> None:
        self.stats_.dead_letters += 1
        self.stats_.failed += 1
        body = {
            "item": item.to_dict(),
            "event": self.events.get(item.opportunity_id),
            "error": result.error,
            "at": self.clock(),
        }
        await self.client.lpush(DEAD_LETTERS_KEY, json.dumps(body, default=str))
        self._finish(item, DeliveryStatus.FAILED, reason=f"dead_letter: {result.error or 'transient'}")
        await self._persist_done(item.chat, [item])

    # -- outcomes, rows and the Redis log ---------------------------------------------------
    def _finish(self, item: QueueItem, status: DeliveryStatus, **row: Any) -> None:
        self._row(item, status, **row)
        self._pending_done[item.batch].append(item.chat)
        self._settle(item, status)

    def _settle(self, item: QueueItem, status: DeliveryStatus) -> None:
        """An item ended: a sent one starts its target's cooldown for the dedup key (and the
        quota it drew stays drawn); any other end releases the pending mark and gives back
        a quota it drew. Written to Redis by the next flush."""
        target = target_of(item)
        key = self.dedup_keys.get(item.opportunity_id)
        if target is None or key is None:
            return
        if status is DeliveryStatus.SENT:
            policy = self._policy(item)
            cooldown = policy.cooldown_s if policy is not None else self.policies[Tier.FREE].cooldown_s
            self._charged[(key, int(cooldown))].append(target)
            self.stats_.charged += 1
            now_ms = int(self.clock() * 1000)
            self.cooled[(target, key)] = now_ms + int(cooldown * 1000)
            if len(self.cooled) > COOLED_MAX:  # the ended ones go; Redis holds every cooldown anyway
                self.cooled = {k: u for k, u in self.cooled.items() if u > now_ms}
                while len(self.cooled) > COOLED_MAX:
                    del self.cooled[next(iter(self.cooled))]
        else:
            self._released[key].append(target)
            if item.charged_ms is not None:
                tz = (self.zones.get(item.chat) or "UTC") if item.audience == Audience.USER else "UTC"
                self._refunds.append((target, item.charged_ms, tz))
                item.charged_ms = None
        self._touched.append((target, key))

    def _row(
        self,
        item: QueueItem,
        status: DeliveryStatus,
        *,
        reason: str | None = None,
        layer: int | None = None,
        message_id: int | None = None,
        sent_ms: float | None = None,
        digest_size: int | None = None,
        latency_ms: float | None = None,
        lifetime_s: float | None = None,
    ) -> None:
        chat = item.chat
        self.rows.append(
            {
                "queued_at": _ts(item.queued_ms),
                "opportunity_id": item.opportunity_id,
                "chat_id": chat if isinstance(chat, int) else None,
                "chat_ref": chat if isinstance(chat, str) else None,
                "user_id": item.user_id,
                "audience": item.audience,
                "status": status.value,
                "reason": reason,
                "layer": layer,
                "kind": item.kind,
                "tier": item.tier,
                "priority": item.priority,
                "net_bps": item.net_bps,
                "attempt": item.attempt,
                "silent": item.silent,
                "digest_size": digest_size,
                "message_id": message_id,
                "detected_at": _ts(item.detected_ms),
                "due_at": _ts(item.due_ms),
                "sent_at": _ts(sent_ms),
                "latency_ms": latency_ms,
                "lifetime_s": lifetime_s,
            }
        )

    def _emit_now(self, table: pa.Table) -> None:
        if self.emit is None:
            return
        out = self.emit(DELIVERIES_DATASET, table)
        if asyncio.iscoroutine(out):
            task = asyncio.get_running_loop().create_task(out)
            self._emits.add(task)
            task.add_done_callback(self._emits.discard)

    async def flush(self) -> None:
        """Persist finished chats (done sets, batch clean-up) and hand rows to the lake.

        A finished batch's ids are forgotten only after the cooldowns and releases of its
        items are in Redis and the distributor has re-read them: until then the (chat,
        opportunity) dedup keeps a re-offer from queueing a chat that was just sent to."""
        forget: list[str] = []
        if self._pending_done:
            pending, self._pending_done = self._pending_done, defaultdict(list)
            try:
                pipe = self.client.pipeline(transaction=True)
                finished: list[str] = []
                for batch_id, chats in pending.items():
                    if chats:
                        members = [str(c) for c in chats]
                        pipe.sadd(self.done_key(batch_id), *members)
                        pipe.srem(self.inflight_key(batch_id), *members)
                    if self.remaining[batch_id] - len(chats) <= 0:
                        finished.append(batch_id)
                for batch_id in finished:
                    pipe.hdel(self.batches_key, batch_id)
                    pipe.delete(self.done_key(batch_id), self.inflight_key(batch_id))
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self.stats_.redis_errors += 1
                log.warning("%s: cannot persist outcomes yet: %s", self.prefix, exc)
                for batch_id, chats in pending.items():
                    self._pending_done[batch_id].extend(chats)
            else:
                for batch_id, chats in pending.items():
                    self.remaining[batch_id] -= len(chats)
                forget = finished
        await self._flush_marks()
        with contextlib.suppress(RedisError, OSError, StoreUnavailable):  # kept for the next flush
            await self.missed.persist()
        for batch_id in forget:
            self._forget(batch_id)
        if self.rows and self.emit is not None:
            rows, self.rows = self.rows, []
            out = self.emit(DELIVERIES_DATASET, deliveries_table(rows))
            if asyncio.iscoroutine(out):
                await out

    async def _flush_marks(self) -> None:
        """Cooldowns of what was sent, pending marks of what ended, quotas given back; then
        tell the distributor which (target, dedup key) pairs changed."""
        if self._charged or self._released:
            charged, released = self._charged, self._released
            self._charged, self._released = defaultdict(list), defaultdict(list)
            now_ms = int(self.clock() * 1000)
            try:
                await self.marks.apply(
                    {(key, now_ms + cooldown * 1000): ids for (key, cooldown), ids in charged.items()},
                    released,
                )
            except (RedisError, OSError) as exc:
                self.stats_.redis_errors += 1
                log.warning("%s: cannot record cooldowns yet: %s", self.prefix, exc)
                for ck, ids in charged.items():
                    self._charged[ck].extend(ids)
                for rk, ids in released.items():
                    self._released[rk].extend(ids)
                return
        while self._refunds:
            target, at_ms, tz = self._refunds[0]
            try:
                await self.quotas.refund(target, datetime.fromtimestamp(at_ms / 1000, UTC), tz=tz)
            except (StoreUnavailable, RedisError, OSError) as exc:
                self.stats_.redis_errors += 1
                log.warning("%s: cannot give back a quota yet: %s", self.prefix, exc)
                return
            self._refunds.pop(0)
            self.stats_.refunds += 1
        if self._touched:
            touched, self._touched = self._touched, []
            if self.on_outcomes is not None:
                try:
                    await self.on_outcomes(list(dict.fromkeys(touched)))
                except Exception as exc:  # the directory re-reads Redis at its next load anyway
                    log.warning("%s: could not tell the distributor its outcomes: %r", self.prefix, exc)

    def _forget(self, batch_id: str) -> None:
        self.remaining.pop(batch_id, None)
        opp = batch_id.split("~", 1)[0]
        batches = self.batches_of.get(opp)
        if batches is not None:
            batches.discard(batch_id)
            if not batches:
                tables = (
                    self.batches_of,
                    self.notifications,
                    self.events,
                    self.known,
                    self.dedup_keys,
                    self.unsent,
                )
                for table in tables:
                    table.pop(opp, None)
                self.closed.pop(opp, None)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(ROW_FLUSH_S)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: flush failed", self.prefix)

    # -- reporting --------------------------------------------------------------------------
    def pending(self) -> int:
        return sum(len(q) for q in self.chats.values())

    def stats(self) -> dict[str, Any]:
        s = self.stats_
        lat = sorted(s.latencies_ms)

        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

        return {
            "shard": self.prefix,
            **emitter_stats(self.emit),
            "pending": self.pending(),
            "in_flight": len(self.busy),
            "queued": s.queued,
            "duplicates": s.duplicates,
            "sent": s.sent,
            "messages": s.messages,
            "digests": s.digests,
            "grouped": s.grouped,
            "joined": s.joined,
            "expired": s.expired,
            "skipped": dict(s.skipped),
            "retries": s.retries,
            "throttled": s.throttled,
            "blocked": s.blocked,
            "failed": s.failed,
            "dead_letters": s.dead_letters,
            "ambiguous": s.ambiguous,
            "redis_errors": s.redis_errors,
            "expire_calls": s.expire_calls,
            "expire_foreign": s.expire_foreign,
            "closed_ids": len(self.closed),
            "charged": s.charged,
            "refunds": s.refunds,
            "edits": s.edits,
            "edits_failed": s.edits_failed,
            "sent_notes": self.sent.notes,
            **self.missed.as_dict(),
            "latency_ms": {"n": len(lat), "p50": pct(0.5), "p99": pct(0.99)},
        }


def _dedup_key(event: Mapping[str, Any]) -> str:
    return OpportunityView.make_dedup_key(
        str(event["kind"]),
        str(event["symbol"]),
        event.get("buy_exchange") or None,
        event.get("sell_exchange") or None,
    )


def batch_for(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A :data:`BATCH_SCHEMA` table from dicts (tests and small fan-outs)."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=BATCH_SCHEMA)


def split_by_shard(table: pa.Table, shards: int) -> dict[int, pa.Table]:
    """A fan-out table (:data:`BATCH_SCHEMA`) cut into one table per shard, vectorised."""
    import numpy as np
    import pyarrow.compute as pc

    chats = table.column("chat").to_numpy(zero_copy_only=False)
    refs = table.column("chat_ref")
    index = np.mod(np.nan_to_num(chats.astype("float64"), nan=0).astype(np.int64), shards)
    if refs.null_count < len(refs):
        for i, ref in enumerate(refs.to_pylist()):
            if ref is not None:
                index[i] = shard_of(ref, shards)
    out: dict[int, pa.Table] = {}
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    bounds = np.flatnonzero(np.diff(sorted_idx)) + 1
    for part in np.split(order, bounds):
        if part.size:
            out[int(index[part[0]])] = table.take(pa.array(part))
    del pc
    return out


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class QueueShardActor(LazyImpl[QueueShard]):
    """``uq:NNN``: a :class:`QueueShard` with its Redis, rate limiter, notifier and sink."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index

    async def build(self) -> QueueShard:
        from actors.opportunities import DISTRIBUTOR_NAME, redis_client
        from actors.ratelimit import get_rate_limiter
        from notify.client import build_bot
        from notify.notifier import TelegramNotifier
        from pipeline.open_set import RedisOpportunityStore
        from state.sessions import RedisSessionStore

        settings = self.settings
        client = redis_client(settings.redis.url)
        limiter = get_rate_limiter(settings)
        sessions = RedisSessionStore(client)
        # "Still open?" is the open set itself: a queued push is expired by the close
        # event, which now always comes (idle ticks, retried writes, the start reconcile).
        opps = RedisOpportunityStore(client, stale_after_s={})

        async def on_blocked(chat: int | str, user_id: int | None) -> None:
            if user_id is not None:
                await sessions.end(user_id, "blocked", datetime.now(UTC))
            if isinstance(chat, int):
                with contextlib.suppress(ValueError, ray.exceptions.RayActorError):
                    distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
                    await distributor.note_blocked.remote([chat])

        async def is_open(ids: Sequence[str]) -> set[str]:
            return {i for i in ids if await opps.get(i) is not None}

        async def on_outcomes(pairs: list[tuple[int, str]]) -> None:
            with contextlib.suppress(ValueError, ray.exceptions.RayActorError):
                distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
                await distributor.note_outcomes.remote(pairs)

        class _Limiter:
            async def reserve(self, requests: list[tuple[int | str, bool]]) -> list[float]:
                return list(await limiter.reserve.remote(requests))

            async def pause(self, retry_after_s: float, chat_id: int | str | None = None) -> None:
                await limiter.pause.remote(retry_after_s, chat_id)

        shard = QueueShard(
            settings,
            self.index,
            client=client,
            notifier=TelegramNotifier(build_bot(settings)),
            limiter=_Limiter(),
            emit=sink_emitter(settings, name=shard_name(self.index)),
            on_blocked=on_blocked,
            is_open=is_open,
            on_outcomes=on_outcomes,
        )
        await shard.start()
        return shard

    async def ready(self) -> int:
        return (await self.impl_()).pending()

    async def enqueue(self, event: dict[str, Any], batch: pa.Table, force: bool = False) -> int:
        return await (await self.impl_()).enqueue(event, batch, force=force)

    async def mark_closed(self, opportunity_ids: list[str]) -> int:
        return (await self.impl_()).mark_closed(opportunity_ids)

    async def drop_chat(self, chat: int) -> int:
        return (await self.impl_()).drop_chat(chat)

    async def expire(self, opportunity_ids: list[str], reason: str = "closed") -> int:
        return (await self.impl_()).expire(opportunity_ids, reason)

    async def flush(self) -> None:
        await (await self.impl_()).flush()

    async def stats(self) -> dict[str, Any]:
        return (await self.impl_()).stats()

    async def stop(self) -> dict[str, Any]:
        shard = await self.impl_()
        await shard.stop()
        return shard.stats()

    async def pid(self) -> int:
        import os

        return os.getpid()


def get_shards(settings: Settings) -> list[Any]:
    """The ``uq:NNN`` actors, created on first use."""
    return [
        QueueShardActor.options(  # type: ignore[attr-defined]
            name=shard_name(i), namespace=settings.ray.namespace, get_if_exists=True
        ).remote(settings, i)
        for i in range(settings.distribution.shards)
    ]
