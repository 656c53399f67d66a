"""Telegram's flood limits as pure policy: token buckets with an injected clock.

Used by the Telegram sandbox to decide when to answer 429, and meant to be reused by
the delivery rate limiter so that sender and sandbox agree on the arithmetic.

Semantics (see docs/sandbox.md):
- a `TokenBucket(rate, burst)` starts full with `burst` tokens and refills at `rate`
  tokens per second up to `burst`; taking one needs a whole token;
- `FloodPolicy` combines three buckets per bot: global (`global_rate`/s, burst one
  second's worth), per chat (1/s, burst `chat_burst`) and per group/supergroup/channel
  (20/min, burst `group_burst`). A message is allowed only when every bucket it touches
  has a token; then one token is taken from each, otherwise none is taken.
- the wait is reported as float seconds; `retry_after_seconds` turns it into Telegram's
  whole-second ``retry_after`` (ceil, at least 1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum

PAID_BROADCAST_RATE = 1000.0
"""Messages per second a bot may send with paid broadcasts enabled."""


class FloodScope(StrEnum):
    GLOBAL = "global"
    CHAT = "chat"
    GROUP = "group"


class TokenBucket:
    """`rate` tokens per second, at most `burst` stored; starts full at the first use."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, *, now: float | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = now

    def _refill(self, now: float) -> None:
        if self.stamp is None:
            self.stamp = now
            return
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def available(self, now: float) -> float:
        """Tokens held at `now` (fractional)."""
        self._refill(now)
        return self.tokens

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are available (0 when they are now)."""
        self._refill(now)
        missing = cost - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    def take(self, now: float, cost: float = 1.0) -> None:
        """Take `cost` tokens unconditionally (call after `wait` said 0)."""
        self._refill(now)
        self.tokens -= cost

    def try_take(self, now: float, cost: float = 1.0) -> tuple[bool, float]:
        """Take `cost` tokens if they are there: ``(True, 0.0)``, else ``(False, seconds to wait)``."""
        wait = self.wait(now, cost)
        if wait > 0:
            return False, wait
        self.tokens -= cost
        return True, 0.0

    def is_full(self, now: float) -> bool:
        return self.available(now) >= self.burst - 1e-9


def retry_after_seconds(wait_s: float) -> int:
    """Telegram's ``retry_after``: whole seconds until a token is there, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """The numbers; defaults are Telegram's published limits."""

    global_rate: float = 30.0
    global_burst: float | None = None
    """Defaults to one second's worth of `global_rate`."""
    chat_rate: float = 1.0
    chat_burst: float = 3.0
    """Short bursts to one chat, as Telegram tolerates; 1 is the strictest."""
    group_rate_per_min: float = 20.0
    group_burst: float = 5.0

    @classmethod
    def telegram(cls, *, paid_broadcast: bool = False, global_rate: float | None = None) -> FloodLimits:
        rate = global_rate if global_rate is not None else (PAID_BROADCAST_RATE if paid_broadcast else 30.0)
        return cls(global_rate=rate)

    @property
    def effective_global_burst(self) -> float:
        return self.global_burst if self.global_burst is not None else max(1.0, self.global_rate)


@dataclass(frozen=True, slots=True)
class FloodDecision:
    ok: bool
    wait_s: float = 0.0
    scope: FloodScope | None = None
    """The bucket that refused (the one with the longest wait)."""

    @property
    def retry_after(self) -> int:
        return retry_after_seconds(self.wait_s)


@dataclass(slots=True)
class FloodPolicy:
    """Global, per-chat and per-group buckets for one bot."""

    limits: FloodLimits = field(default_factory=FloodLimits)
    _global: TokenBucket | None = None
    _chats: dict[Hashable, TokenBucket] = field(default_factory=dict)
    _groups: dict[Hashable, TokenBucket] = field(default_factory=dict)
    _taken: int = 0

    def __post_init__(self) -> None:
        self._global = TokenBucket(self.limits.global_rate, self.limits.effective_global_burst)

    def _chat(self, chat_id: Hashable) -> TokenBucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            bucket = self._chats[chat_id] = TokenBucket(self.limits.chat_rate, self.limits.chat_burst)
        return bucket

    def _group(self, chat_id: Hashable) -> TokenBucket:
        bucket = self._groups.get(chat_id)
        if bucket is None:
            bucket = self._groups[chat_id] = TokenBucket(
                self.limits.group_rate_per_min / 60.0, self.limits.group_burst
            )
        return bucket

    def check(self, now: float, chat_id: Hashable, *, is_group: bool = False) -> FloodDecision:
        """Would a message to `chat_id` pass at `now`? Takes nothing."""
        assert self._global is not None
        worst = FloodDecision(True)
        buckets: list[tuple[FloodScope, TokenBucket]] = [
            (FloodScope.GLOBAL, self._global),
            (FloodScope.CHAT, self._chat(chat_id)),
        ]
        if is_group:
            buckets.append((FloodScope.GROUP, self._group(chat_id)))
        for scope, bucket in buckets:
            wait = bucket.wait(now)
            if wait > worst.wait_s:
                worst = FloodDecision(False, wait, scope)
        return worst

    def try_send(self, now: float, chat_id: Hashable, *, is_group: bool = False) -> FloodDecision:
        """Take a token from every bucket the message touches, or from none and say how long to wait."""
        decision = self.check(now, chat_id, is_group=is_group)
        if decision.ok:
            assert self._global is not None
            self._global.take(now)
            self._chats[chat_id].take(now)
            if is_group:
                self._groups[chat_id].take(now)
            self._taken += 1
            if self._taken % 4096 == 0:
                self.prune(now)
        return decision

    def prune(self, now: float) -> None:
        """Forget chat buckets that have refilled: a full bucket is the same as a new one."""
        for buckets in (self._chats, self._groups):
            for key in [k for k, b in buckets.items() if b.is_full(now)]:
                del buckets[key]

    @property
    def tracked_chats(self) -> int:
        return len(self._chats)
