"""The sender's side of Telegram's flood limits, pure: the rates, token buckets and departure
windows with an injected clock, which the delivery limiter (``actors.ratelimit``), the queue
shards and the bot's local pacer (``bot.pacing``) schedule sends with.

A `TokenBucket(rate, burst)` starts full with `burst` tokens and refills at `rate` tokens
per second up to `burst`; taking one needs a whole token. With `burst` 1 it spaces events
evenly at `rate`. A `DepartureWindow` keeps one sender's departures in any second within the
slots it was given in that second, so that a send that leaves late does not crowd a later
second. The sandbox checks senders with sliding windows of its own
(``serve/standins/sandbox/flood.py``), not with this code.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """The rates; defaults are Telegram's published limits (the sender adds no bursts)."""

    global_rate: float = 30.0
    chat_rate: float = 1.0
    group_rate_per_min: float = 20.0

    @classmethod
    def telegram(cls, *, paid_broadcast: bool = False, global_rate: float | None = None) -> FloodLimits:
        rate = global_rate if global_rate is not None else (PAID_BROADCAST_RATE if paid_broadcast else 30.0)
        return cls(global_rate=rate)


class DepartureWindow:
    """One sender's slots and departures over the last ``window_s``: a send may leave at ``t``
    only while the departures in ``(t - window_s, t]``, and the sends that left but are not on
    the wire yet, are fewer than the slots in it.

    Telegram counts a bot's messages as they arrive, in any second; the limiter hands out
    slots evenly at just under the rate. A send that leaves late lands in the second of the
    slots after its own, and sends that bunch overflow it. Kept by every sender, the rule
    bounds the departures in any window by the slots issued in it, summed over senders too,
    without asking the limiter again: a late send waits (:meth:`wait_s`) until the window
    moves on. A slot is never given up for being late, so no capacity is lost.

    A departure is counted when its bytes are written (:meth:`written`), not when the send
    was let go (:meth:`leave`): between the two a busy loop can hold requests for tens of
    milliseconds and then write them together. Counting the ones let go but not written as
    already in the window keeps the writes in any window within its slots: the last write
    of a window was let go at some ``t`` inside it, when the writes since ``t - window_s``
    plus those still to be written (itself among them) were fewer than the slots.
    """

    __slots__ = ("departures", "leaving", "slots", "window_s")

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.slots: list[float] = []
        """Slot times, sorted (they come nearly in order: inserting is cheap)."""
        self.departures: deque[float] = deque()
        """When sends were written, oldest first."""
        self.leaving = 0
        """Sends let go and not written yet."""

    def note_slots(self, times: Iterable[float]) -> None:
        for t in times:
            insort(self.slots, t)

    def _forget(self, now: float) -> None:
        horizon = now - self.window_s
        while self.departures and self.departures[0] <= horizon:
            self.departures.popleft()
        old = bisect_right(self.slots, horizon - self.window_s)  # kept a window longer for late sends
        if old > 64 or (old and old == len(self.slots)):
            del self.slots[:old]

    def slots_in_window(self, now: float) -> int:
        self._forget(now)
        return bisect_right(self.slots, now) - bisect_right(self.slots, now - self.window_s)

    def wait_s(self, now: float) -> float:
        """0 when a send may leave at ``now``; else how long until the oldest departure in the
        window leaves it (a millisecond when only sends still to be written fill it)."""
        slots = self.slots_in_window(now)  # first: it forgets the departures out of the window
        if len(self.departures) + self.leaving < slots:
            return 0.0
        if self.leaving and (not self.departures or len(self.departures) < slots):
            return 1e-3
        if not self.departures:  # no slot in the window at all
            return self.window_s
        return max(1e-3, self.departures[0] + self.window_s - now)

    def leave(self) -> None:
        """A send is let go: it counts until it is :meth:`written`."""
        self.leaving += 1

    def written(self, now: float) -> None:
        """A send let go is on the wire (or, never written, is given up: counted at ``now``)."""
        self.leaving = max(0, self.leaving - 1)
        self.depart(now)

    def depart(self, now: float) -> None:
        """A departure counted at once (``now`` is never before the last one counted)."""
        if self.departures and now < self.departures[-1]:
            now = self.departures[-1]
        self.departures.append(now)


class ClockOffset:
    """Another process's clock, read from request/answer pairs (Cristian's method): a sample
    is ``(sent, remote, received)`` with ``remote`` read by the other side between the two;
    the estimate is that of the recent sample with the shortest round trip (the least room
    for error: at most half of it).

    The limiter's slots are moments on its clock. Placed on a shard's clock by "when the
    answer came", each reservation's slots moved by that answer's wait (1-30 ms on a busy
    host): two reservations' slots then overlapped, and a second held more slots than the
    limiter gave, which the shard's departure window then allowed."""

    __slots__ = ("horizon_s", "samples")

    def __init__(self, horizon_s: float = 30.0) -> None:
        self.horizon_s = horizon_s
        self.samples: deque[tuple[float, float, float]] = deque()
        """``(received, round trip, offset)``, oldest first, round trips rising: a sample with a
        longer round trip than a later one can never be the best again, and is dropped (the
        best is the first, in O(1): a shard notes a sample per limiter call, hundreds a second)."""

    def note(self, sent: float, remote: float, received: float) -> float:
        """Add a sample; the offset to add to a local moment to read it on the remote clock."""
        rtt = max(0.0, received - sent)
        samples = self.samples
        while samples and samples[-1][1] > rtt:
            samples.pop()
        samples.append((received, rtt, remote - (sent + received) / 2))
        while samples[0][0] < received - self.horizon_s:
            samples.popleft()
        return self.offset()

    def offset(self) -> float:
        return self.samples[0][2] if self.samples else 0.0
