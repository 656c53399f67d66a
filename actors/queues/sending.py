"""A queue shard's pump and sends: what is due goes out best first (a digest when several
are), through the global rate limiter and the notifier; legs of the group a chat was
just sent join that message; quotas are drawn at send time; outcomes are handled (429,
403, retries); pushes are edited when what they showed closes."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from actors.edits import SentPush, moment_ms
from actors.missed import MISSED_REASON
from actors.queues.base import _ms
from actors.queues.persistence import ShardPersistence
from core.accounts import TierPolicy
from core.experiments import Layout
from core.notifications import SendOutcome, SendResult, is_leg_group, payload_of
from core.queueing import ChatQueue, QueueItem, by_score, is_stale, leg_units, retry_delay_s, target_of
from notify.wire import on_wire
from pipeline.deliveries import Audience, DeliveryStatus

log = logging.getLogger(__name__)

LATE_SEND_RETRIES = 3
"""New slots taken by a send whose own slot left the departure window before it could go, before
it goes anyway (the queue must drain under any load)."""
MARK_AHEAD_S = 0.05
"""A send is marked in flight (Redis) this long before its slot."""

SENT_AGO_HORIZON_S = 10.0
"""A send that ended longer ago than this no longer paces its chat (a group's interval is ~3 s)."""
ENDED_CAP = 4096
"""Chats whose last send's end is remembered before the old ones are forgotten (the bound
doubles while most of them are recent: 10 s at 1,000 messages/s is 10,000 chats)."""

DIGEST_MAX = 5
"""At most this many notifications in one digest message; the rest wait their turn."""

FIRSTS_MAX = 10_000
"""Opportunities whose first send is remembered (then forgotten all at once)."""
EDIT_LEAD_S = 0.02
"""The next chunk of edits is reserved this long before the last one's slots pass."""
EDIT_BACKLOG_MAX = 20_000
"""Queued close edits kept at most; past it the oldest are dropped (``edits_dropped``: the
message keeps its text). Only a rate of closes beyond the rate left by pushes fills it."""


class ShardSending(ShardPersistence):
    """The pump, the sends and their outcomes (one send in flight per chat)."""

    # -- edits on close ---------------------------------------------------------------------
    def _schedule_edits(self, pushes: Sequence[SentPush]) -> None:
        """Queue the edits of what closed: the pump reserves their slots when a turn leaves
        room after the pushes (:meth:`_start_edits`), so a close never delays a new push.
        A push queued twice is edited once, showing everything that closed by then."""
        queued = self._edit_ids
        for push in pushes:
            if id(push) not in queued:
                queued.add(id(push))
                self._edit_queue.append(push)
        while len(self._edit_queue) > EDIT_BACKLOG_MAX:  # the oldest give way (they keep their text)
            queued.discard(id(self._edit_queue.popleft()))
            self.stats_.edits_dropped += 1
        if pushes:
            self.wake.set()

    def _start_edits(self, room: int) -> None:
        """A chunk of queued edits (at most ~30 ms of this shard's share of the rate) when the
        slots of the last chunk are about to pass: edits fill the room pushes leave."""
        if not self._edit_queue or room <= 0 or self.clock() < self._edits_until:
            return
        take = min(room, self._edit_chunk, len(self._edit_queue))
        pushes = [self._edit_queue.popleft() for _ in range(take)]
        for push in pushes:
            self._edit_ids.discard(id(push))
        self._edits_until = math.inf  # until the reservation answers
        self._track_edit(self._edit_all(pushes))

    def _track_edit(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._edits.add(task)
        task.add_done_callback(self._edits.discard)

    async def _edit_all(self, pushes: list[SentPush]) -> None:
        """Edits paced by the global limiter like sends: their slots in one reservation."""
        try:
            delays = await self.limiter.reserve([(push.chat, push.group) for push in pushes])
        except asyncio.CancelledError:
            self._edits_until = 0.0
            raise
        except Exception as exc:  # best effort: the pushes keep their text
            self._edits_until = 0.0
            self.stats_.edits_failed += len(pushes)
            log.warning("%s: no slots for %d edits: %r", self.prefix, len(pushes), exc)
            return
        # the next chunk is reserved as these slots come due, behind any push reserved meanwhile
        self._edits_until = self.clock() + max(0.0, max(delays, default=0.0) - EDIT_LEAD_S)
        self.wake.set()
        for push, delay in zip(pushes, delays, strict=True):
            self._track_edit(self._edit(push, delay))

    async def _edits_now(self) -> None:
        """Every queued edit at once (the shard stops: no pump turn will take them)."""
        while self._edit_queue:
            pushes = list(self._edit_queue)
            self._edit_queue.clear()
            self._edit_ids.clear()
            await self._edit_all(pushes)

    async def _edit(self, push: SentPush, delay: float) -> None:
        """One edit at its slot (``delay`` from now); best effort (never retried)."""
        try:
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

    def _note_first_send(self, item: QueueItem, now_ms: float) -> None:
        """Where the time to an opportunity's first push from here went (the stats' ``first_send``)."""
        firsts = self.stats_.first_sent
        if item.opportunity_id in firsts:
            return
        if len(firsts) >= FIRSTS_MAX:
            firsts.clear()
        firsts.add(item.opportunity_id)
        self.stats_.first_sends.append((item.queued_ms - item.detected_ms, now_ms - item.queued_ms))

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
        horizon = now_ms + int(self._digest_window_s(queue) * 1000)
        live: list[QueueItem] = []
        ranked = self._ranks(queue)
        while len(live) < DIGEST_MAX:
            items = queue.take_due(horizon, limit=DIGEST_MAX - len(live), ranked=ranked)
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

    def _digest_window_s(self, queue: ChatQueue) -> float:
        """The chat's digest window: its user's experiment variant's, else the setting's."""
        if self.experiments and queue.items:
            window = self._assignment(next(iter(queue.items.values()))).strategy.digest_window_s
            if window is not None:
                return window
        return self.dist.digest_window_s

    def _layout(self, items: Sequence[QueueItem]) -> Layout:
        """The push's layout: its user's experiment variant's (``full`` for everyone else)."""
        return self._assignment(items[0]).strategy.layout if self.experiments and items else "full"

    def _ranking(self, item: QueueItem) -> bool:
        """Whether the chat of ``item`` gets its due items best score first
        (``core.personalization``): the setting is on and its user's strategy ranks (an
        experiment's variant may not). Items without a score (no model) keep priority, then
        newest, either way."""
        return self.settings.personalization.enabled and self._assignment(item).strategy.ranking

    def _ranks(self, queue: ChatQueue) -> bool:
        return bool(queue.items) and self._ranking(next(iter(queue.items.values())))

    def _is_ranked(self, items: Sequence[QueueItem]) -> bool:
        """Whether ``items`` (taken together) went in score order: a digest keeps it."""
        return len(items) > 1 and by_score(items) and self._ranking(items[0])

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
                await self.chat_bots.load([c for c, _ in jobs])  # each chat's bot of the pool
                delays = await self.limiter.reserve(
                    [(c, its[0].audience != Audience.USER, self._sent_ago(c)) for c, its in jobs]
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
            answered = self.clock()
            for (chat, _items), delay in zip(jobs, delays, strict=True):
                self._window(chat).note_slots([answered + delay])
            for (chat, items), delay in zip(jobs, delays, strict=True):
                self.busy.add(chat)
                task = loop.create_task(self._send(chat, items, answered + delay))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
        self._start_edits(room - len(jobs))
        wait = 1.0 if not self.heap else max(0.002, min(1.0, (self.heap[0][0] - now_ms) / 1000))
        if self._edit_queue and self._edits_until < math.inf:  # the next chunk's turn
            wait = min(wait, max(0.002, self._edits_until - self.clock()))
        return wait

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
            (delay,) = await self.limiter.reserve([(chat, push.group)])
            self._window(chat).note_slots([self.clock() + delay])
            if delay > 0:
                await asyncio.sleep(delay)
            if not await self._mark_or_requeue(chat, items, "join"):
                return
            notes = tuple(self.notifications[i.opportunity_id] for i in items)
            self._window(chat).depart(self.clock())
            async with self._send_slots:
                result = await self.notifier.edit(
                    chat,
                    push.message_id,
                    payload_of([*push.items, *notes], layout=push.layout),
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

    def _sent_ago(self, chat: int | str) -> float | None:
        """Seconds since the chat's last send ended, while that still matters to its pacing
        (a group's interval is ~3 s); older answers are forgotten."""
        now = self.clock()
        if len(self.ended) > self._ended_cap:  # forgotten in bulk: amortised O(1) a send
            self.ended = {c: t for c, t in self.ended.items() if now - t < SENT_AGO_HORIZON_S}
            self._ended_cap = max(ENDED_CAP, 2 * len(self.ended))
        ended = self.ended.get(chat)
        return None if ended is None or now - ended >= SENT_AGO_HORIZON_S else max(0.0, now - ended)

    async def _send(self, chat: int | str, items: list[QueueItem], due: float) -> None:
        """Send at ``due`` (``clock``), the slot the limiter gave, or later while this shard's
        departures in the last second are as many as its slots in it (:class:`DepartureWindow`):
        a send that leaves late must not crowd the sends of the slots after its own into one
        second (Telegram counts when they arrive). A send whose slot left the window meanwhile
        takes a new one."""
        try:
            # marked in flight just ahead of the slot, so that Redis's round trip does not make
            # the send late
            if due - self.clock() > MARK_AHEAD_S:
                await asyncio.sleep(due - MARK_AHEAD_S - self.clock())
            if not await self._mark_or_requeue(chat, items, "send"):
                return
            if due > self.clock():
                await asyncio.sleep(due - self.clock())
            notes = [self.notifications[i.opportunity_id] for i in items]
            layout = self._layout(items)  # compact: one line per item (an experiment's variant)
            ranked = self._is_ranked(items)  # a digest's lines in score order (personalization)
            payload = payload_of(notes, layout=layout, ranked=ranked)  # legs: one push ranked by net
            silent = all(i.silent for i in items)
            # the cap on requests in flight (the HTTP session's connections) is taken before the
            # departure is counted, never while a send sleeps until its slot: a request queued
            # for a connection leaves later than counted, and queued requests leave together
            async with self._send_slots:
                await self._await_departure(chat, items, due)
                window, wrote = self._window(chat), False

                def on_written() -> None:
                    nonlocal wrote
                    wrote = True
                    window.written(self.clock())

                window.leave()
                try:
                    with on_wire(on_written):  # counted when its bytes go, not when it was let go
                        result = await self.notifier.send(
                            chat,
                            payload,
                            silent=silent,
                            tz=self.zones.get(chat) or "UTC",
                            now=datetime.fromtimestamp(self.clock(), UTC),
                            lang=self.langs.get(chat),
                        )
                finally:
                    if not wrote:  # never written (an error first, a notifier of another kind)
                        window.written(self.clock())
            self.ended[chat] = self.clock()
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

    async def _await_departure(self, chat: int | str, items: list[QueueItem], due: float) -> None:
        """Return at ``due`` or once this shard's departures in the last second (and sends not yet
        written) are fewer than its slots in it; a send whose slot left the window meanwhile
        takes a new one. The caller then lets the send go (:meth:`DepartureWindow.leave`)."""
        window, retries = self._window(chat), LATE_SEND_RETRIES
        # a sleep may end a hair before its slot: the slot is counted as come
        while (wait := window.wait_s(now := max(self.clock(), due))) > 0 and retries:
            if due > now - window.window_s:  # the slot still counts: wait for the window
                await asyncio.sleep(min(wait, due + window.window_s - now))
                continue
            retries -= 1
            self.stats_.late_slots += 1
            (delay,) = await self.limiter.reserve(
                [(chat, items[0].audience != Audience.USER, self._sent_ago(chat))]
            )
            due = self.clock() + delay
            window.note_slots([due])
            if delay > 0:
                await asyncio.sleep(delay)

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
                layout=self._layout(items),
                ranked=self._is_ranked(items),
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
                self._note_first_send(item, now_ms)
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
