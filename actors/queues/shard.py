"""The queue shard: :class:`QueueShard` takes fan-out batches (persisted before it
acknowledges, deduplicated by chat and opportunity), expires what closed, forgets a
chat, rebuilds from Redis at start, and reports its figures (the package doc says how)."""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from redis.exceptions import RedisError

from actors.edits import SentPush
from actors.lazy import drain_emitter, emitter_stats, loop_stats, percentiles, stop_task
from actors.queues.base import _ms, _s
from actors.queues.batches import _dedup_key, decode_batch, encode_batch
from actors.queues.sending import ShardSending
from core.experiments import NO_ASSIGNMENT
from core.notifications import GROUPABLE, Notification
from core.queueing import ChatQueue, QueueItem
from pipeline.deliveries import DELIVERIES, Audience, DeliveryStatus

log = logging.getLogger(__name__)

CLOSED_MAX = 10_000
"""At most this many closed ids remembered per shard (only ids it queued; oldest go first)."""


def _score(value: Any) -> float | None:
    """A row's score (``None``: no model, NaN, or a batch persisted before scores travelled)."""
    return None if value is None or value != value else float(value)


def _scores(batch: pa.Table) -> list[float | None]:
    """Each row's score; a batch without the column (an older release's) has none."""
    if "score" not in batch.schema.names:
        return [None] * batch.num_rows
    return [_score(v) for v in batch.column("score").to_pylist()]


class QueueShard(ShardSending):
    """Plain async class: one shard's queues, pump and Redis log (see the package doc).

    The layers: state (:mod:`actors.queues.base`), the Redis log and rows
    (:mod:`~actors.queues.persistence`), the pump and sends (:mod:`~actors.queues.sending`),
    and here intake, life and reporting."""

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
        await self._edits_now()
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
            score=_score(row.get("score")),
        )

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
        batch = self._shifted(batch)
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

    def _shifted(self, batch: pa.Table) -> pa.Table:
        """``batch`` with each user's ``send_shift_s`` (their experiment variant's) added to
        their ``due_ms``, before it is persisted (a restart keeps the shifted times)."""
        if not any(v.send_shift_s for e in self.experiments for v in e.variants):
            return batch
        users = batch.column("user_id").to_pylist()
        audiences = batch.column("audience").to_pylist()
        shifts = [
            int(self.strategy_for(u).strategy.send_shift_s * 1000) if a == Audience.USER else 0
            for u, a in zip(users, audiences, strict=True)
        ]
        if not any(shifts):
            return batch
        due = pc.add(batch.column("due_ms"), pa.array(shifts, pa.int64()))
        return batch.set_column(batch.schema.get_field_index("due_ms"), "due_ms", due)

    @staticmethod
    def _keys(batch: pa.Table) -> list[int | str]:
        refs = batch.column("chat_ref").to_pylist()
        return [r or c for c, r in zip(batch.column("chat").to_pylist(), refs, strict=True)]

    def _add_items(self, n: Notification, batch_id: str, batch: pa.Table, queued_ms: int) -> int:
        """One :class:`QueueItem` per row, column by column (the fan-out's hot loop)."""
        opp, priority, kind = n.opportunity_id, str(n.priority), str(n.kind)
        net, detected = float(n.net_bps), _ms(n.detected_at) or queued_ms
        held = queued_ms + self._group_hold_ms(n)  # the chat is first due then (its legs gather)
        cols = [batch.column(c).to_pylist() for c in ("user_id", "audience", "tier", "due_ms", "silent")]
        scores = _scores(batch)
        chats, heap, push = self.chats, self.heap, heapq.heappush
        count = 0
        for chat, user_id, audience, tier, due, silent, score in zip(
            self._keys(batch), *cols, scores, strict=True
        ):
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
                score=score,
            )
            queue = chats.get(chat)
            if queue is None:
                queue = chats[chat] = ChatQueue()
            queue.items[opp] = item
            push(heap, (due if due >= held else held, opp, chat))
            count += 1
        self._note_zones(self._keys(batch), batch)
        return count

    def _group_hold_ms(self, n: Notification) -> int:
        """How long a new item for ``n`` waits before its chat is due: a leg that can be one
        message with others (``distribution.group_hold_s``), else not at all."""
        legs = n.kind in GROUPABLE and bool(n.buy_exchange and n.sell_exchange)
        if not legs or self.dist.grouping_window_s <= 0:
            return 0
        return int(self.dist.group_hold_s * 1000)

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
        if self.experiments:  # each user's experiment and variant (groups and channels: none)
            users = batch.column("user_id").to_pylist()
            audiences = batch.column("audience").to_pylist()
            assigned = [
                self.strategy_for(u) if a == Audience.USER else NO_ASSIGNMENT
                for u, a in zip(users, audiences, strict=True)
            ]
            given["experiment"] = pa.array([x.experiment for x in assigned], pa.string())
            given["variant"] = pa.array([x.variant for x in assigned], pa.string())
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
        edits: dict[int, SentPush] = {}  # a push that showed several of these: one edit
        for opp in dict.fromkeys(opportunity_ids):
            edited = reason == "closed" and opp in self.sent
            if edited:  # what was sent for it says it closed
                edits.update((id(push), push) for push in self.sent.close(opp, int(self.clock() * 1000)))
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
        self._schedule_edits(list(edits.values()))
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
            "edits_dropped": s.edits_dropped,
            "edits_queued": len(self._edit_queue),
            "late_slots": s.late_slots,
            "sent_notes": self.sent.notes,
            **self.missed.as_dict(),
            "latency_ms": {"n": len(lat), "p50": pct(0.5), "p99": pct(0.99)},
            "first_send_ms": {
                stage: percentiles([f[i] for f in s.first_sends])
                for i, stage in enumerate(("to_queue", "in_queue"))
            },
            "loop": loop_stats(),
        }
