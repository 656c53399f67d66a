"""The distributor: from an opportunity event to the queue shards of exactly the right chats.

``dist:engine`` (one async actor) receives the lifecycle events of the pair
coordinators. For an opened opportunity that is pushable it evaluates the six
eligibility layers over the whole user directory at once (``core.eligibility``,
``actors.directory``), records a ``skipped`` row with the deciding layer for every
user with a session who is not eligible, starts the cooldown of the eligible ones,
and fans them out to the queue shards (``actors.queues``) by chat, one call per
shard. Public opportunities (confidence ≥ ``channel_min_confidence``) also go to the
configured channels. A closed opportunity is broadcast to the shards, whose queued
items for it then expire. The directory is refreshed from Redis's change streams
every second.

A shard that cannot take its batch (restarting, Redis down) keeps it here and it is
retried; the (chat, opportunity) dedup in the shard makes the retry harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import ray
import redis.asyncio as aioredis

from actors.directory import UserDirectory
from actors.lazy import LazyImpl, sink_emitter, stop_task
from actors.opportunities import DISTRIBUTOR_NAME
from actors.queues import BATCH_SCHEMA, DEAD_LETTERS_KEY, split_by_shard
from core.accounts import Tier, tier_policies
from core.eligibility import Layer, OpportunityView
from core.settings import Settings
from pipeline.deliveries import DELIVERIES, DELIVERIES_DATASET, Audience, DeliveryStatus

log = logging.getLogger(__name__)

REFRESH_S = 1.0
GROUPS_EVERY = 30
"""Groups are re-read every this many refreshes."""
RETRY_S = 1.0


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _channel_batch(channels: Sequence[str], due_ms: int) -> pa.Table:
    rows = []
    for ref in channels:
        try:
            chat: int | None = int(ref)
            name: str | None = None
        except ValueError:
            chat, name = None, ref
        rows.append(
            {
                "chat": chat,
                "chat_ref": name,
                "user_id": None,
                "audience": Audience.CHANNEL.value,
                "tier": "channel",
                "due_ms": due_ms,
                "silent": False,
            }
        )
    return pa.Table.from_pylist(rows, schema=BATCH_SCHEMA)


class Distributor:
    """Plain async class; ``shards`` are objects with ``enqueue(event, batch)`` and
    ``mark_closed(ids)`` coroutines (the Ray handles, wrapped)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: aioredis.Redis,
        directory: UserDirectory,
        shards: Sequence[Any],
        emit: Callable[[str, pa.Table], Awaitable[None] | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.dist = settings.distribution
        self.client = client
        self.directory = directory
        self.shards = list(shards)
        self.emit = emit
        self.clock = clock
        self.policies = tier_policies(self.dist.tiers)
        self.pending: deque[tuple[int, dict[str, Any], pa.Table]] = deque()
        """Fan-out batches a shard could not take yet: (shard, event, batch)."""
        self.counts: Counter[str] = Counter()
        self.skips: Counter[str] = Counter()
        self.fanout_ms: deque[float] = deque(maxlen=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    async def start(self) -> int:
        loaded = await self.directory.load()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._refresh_loop()), loop.create_task(self._retry_loop())]
        return loaded

    async def stop(self) -> None:
        for task in self._tasks:
            await stop_task(task)
        self._tasks = []

    # -- events -----------------------------------------------------------------------------
    async def on_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Lifecycle events from a pair coordinator (``event``: opened/updated/closed)."""
        out: Counter[str] = Counter()
        closed = [str(e["opportunity_id"]) for e in events if e.get("event") == "closed"]
        if closed:
            await self._broadcast_closed(closed)
            out["closed"] += len(closed)
        for event in events:
            if event.get("event") != "opened" or not event.get("pushable"):
                continue
            try:
                out["queued"] += await self.fan_out(event)
            except Exception:  # one bad event never stops the others, nor the coordinator
                self.counts["errors"] += 1
                out["errors"] += 1
                log.exception("distributor: fanning out %s failed", event.get("opportunity_id"))
        return dict(out)

    async def _broadcast_closed(self, ids: list[str]) -> None:
        results = await asyncio.gather(*(s.mark_closed(ids) for s in self.shards), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("distributor: a shard missed a close (its items expire by age): %r", r)

    async def fan_out(self, event: Mapping[str, Any]) -> int:
        """Evaluate one opportunity over every user and queue it for the eligible chats."""
        t0 = time.perf_counter()
        view = OpportunityView.from_event(event)
        now = datetime.fromtimestamp(self.clock(), UTC)
        async with self._lock:
            result = await self.directory.evaluate(view, now)
            eligible = result.filter(pl.col("layer") == 0)
            if eligible.height:
                for tier, part in eligible.group_by("tier"):
                    cooldown = self._cooldown_s(str(tier[0]))
                    await self.directory.start_cooldown(
                        view.dedup_key, part.get_column("user_id").to_numpy(), now, cooldown
                    )
                self.directory.note_sent(eligible.get_column("user_id").to_numpy(), now)
        self._skipped_rows(result, view, now)
        batch = self._batch(eligible)
        if self.dist.channels and float(event.get("confidence") or 0) >= self.dist.channel_min_confidence:
            batch = pa.concat_tables([batch, _channel_batch(self.dist.channels, _ms(now))])
        queued = await self._enqueue(dict(event), batch)
        self.counts["opportunities"] += 1
        self.counts["eligible"] += eligible.height
        self.fanout_ms.append((time.perf_counter() - t0) * 1000)
        return queued

    def _cooldown_s(self, tier: str) -> int:
        try:
            return self.policies[Tier(tier)].cooldown_s
        except (ValueError, KeyError):  # groups
            return self.policies[Tier.FREE].cooldown_s

    def _batch(self, eligible: pl.DataFrame) -> pa.Table:
        n = eligible.height
        frame = eligible.select(
            pl.col("chat_id").cast(pl.Int64).alias("chat"),
            pl.lit(None, pl.String).alias("chat_ref"),
            pl.when(pl.col("audience") == Audience.USER.value)
            .then(pl.col("user_id"))
            .otherwise(None)
            .cast(pl.Int64)
            .alias("user_id"),
            pl.col("audience").cast(pl.String),
            pl.col("tier").cast(pl.String),
            pl.col("due_at").dt.epoch("ms").cast(pl.Int64).alias("due_ms"),
            pl.col("silent").cast(pl.Boolean),
        )
        table = frame.to_arrow() if n else BATCH_SCHEMA.empty_table()
        return table.cast(BATCH_SCHEMA)

    async def _enqueue(self, event: dict[str, Any], batch: pa.Table) -> int:
        if not batch.num_rows:
            return 0
        parts = split_by_shard(batch, len(self.shards))
        results = await asyncio.gather(
            *(self.shards[i].enqueue(event, part) for i, part in parts.items()), return_exceptions=True
        )
        queued = 0
        for (i, part), r in zip(parts.items(), results, strict=True):
            if isinstance(r, BaseException):
                log.warning("distributor: shard %d cannot take %d chats yet: %r", i, part.num_rows, r)
                self.pending.append((i, event, part))
                self.counts["enqueue_retries"] += 1
            else:
                queued += int(r)
        self.counts["queued"] += queued
        return queued

    def _skipped_rows(self, result: pl.DataFrame, view: OpportunityView, now: datetime) -> None:
        """One ``skipped`` row per user with a session who did not qualify (layer 2-6)."""
        counts = result.group_by("reason").len()
        for reason, n in counts.iter_rows():
            if reason:
                self.skips[str(reason)] += int(n)
        if self.emit is None:
            return
        skipped = result.filter(pl.col("layer") >= int(Layer.SUBSCRIPTION))
        size = skipped.height
        if not size:
            return
        ts = pa.timestamp("ms", tz="UTC")
        now_ms = _ms(now)
        given = {
            "queued_at": pa.array([now_ms] * size, pa.int64()).cast(ts),
            "opportunity_id": pa.array([view.opportunity_id] * size),
            "chat_id": skipped.get_column("chat_id").cast(pl.Int64).to_arrow(),
            "user_id": skipped.get_column("user_id").cast(pl.Int64).to_arrow(),
            "audience": skipped.get_column("audience").cast(pl.String).to_arrow(),
            "status": pa.array([DeliveryStatus.SKIPPED.value] * size),
            "reason": skipped.get_column("reason").cast(pl.String).to_arrow(),
            "layer": skipped.get_column("layer").cast(pl.Int8).to_arrow(),
            "kind": pa.array([str(view.kind)] * size),
            "tier": skipped.get_column("tier").cast(pl.String).to_arrow(),
            "priority": pa.array([str(view.priority)] * size),
            "net_bps": pa.array([float(view.net_bps)] * size, pa.float64()),
            "detected_at": pa.array([_ms(view.detected_at)] * size, pa.int64()).cast(ts),
        }
        columns = [
            given[f.name].cast(f.type) if f.name in given else pa.nulls(size, f.type) for f in DELIVERIES
        ]
        out = self.emit(DELIVERIES_DATASET, pa.Table.from_arrays(columns, schema=DELIVERIES))
        if asyncio.iscoroutine(out):
            asyncio.get_running_loop().create_task(out)

    # -- admin ------------------------------------------------------------------------------
    async def why(self, user_id: int, event: Mapping[str, Any]) -> tuple[int, str]:
        """The layer (0 = eligible) and reason that decide ``user_id`` for this opportunity."""
        view = OpportunityView.from_event(event)
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            layer, reason = await self.directory.why(user_id, view, now)
        except KeyError:
            return int(Layer.SESSION), "unknown user"
        return int(layer), str(reason)

    def note_blocked(self, chat_ids: Sequence[int]) -> None:
        """A shard saw 403s: those chats get nothing more until they come back."""
        self.directory.note_blocked([int(c) for c in chat_ids])

    async def replay_dead_letters(self, limit: int = 1000) -> int:
        """Put up to ``limit`` dead-lettered notifications back in their queues (attempts reset)."""
        replayed = 0
        while replayed < limit:
            body = await self.client.rpop(DEAD_LETTERS_KEY)
            if body is None:
                break
            record = json.loads(cast(bytes, body))
            item, event = record["item"], record["event"]
            chat = item["chat"]
            batch = pa.Table.from_pylist(
                [
                    {
                        "chat": chat if isinstance(chat, int) else None,
                        "chat_ref": chat if isinstance(chat, str) else None,
                        "user_id": item.get("user_id"),
                        "audience": item["audience"],
                        "tier": item["tier"],
                        "due_ms": int(self.clock() * 1000),
                        "silent": bool(item.get("silent")),
                    }
                ],
                schema=BATCH_SCHEMA,
            )
            for i, part in split_by_shard(batch, len(self.shards)).items():
                await self.shards[i].enqueue(event, part, force=True)
            replayed += 1
        self.counts["dead_letters_replayed"] += replayed
        return replayed

    # -- loops --------------------------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(REFRESH_S)
            rounds += 1
            try:
                async with self._lock:
                    await self.directory.refresh()
                    if rounds % GROUPS_EVERY == 0:  # groups have no change stream
                        await self.directory.load_groups()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counts["refresh_errors"] += 1
                log.warning("distributor: directory refresh failed (retrying): %r", exc)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            for _ in range(len(self.pending)):
                index, event, part = self.pending.popleft()
                try:
                    self.counts["queued"] += int(await self.shards[index].enqueue(event, part))
                except asyncio.CancelledError:
                    self.pending.appendleft((index, event, part))
                    raise
                except Exception:
                    self.pending.append((index, event, part))
                    break

    def stats(self) -> dict[str, Any]:
        lat = np.asarray(self.fanout_ms) if self.fanout_ms else None
        return {
            **dict(self.counts),
            "skips": dict(self.skips),
            "pending_batches": len(self.pending),
            "targets": len(self.directory),
            "fanout_ms": {}
            if lat is None
            else {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        }


class _ShardHandle:
    """A queue-shard actor handle as the :class:`Distributor` awaits it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def enqueue(self, event: dict[str, Any], batch: pa.Table, *, force: bool = False) -> int:
        return int(await self.handle.enqueue.remote(event, batch, force=force))

    async def mark_closed(self, ids: list[str]) -> int:
        return int(await self.handle.mark_closed.remote(ids))


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class DistributorActor(LazyImpl[Distributor]):
    """``dist:engine``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def build(self) -> Distributor:
        from actors.opportunities import redis_client
        from actors.queues import get_shards

        settings = self.settings
        client = redis_client(settings.redis.url)
        shards = [_ShardHandle(h) for h in get_shards(settings)]
        impl = Distributor(
            settings,
            client=client,
            directory=UserDirectory(settings, client),
            shards=shards,
            emit=sink_emitter(settings),
        )
        await impl.start()
        return impl

    async def ready(self) -> dict[str, Any]:
        return (await self.impl_()).stats()

    async def on_events(self, events: list[dict[str, Any]]) -> dict[str, int]:
        return await (await self.impl_()).on_events(events)

    async def why(self, user_id: int, event: dict[str, Any]) -> tuple[int, str]:
        return await (await self.impl_()).why(user_id, event)

    async def note_blocked(self, chat_ids: list[int]) -> None:
        (await self.impl_()).note_blocked(chat_ids)

    async def replay_dead_letters(self, limit: int = 1000) -> int:
        return await (await self.impl_()).replay_dead_letters(limit)

    async def stats(self) -> dict[str, Any]:
        return (await self.impl_()).stats()

    async def stop(self) -> dict[str, Any]:
        impl = await self.impl_()
        await impl.stop()
        return impl.stats()


def get_distributor(settings: Settings) -> Any:
    return DistributorActor.options(  # type: ignore[attr-defined]
        name=DISTRIBUTOR_NAME, namespace=settings.ray.namespace, get_if_exists=True
    ).remote(settings)
