"""The global rate limiter: when each message may go out so Telegram never says 429.

:class:`RateLimiter` (plain class, injected clock) hands out send times; it is wrapped by
:class:`RateLimiterActor`, one async Ray actor named ``ratelimit:global``
(:func:`get_rate_limiter`), which the queue shards call with many chats at once.

The arithmetic is ``core.flood``'s (the sandbox enforces the same :class:`FloodLimits`),
run slightly under the limits so that network jitter never turns into a 429:

- global: evenly spaced slots at ``headroom`` times the bot's rate (30/s, or up to 1,000/s
  with paid broadcast). A request takes the first free slot at or after the moment its
  chat may receive, so a chat that must wait does not hold up other chats. Slots spaced
  evenly below the rate keep Telegram's global bucket (one second's worth) almost full,
  which absorbs up to ~1 s of jitter.
- per chat (1/s) and per group (20/min): messages evenly spaced at ``headroom`` times the
  rate, no bursts (a token bucket of one): Telegram tolerates short bursts to a chat, but
  a burst followed by the steady rate is more than any window of it allows (3 in 3 s, 20
  in a minute). Spacing is counted from the later of the chat's last reservation and its
  last send as the caller saw it end (``sent_ago``), so a send that went out late does not
  bring the next one closer to it.
- ``reserve`` returns, for each request, the delay from now after which it may be sent;
  the caller sleeps that long and sends (a slot not used is simply lost).
- ``pause(retry_after_s, chat_id)`` after a 429: the chat (or, with ``chat_id=None``, every
  chat) gets nothing before ``retry_after_s``. The sandbox's 429 does not say which
  bucket refused, so a 429 is charged to its chat; 429s from ``escalate_chats`` different
  chats within ``escalate_window_s`` mean the global bucket ran dry: global pause.
- A pool of bots (``ARBFLOW_TELEGRAM__TOKENS``, docs/bot-pool.md): :class:`PoolRateLimiter`
  keeps one :class:`RateLimiter` per bot (Telegram counts each bot on its own), so every
  bucket above is per bot, per-chat ones per (bot, chat); a request names its bot as a
  fourth element (or the call does), none is the primary. The bots' slot grids interleave.
- Killing the actor is harmless: the restarted one (``conservative=True``) assumes every
  bucket was drained at its start, so the first message to a chat in its first seconds
  waits one chat interval; after that it is exact again. Nothing here needs to survive:
  the queues (in Redis) hold what is still to be sent.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import ray

from core.flood import PAID_BROADCAST_RATE, FloodLimits, FloodScope, TokenBucket
from core.settings import Settings

RATE_LIMITER_NAME = "ratelimit:global"
DEFAULT_HEADROOM = 0.97
"""Run every bucket at this fraction of Telegram's rate (≥ 95% of the rate is sustained)."""
SEND_LEAD_S = 0.03
"""The queue shards' limiter gives no slot sooner than this from now: a sender told "now" marks its
send in flight and leaves late by that much, and a late first send crowds the slots of the
second after it into one window (at 30 msg/s evenly spaced slots leave ~31 ms of slack)."""

ChatId = int | str
Request = (
    tuple[ChatId, bool] | tuple[ChatId, bool, float | None] | tuple[ChatId, bool, float | None, int | None]
)
"""``(chat_id, is_group[, sent_ago[, bot]])``: ``is_group`` for groups, supergroups and channels;
``sent_ago``, seconds since the caller's last send to that chat ended (``None``: unknown);
``bot``, the bot of the pool that sends it (``None``: the primary, or the call's ``bot``)."""


def configured_rate(settings: Settings) -> float:
    """Messages/s across all chats: ``telegram.global_rate``; with ``distribution.paid_broadcast``
    1,000/s unless ``global_rate`` was set explicitly (then that, at most 1,000)."""
    rate = settings.telegram.global_rate
    if settings.distribution.paid_broadcast:
        explicit = "global_rate" in settings.telegram.model_fields_set
        rate = min(rate, PAID_BROADCAST_RATE) if explicit else PAID_BROADCAST_RATE
    if rate <= 0:
        raise ValueError(f"the global rate must be positive, got {rate}")
    return float(rate)


