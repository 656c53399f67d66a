"""The bot's own replies take their send slot from the same global rate limiter as pushes.

Without it, a reply to a user's command and a push to that user in the same second
would exceed Telegram's 1 msg/s per chat and earn a 429. :class:`PacedSends` is an
aiogram request middleware: before each ``sendMessage`` it asks the limiter
(``actors.ratelimit``, through an injected ``reserve`` coroutine) for a slot and waits
for it — the whole wait, however long (a 429's pause can be longer than any cap).

Fails closed: when the limiter does not answer within ``timeout_s`` (restarting, killed,
unreachable) the reply is paced by a :class:`LocalPacer` — token buckets of
``core.flood`` with the limiter's limits and headroom — which starts *drained*, as a
restarted limiter does (it cannot know what the shared limiter handed out just before),
so the first reply to a chat waits one chat interval (~1 s). The limiter is asked again
``retry_s`` after it failed; once it answers, the local pacer is dropped. A reply is never
lost to pacing and never sent before its slot.

What the local pacer cannot see: pushes and other shards' replies paced by the shared
limiter meanwhile. Such a message to the same chat within a second can earn a 429, which
is then handled like any other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import Response, TelegramType

from core.flood import FloodLimits, TokenBucket

log = logging.getLogger(__name__)

Reserve = Callable[[list[tuple[int | str, bool]]], Awaitable[list[float]]]

HEADROOM = 0.97
"""The limiter's (``actors.ratelimit.DEFAULT_HEADROOM``): every bucket at 97% of Telegram's rate."""


def is_group_chat(chat_id: int | str) -> bool:
    """Groups, supergroups and channels have negative ids (or an ``@name``)."""
    return isinstance(chat_id, str) or chat_id < 0


class LocalPacer:
    """Send times from local token buckets while the shared limiter is away.

    The limiter's arithmetic on ``core.flood`` buckets: global at ``headroom`` times the bot's
    rate with a burst of one (evenly spaced sends), per chat and per group at ``headroom``
    times Telegram's rate, evenly spaced too (no bursts). Every bucket starts
    empty at the pacer's creation. :meth:`reserve` returns, per request, the delay from now
    after which it may be sent, and takes its tokens at that moment.
    """

    def __init__(
        self, limits: FloodLimits, *, headroom: float = HEADROOM, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.chat_rate = limits.chat_rate * headroom
        self.chat_burst = 1.0  # evenly spaced, as the limiter's (no burst: see actors.ratelimit)
        self.group_rate = limits.group_rate_per_min / 60.0 * headroom
        self.group_burst = 1.0
        self._global = self._drained(limits.global_rate * headroom, 1.0)
        self._chats: dict[Hashable, TokenBucket] = {}
        self._groups: dict[Hashable, TokenBucket] = {}
        self.reserved = 0

    def _drained(self, rate: float, burst: float) -> TokenBucket:
        bucket = TokenBucket(rate, burst, now=self.started)
        bucket.tokens = 0.0
        return bucket

    def _bucket(
        self, table: dict[Hashable, TokenBucket], key: Hashable, rate: float, burst: float
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = self._drained(rate, burst)
        return bucket

    @staticmethod
    def _earliest(bucket: TokenBucket, t: float) -> float:
        """The first moment at or after ``t`` (and its last reservation) with a whole token."""
        at = t if bucket.stamp is None else max(t, bucket.stamp)
        return at + bucket.wait(at)

    def reserve(self, requests: Sequence[tuple[int | str, bool]]) -> list[float]:
        now = self.clock()
        if len(self._chats) > 4096:
            self._prune(now)
        out: list[float] = []
        for chat_id, is_group in requests:
            buckets = [self._global, self._bucket(self._chats, chat_id, self.chat_rate, self.chat_burst)]
            if is_group:
                buckets.append(self._bucket(self._groups, chat_id, self.group_rate, self.group_burst))
            t = now
            while True:  # a moment every bucket has a token at (each bucket only moves forward)
                later = max(self._earliest(b, t) for b in buckets)
                if later <= t + 1e-9:
                    break
                t = later
            for bucket in buckets:
                bucket.take(t)
            out.append(max(0.0, t - now))
        self.reserved += len(out)
        return out

    def _prune(self, now: float) -> None:
        for table in (self._chats, self._groups):
            for key in [k for k, b in table.items() if b.is_full(now)]:
                del table[key]


class PacedSends(BaseRequestMiddleware):
    """``sendMessage`` waits for its slot: from the shared limiter, else from a :class:`LocalPacer`."""

    def __init__(
        self,
        reserve: Reserve,
        *,
        limits: FloodLimits | None = None,
        timeout_s: float = 2.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reserve = reserve
        self.limits = limits or FloodLimits.telegram()
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self.local: LocalPacer | None = None
        self._ask_again_at = -math.inf
        self.waited = 0
        self.limited = 0
        """Replies paced by the shared limiter."""
        self.local_paced = 0
        """Replies paced by the local buckets (the limiter did not answer)."""
        self.limiter_errors = 0

    async def slot(self, chat_id: int | str) -> float:
        """Seconds from now after which a message to ``chat_id`` may go (its slot is taken)."""
        request = [(chat_id, is_group_chat(chat_id))]
        if self.clock() >= self._ask_again_at:
            try:
                delays = await asyncio.wait_for(self.reserve(request), self.timeout_s)
                delay = float(delays[0])
            except Exception as exc:  # restarting, killed, unreachable, slow: pace locally
                self.limiter_errors += 1
                self._ask_again_at = self.clock() + self.retry_s
                if self.local is None:
                    log.warning("pacing: no slot from the rate limiter (%r); pacing replies locally", exc)
            else:
                self.limited += 1
                if self.local is not None:
                    log.info("pacing: the rate limiter answers again")
                    self.local = None
                return max(0.0, delay)
        if self.local is None:
            self.local = LocalPacer(self.limits, clock=self.clock)
        self.local_paced += 1
        return self.local.reserve(request)[0]

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, SendMessage):
            delay = await self.slot(method.chat_id)
            if delay > 0:
                self.waited += 1
                await asyncio.sleep(delay)
        return await make_request(bot, method)
