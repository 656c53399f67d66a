"""A queue shard's Redis log and its rows: chats in flight before a send, done after it,
requeues and dead letters; every outcome a ``deliveries`` row; the flush that writes the
done sets, cooldowns, pending marks and refunds and hands the rows to the lake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from redis.exceptions import RedisError

from actors.outbound import HANDED
from actors.queues.base import ShardBase, _ts
from core.accounts import Tier
from core.errors import StoreUnavailable
from core.notifications import SendResult
from core.queueing import QueueItem, target_of
from pipeline.deliveries import DELIVERIES_DATASET, Audience, DeliveryStatus, deliveries_table
from state.keys import DEAD_LETTERS_KEY

log = logging.getLogger(__name__)

ROW_FLUSH_S = 0.5
COOLED_MAX = 200_000
"""At most this many cooldowns this shard started kept in memory (Redis holds them all)."""


class ShardPersistence(ShardBase):
    """What a shard writes: to Redis (its durability) and to the lake (``deliveries``)."""

    # -- in flight, done, requeued, dead letters --------------------------------------------
    async def _mark_inflight(self, chat: int | str, items: list[QueueItem]) -> None:
        """Recorded right before the send: a shard that dies now will not send these again."""

        def build(pipe: Any) -> None:
            for item in items:
                pipe.sadd(self.inflight_key(item.batch), str(chat))

        await self._inflight_writes.run(build)

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

    async def _persist_done(self, chat: int | str, items: list[QueueItem]) -> None:
        """Mark these finished in Redis at once (the flush would within ``ROW_FLUSH_S``): a
        shard that dies right after a send must not take the send for an unknown one."""

        def build(pipe: Any) -> None:
            for item in items:
                pipe.sadd(self.done_key(item.batch), str(chat))
                pipe.srem(self.inflight_key(item.batch), str(chat))

        try:
            await self._done_writes.run(build)
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
        body = {
            "item": item.to_dict(),
            "event": self.events.get(item.opportunity_id),
            "error": result.error,
            "at": self.clock(),
        }
        await self.client.lpush(DEAD_LETTERS_KEY, json.dumps(body, default=str))
        self._finish(item, DeliveryStatus.FAILED, reason=f"dead_letter: {result.error or 'transient'}")
        self.stats_.dead_letters += 1  # counted once its row is there (a flush then holds it)
        self.stats_.failed += 1
        await self._persist_done(item.chat, [item])

    # -- outcomes, rows and the Redis log ---------------------------------------------------
    def _finish(self, item: QueueItem, status: DeliveryStatus, **row: Any) -> None:
        self._row(item, status, **row)
        self._pending_done[item.batch].append(item.chat)
        self._settle(item, status)
        if self.outbound is not None and status in HANDED:  # the webhook is a channel of its own
            event = self.events.get(item.opportunity_id)
            self.outbound.offer(item.user_id, item.audience, item.tier, event, item.queued_ms)

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
        assigned = self._assignment(item)
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
                "experiment": assigned.experiment,  # the user's experiment and variant, if any
                "variant": assigned.variant,
                "bot_id": self.chat_bots.row_bot(chat),  # the bot of the pool (null: one bot, not known)
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