class RateLimiter:
    """Send-time reservations under the global, per-chat and per-group buckets (see module doc)."""

    def __init__(
        self,
        limits: FloodLimits,
        *,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
        conservative: bool = False,
        escalate_chats: int = 2,
        escalate_window_s: float = 1.0,
        lead_s: float = 0.0,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        self.limits = limits
        self.headroom = headroom
        self.clock = clock
        self.conservative = conservative
        self.escalate_chats = max(1, escalate_chats)
        self.escalate_window_s = escalate_window_s
        self.lead_s = lead_s
        self.started = clock()
        self.global_rate = limits.global_rate * headroom
        self.interval = 1.0 / self.global_rate
        self.chat_rate = limits.chat_rate * headroom
        self.chat_burst = 1.0
        self.group_rate = limits.group_rate_per_min / 60.0 * headroom
        self.group_burst = 1.0
        # global slots: slot k is at started + k * interval; ``_next`` maps a taken slot
        # towards the next free one (union-find with path compression)
        self._next: dict[int, int] = {}
        self._first_slot = 1 if conservative else 0
        self._prune_at = 4096
        self._chats: dict[Hashable, TokenBucket] = {}
        self._groups: dict[Hashable, TokenBucket] = {}
        self._chat_pause: dict[Hashable, float] = {}
        self._global_pause = -math.inf
        self._recent_429: deque[tuple[float, Hashable]] = deque()
        self._reserved = 0
        self._max_delay = 0.0
        self._throttled = {FloodScope.CHAT.value: 0, FloodScope.GLOBAL.value: 0}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic, **options: Any
    ) -> RateLimiter:
        return cls(FloodLimits.telegram(global_rate=configured_rate(settings)), clock=clock, **options)

    # -- buckets ---------------------------------------------------------------------------------

    def _bucket(
        self, table: dict[Hashable, TokenBucket], key: Hashable, rate: float, burst: float
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            if self.conservative:  # as if drained when this limiter started
                bucket = TokenBucket(rate, burst, now=self.started)
                bucket.tokens = 0.0
            else:
                bucket = TokenBucket(rate, burst)
            table[key] = bucket
        return bucket

    @staticmethod
    def _earliest(bucket: TokenBucket, t: float) -> float:
        """The first moment at or after ``t`` (and after the bucket's last reservation) with a token."""
        at = t if bucket.stamp is None else max(t, bucket.stamp)
        return at + bucket.wait(at)

    # -- global slots ----------------------------------------------------------------------------

    def _slot_index(self, t: float) -> int:
        return max(self._first_slot, math.ceil((t - self.started) / self.interval - 1e-9))

    def _free_slot(self, k: int) -> int:
        root = k
        while root in self._next:
            root = self._next[root]
        while k in self._next and self._next[k] != root:  # path compression
            self._next[k], k = root, self._next[k]
        return root

    def _prune(self, now: float) -> None:
        current = self._slot_index(now)
        self._next = {k: v for k, v in self._next.items() if k >= current}
        self._prune_at = max(4096, 2 * len(self._next))
        for table in (self._chats, self._groups):
            for key in [k for k, b in table.items() if b.is_full(now)]:
                del table[key]
        self._chat_pause = {k: v for k, v in self._chat_pause.items() if v > now}

    # -- the API ---------------------------------------------------------------------------------

    def reserve(self, requests: Sequence[Request]) -> list[float]:
        """For each ``(chat_id, is_group[, sent_ago])``, the delay in seconds from now after which
        that message may be sent. Each request takes its slot: send it, or the slot is lost."""
        now = self.clock()
        if len(self._next) >= self._prune_at:
            self._prune(now)
        start = max(now + self.lead_s, self._global_pause)
        out: list[float] = []
        for request in requests:
            chat_id, is_group = request[0], request[1]
            sent_ago = request[2] if len(request) > 2 else None
            t = max(start, self._chat_pause.get(chat_id, start))
            chat = self._bucket(self._chats, chat_id, self.chat_rate, self.chat_burst)
            if sent_ago is not None:
                t = max(t, now - sent_ago + 1.0 / self.chat_rate)
            t = self._earliest(chat, t)
            group = None
            if is_group:
                group = self._bucket(self._groups, chat_id, self.group_rate, self.group_burst)
                if sent_ago is not None:
                    t = max(t, now - sent_ago + 1.0 / self.group_rate)
                t = self._earliest(group, t)
                t = max(t, self._earliest(chat, t))  # chat bucket stamps only move forward
            k = self._free_slot(self._slot_index(t))
            self._next[k] = k + 1
            at = max(t, self.started + k * self.interval)
            chat.take(at)
            if group is not None:
                group.take(at)
            delay = at - now
            out.append(delay)
            if delay > self._max_delay:
                self._max_delay = delay
        self._reserved += len(out)
        return out

    def pause(self, retry_after_s: float, chat_id: ChatId | None = None) -> FloodScope:
        """Telegram answered 429 with ``retry_after_s``: hold that chat (or everyone) back.

        Returns the scope applied: ``chat``, or ``global`` when asked (``chat_id=None``) or
        when 429s came from several chats at once (the bot's own bucket ran dry).
        """
        now = self.clock()
        until = now + max(0.0, float(retry_after_s))
        if chat_id is not None:
            self._recent_429.append((now, chat_id))
            while self._recent_429 and self._recent_429[0][0] < now - self.escalate_window_s:
                self._recent_429.popleft()
            chats = {c for _, c in self._recent_429}
            if len(chats) < self.escalate_chats:
                self._throttled[FloodScope.CHAT.value] += 1
                self._chat_pause[chat_id] = max(self._chat_pause.get(chat_id, until), until)
                bucket = self._bucket(self._chats, chat_id, self.chat_rate, self.chat_burst)
                if bucket.stamp is None or bucket.stamp <= until:
                    # Telegram's bucket for the chat may be emptier than ours: one token at ``until``
                    bucket.tokens = min(bucket.available(until), 1.0)
                return FloodScope.CHAT
        self._throttled[FloodScope.GLOBAL.value] += 1
        self._global_pause = max(self._global_pause, until)
        return FloodScope.GLOBAL

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        next_slot = self._free_slot(self._slot_index(max(now, self._global_pause)))
        return {
            "global_rate": self.limits.global_rate,
            "effective_rate": self.global_rate,
            "headroom": self.headroom,
            "conservative": self.conservative,
            "uptime_s": now - self.started,
            "reserved": self._reserved,
            "max_delay_s": self._max_delay,
            "backlog_s": max(0.0, self.started + next_slot * self.interval - now),
            "global_pause_s": max(0.0, self._global_pause - now),
            "paused_chats": sum(1 for until in self._chat_pause.values() if until > now),
            "throttled": dict(self._throttled),
            "tracked_chats": len(self._chats),
            "tracked_groups": len(self._groups),
        }


class PoolRateLimiter:
    """One :class:`RateLimiter` per bot of the pool (docs/bot-pool.md): Telegram counts each
    bot's messages on their own (30/s each, or its paid broadcast), so every bot has its
    global slots, and a chat's (1/s) and a group's (20/min) buckets are per (bot, chat).
    The capacity of the pool is the sum of its bots'.

    A request names its bot as a fourth element, or the call does (``bot=``); ``None`` is
    the primary. A bot not in the pool when the limiter was made gets a budget on first use
    (the same limits). The limiters share one clock, so delays of one call compare."""

    def __init__(self, make: Callable[[], RateLimiter], bots: Sequence[int] = ()) -> None:
        self.make = make
        first = make()
        self.primary: int | None = bots[0] if bots else None
        self.bots: dict[int | None, RateLimiter] = {self.primary: first}
        for i, bot in enumerate(bots[1:], start=1):
            limiter = self.bots[bot] = make()
            # the bots' slots interleaved, not at the same moments: the pool's sends leave evenly
            # spaced (a burst of one send per bot at each slot bunched their arrivals)
            limiter.started = first.started + i * first.interval / len(bots)
        self.clock = first.clock

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic, **options: Any
    ) -> PoolRateLimiter:
        ids = settings.telegram.bot_ids
        return cls(lambda: RateLimiter.from_settings(settings, clock=clock, **options), ids)

    def of(self, bot: int | None = None) -> RateLimiter:
        """The limiter of ``bot`` (``None``: the primary)."""
        key = self.primary if bot is None else bot
        limiter = self.bots.get(key)
        if limiter is None:
            limiter = self.bots[key] = self.make()
        return limiter

    def reserve(self, requests: Sequence[Request], bot: int | None = None) -> list[float]:
        """:meth:`RateLimiter.reserve`, each request in its bot's budget; delays in request order."""
        groups: dict[int | None, list[int]] = {}
        for i, request in enumerate(requests):
            who = request[3] if len(request) > 3 else None
            groups.setdefault(bot if who is None else who, []).append(i)
        if len(groups) <= 1:
            return self.of(next(iter(groups), bot)).reserve(requests)
        out = [0.0] * len(requests)
        for who, positions in groups.items():
            delays = self.of(who).reserve([requests[i] for i in positions])
            for i, delay in zip(positions, delays, strict=True):
                out[i] = delay
        return out

    def pause(
        self, retry_after_s: float, chat_id: ChatId | None = None, bot: int | None = None
    ) -> FloodScope:
        """:meth:`RateLimiter.pause` in ``bot``'s budget: a 429 from one bot holds back only it."""
        return self.of(bot).pause(retry_after_s, chat_id)

    def stats(self) -> dict[str, Any]:
        """The primary's figures (as with one bot), ``reserved`` and ``throttled`` summed over the
        pool, and with several bots each one's figures under ``bots``."""
        primary = self.of(None)
        out = primary.stats()
        if len(self.bots) > 1:
            per = {str(k): v.stats() for k, v in self.bots.items()}
            out["reserved"] = sum(s["reserved"] for s in per.values())
            out["throttled"] = {
                scope: sum(s["throttled"][scope] for s in per.values()) for scope in out["throttled"]
            }
            out["pool_rate"] = sum(s["global_rate"] for s in per.values())
            out["bots"] = per
        return out


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class RateLimiterActor:
    """``ratelimit:global``. Every method is idempotent enough to retry: a retried ``reserve``
    on a restarted actor hands out fresh (conservative) slots, and a retried ``pause`` only
    pauses again."""

    def __init__(self, settings: Settings) -> None:
        restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.impl = PoolRateLimiter.from_settings(settings, conservative=restarted, lead_s=SEND_LEAD_S)

    async def ready(self) -> bool:
        return True

    async def reserve(self, requests: list[Request], bot: int | None = None) -> list[float]:
        return self.impl.reserve(requests, bot)

    async def reserve_at(self, requests: list[Request], bot: int | None = None) -> tuple[float, list[float]]:
        """``reserve`` with the moment (this actor's clock) the delays count from: a caller
        places the slots on its own clock with :class:`core.flood.ClockOffset`, not by when
        the answer came."""
        return self.impl.clock(), self.impl.reserve(requests, bot)

    async def pause(self, retry_after_s: float, chat_id: ChatId | None = None, bot: int | None = None) -> str:
        return self.impl.pause(retry_after_s, chat_id, bot).value

    async def stats(self) -> dict[str, Any]:
        return self.impl.stats()

    async def pid(self) -> int:
        import os

        return os.getpid()


def get_rate_limiter(settings: Settings, **options: Any) -> Any:
    """The named limiter actor, created on first use (``get_if_exists``)."""
    return RateLimiterActor.options(  # type: ignore[attr-defined]
        name=RATE_LIMITER_NAME,
        namespace=settings.ray.namespace,
        get_if_exists=True,
        lifetime=options.pop("lifetime", None),
        **options,
    ).remote(settings)


__all__ = [
    "DEFAULT_HEADROOM",
    "RATE_LIMITER_NAME",
    "SEND_LEAD_S",
    "PoolRateLimiter",
    "RateLimiter",
    "RateLimiterActor",
    "Request",
    "configured_rate",
    "get_rate_limiter",
]
