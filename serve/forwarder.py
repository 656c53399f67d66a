"""The per-replica forwarder: ``update_id`` dedup in Redis and the hand-off to the bot
shards in batches, off the request path (used by the webhook ingress and the poller)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.bots import BOT_FIELD
from serve.dispatch import UpdateRouter

log = logging.getLogger(__name__)


# -- the per-replica forwarder: dedup + enqueue in batches, off the request path ---------------

# SET NX EX for every key in one round trip; 1 = fresh, 0 = seen before.
_DEDUP_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0
end
return out
"""

ENQUEUED = "enqueued"
DUPLICATE = "duplicate"


BUSY = "busy"


class ForwardFailed(Exception):
    """A batch could not be deduplicated (``store`` = True: Redis) or enqueued (the shards;
    ``busy`` = True: the shard was at its backlog cap)."""

    def __init__(self, message: str, *, store: bool, busy: bool = False) -> None:
        super().__init__(message)
        self.store = store
        self.busy = busy


@dataclass(eq=False, slots=True)
class _Item:
    update: dict[str, Any]
    waiter: asyncio.Future[str] | None
    marked: bool = False
    """Its dedup mark is ours (set by an earlier attempt that then failed to enqueue)."""


class UpdateForwarder:
    """Dedup and enqueue of one ingress replica's updates, batched on its event loop.

    :meth:`offer` / :meth:`submit` append to one FIFO; a single flusher task takes
    everything pending (up to ``max_batch``), marks the ``update_id``s in Redis with
    one script call (``SET NX EX`` each; a repeat is dropped, also within a batch) and
    hands the fresh ones to their shards with one ``accept_many`` per shard, awaiting
    them before the next batch, so one chat's updates reach its shard in arrival order.

    - :meth:`submit` (the ack-once-enqueued path) returns a future: ``"enqueued"``,
      ``"duplicate"`` or :class:`ForwardFailed` (the dedup marks it set are removed, so
      a redelivery goes through; nothing is retried here — the sender redelivers).
    - :meth:`offer` (the fast-ack path) returns at once; a batch that fails keeps its
      offered updates at the head of the queue and is retried with backoff, only the
      parts that failed (a shard that took its part is not sent it again).
    - :attr:`healthy` is True once a batch went through and until one fails, and while no
      shard said it is full; the ingress only acks early while it is True, so an outage
      or an overloaded shard turns into 503s.
    - Back-pressure: a shard takes only what fits under its backlog cap
      (:meth:`UpdateShard.accept_many`) and says how full it is. A waiting sender whose
      update was refused gets :class:`ForwardFailed` (``busy``; 503) and its dedup mark is
      removed, so Telegram's redelivery is processed. An update already acknowledged (fast
      ack) is never dropped: it stays at the head of the queue, keeps its mark and is
      offered again with backoff until the shard takes it. A shard whose answer showed it
      full is *pressured* (:attr:`healthy` is False) until an answer shows room again;
      meanwhile every request takes the waiting path, so nothing more is acknowledged
      before a shard holds it.
    - Gathering (Nagle-like, for fast-acked updates only): a forwarder that took no batch
      in the last ``linger_s`` (50 ms) sends at once, so a quiet bot adds no delay; a
      busy one takes a batch once ``batch_target`` (128) updates are pending or
      ``linger_s`` after its last batch, whichever comes first. A batch costs one Redis
      and one Ray call per shard — about 0.65 ms of CPU in the replica, most of it the Ray
      call — so under load a batch carries tens of updates instead of the few that
      arrive during one round trip (docs/performance.md, ``bench/webhook.py``).
    """

    def __init__(
        self,
        shards: UpdateRouter,
        redis: Any,
        key_of: Callable[[int], str],
        *,
        ttl_s: int,
        max_batch: int = 256,
        max_pending: int = 10_000,
        linger_s: float = 0.05,
        batch_target: int = 128,
        retry_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self.shards = shards
        self.redis = redis
        self.key_of = key_of
        self.ttl_s = ttl_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.linger_s = linger_s
        self.batch_target = min(batch_target, max_batch)
        self.retry_s = retry_s
        self._ok = False  # the last batch went through (Redis and the shards answered)
        self.full: set[int] = set()
        """Shards whose last answer said they are at their backlog cap."""
        self.batches = 0
        self.enqueued = 0
        self.duplicates = 0
        self.failures = 0
        self.refused = 0
        self.last_error: str | None = None
        self._pending: deque[_Item] = deque()
        self._waiting = 0  # items in _pending whose sender waits for the outcome
        self._script = redis.register_script(_DEDUP_LUA)
        self._wake = asyncio.Event()
        self._send_now = asyncio.Event()  # stop gathering: a batch is full or a sender waits
        self._last_batch = -1e9  # loop time the last batch was taken
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- the request side ----------------------------------------------------------------

    def offer(self, update: dict[str, Any]) -> bool:
        """Queue ``update`` without waiting; False when the queue is full (answer 503)."""
        if len(self._pending) >= self.max_pending:
            return False
        self._push(_Item(update, None))
        return True

    def submit(self, update: dict[str, Any]) -> asyncio.Future[str]:
        """Queue ``update``; the future resolves once it is enqueued (or found a duplicate)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if len(self._pending) >= self.max_pending:
            waiter.set_exception(ForwardFailed("forwarder queue full", store=False))
        else:
            self._waiting += 1
            self._push(_Item(update, waiter))
        return waiter

    def _push(self, item: _Item) -> None:
        self._pending.append(item)
        self._idle.clear()
        self._wake.set()
        if item.waiter is not None or len(self._pending) >= self.batch_target:
            self._send_now.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def healthy(self) -> bool:
        """True while updates may be acknowledged before a shard holds them (see the class doc)."""
        return self._ok and not self.full

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "pending": len(self._pending),
            "batches": self.batches,
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "failures": self.failures,
            "refused": self.refused,
            "full_shards": sorted(self.full),
            "last_error": self.last_error,
        }

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is handed on (or ``timeout_s``).

        Idle, not merely an empty queue: a batch being flushed has left the queue already."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- the flusher -----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_s[0]
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._gather(loop)
                self._last_batch = loop.time()
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                self._waiting -= sum(item.waiter is not None for item in batch)
                retry = await self._flush(batch)
                if retry:  # offered items only (their senders have their 200 already)
                    self._pending.extendleft(reversed(retry))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_s[1])
                else:
                    delay = self.retry_s[0]
            self._idle.set()

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch of fast-acked updates gather: until ``linger_s`` after the last batch."""
        if self._waiting or len(self._pending) >= self.batch_target:
            return  # a sender waits for its answer, or the batch is big enough
        wait = self._last_batch + self.linger_s - loop.time()
        if wait <= 0:
            return  # quiet until now: send at once
        self._send_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._send_now.wait(), wait)

    def _fail(self, items: Sequence[_Item], exc: ForwardFailed) -> list[_Item]:
        """Fail the waiting items; return the offered ones (to retry)."""
        self._ok = False
        self.failures += 1
        self.last_error = str(exc)
        retry: list[_Item] = []
        for item in items:
            if item.waiter is None:
                retry.append(item)
            elif not item.waiter.done():
                item.waiter.set_exception(exc)
        return retry

    async def _flush(self, batch: list[_Item]) -> list[_Item]:
        todo = [item for item in batch if not item.marked]
        if todo:
            keys = [self._key(item.update) for item in todo]
            try:
                flags = await self._script(keys=keys, args=[self.ttl_s])
            except Exception as exc:
                log.warning("update forwarder: dedup of %d updates failed: %s", len(todo), exc)
                return self._fail(batch, ForwardFailed(f"dedup unavailable: {exc}", store=True))
            for item, flag in zip(todo, flags, strict=True):
                if int(flag):
                    item.marked = True
                else:
                    self.duplicates += 1
                    if item.waiter is not None and not item.waiter.done():
                        item.waiter.set_result(DUPLICATE)
        self.batches += 1
        fresh = [item for item in batch if item.marked]
        if not fresh:
            self._ok = True
            return []
        failed_at: list[int] = []
        refused_at: list[int] = []
        error: BaseException | None = None
        try:
            calls = self.shards.submit_many([item.update for item in fresh])
            results = await asyncio.gather(*(ref for ref, _ in calls.values()), return_exceptions=True)
        except Exception as exc:  # submitting itself failed: nothing went out
            failed_at, error = list(range(len(fresh))), exc
        else:
            for shard, (_, positions), result in zip(calls, calls.values(), results, strict=True):
                if isinstance(result, BaseException):
                    error = result
                    failed_at.extend(positions)
                    continue
                taken = self._note_answer(shard, result, len(positions))
                refused_at.extend(positions[taken:])
                for i in positions[:taken]:
                    self.enqueued += 1
                    waiter = fresh[i].waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(ENQUEUED)
        retry: list[_Item] = []
        if refused_at:
            retry = await self._refused([fresh[i] for i in sorted(refused_at)])
        if not failed_at:
            self._ok = True
            return retry
        failed = [fresh[i] for i in sorted(failed_at)]
        log.warning("update forwarder: enqueue of %d updates failed: %s", len(failed), error)
        await self._unmark([item for item in failed if item.waiter is not None])
        retry += self._fail(failed, ForwardFailed(f"bot unavailable: {error}", store=False))
        return retry

    def _note_answer(self, shard: int, answer: Any, sent: int) -> int:
        """How many of the ``sent`` updates shard ``shard`` took; remembers whether it is full."""
        if not isinstance(answer, Mapping):  # a count (an older shard): everything was taken
            self.full.discard(shard)
            return sent
        taken = max(0, min(sent, int(answer.get("accepted", sent))))
        backlog, cap = int(answer.get("backlog", 0)), int(answer.get("cap", 0))
        if taken < sent or (cap and backlog >= cap):
            if shard not in self.full:
                log.warning("update forwarder: bot shard %s is full (%d updates pending)", shard, backlog)
            self.full.add(shard)
        else:
            self.full.discard(shard)
        return taken

    async def _refused(self, items: list[_Item]) -> list[_Item]:
        """A full shard refused ``items``: 503 for the waiting ones (mark removed), keep the acked ones."""
        self.refused += len(items)
        waiting = [item for item in items if item.waiter is not None]
        await self._unmark(waiting)
        busy = ForwardFailed("bot busy: its shard is at its backlog cap", store=False, busy=True)
        for item in waiting:
            assert item.waiter is not None
            if not item.waiter.done():
                item.waiter.set_exception(busy)
        return [item for item in items if item.waiter is None]

    def _key(self, update: Mapping[str, Any]) -> str:
        """The update's dedup key: its ``update_id``, and with a pool of bots its bot's id (each
        bot numbers its updates on its own)."""
        key = self.key_of(int(update["update_id"]))
        bot = update.get(BOT_FIELD)
        return key if bot is None else f"{key}:{int(bot)}"

    async def _unmark(self, items: Sequence[_Item]) -> None:
        """Remove the dedup marks of updates answered 503, so Telegram's redelivery gets through."""
        if not items:
            return
        for item in items:
            item.marked = False
        try:
            await self.redis.delete(*(self._key(i.update) for i in items))
        except Exception as exc:  # the marks expire with their TTL; a redelivery meanwhile is dropped
            log.warning("update forwarder: could not clear %d dedup marks: %s", len(items), exc)
