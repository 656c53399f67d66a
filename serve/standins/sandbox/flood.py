"""The sandbox's own flood limits: sliding windows over the sends it answered 200, as Telegram
documents them — and deliberately not the delivery limiter's arithmetic (``core.flood``), so
that a bug in the sender's pacing shows here as a 429 instead of being agreed with.

Telegram's published limits (Bot FAQ, "My bot is hitting limits, how do I avoid this?"):

- in one chat, avoid more than one message per second; short bursts are tolerated and
  then answered 429 — here: at most ``chat_limit`` (3) messages in any ``chat_window_s``
  (3 s), i.e. 1/s averaged over three seconds;
- in a group (group, supergroup or channel), at most 20 messages per minute — here: at
  most ``group_limit`` (20) in any 60 s, on top of the chat's own window;
- for bulk notifications, about 30 messages per second across all chats, or up to 1,000
  per second with paid broadcasts — here: at most ``global_rate`` in any 1 s.

A message passes only when every window it touches has room; then it counts in each, and a
refused message counts nowhere. The answer to a refused one is Telegram's 429 with
``retry_after`` = whole seconds until the oldest send of the fullest refusing window leaves
it (at least 1).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

PAID_BROADCAST_PER_S = 1000
"""Messages per second a bot may send with paid broadcasts."""


class Window:
    """At most ``limit`` events in any ``span_s`` seconds: the times of the last ``limit`` events."""

    __slots__ = ("limit", "span_s", "times")

    def __init__(self, limit: int, span_s: float) -> None:
        if limit < 1 or span_s <= 0:
            raise ValueError(f"a window needs limit >= 1 and span > 0, got {limit} in {span_s} s")
        self.limit = limit
        self.span_s = span_s
        self.times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more event fits (0 when it fits now)."""
        times = self.times
        while times and times[0] <= now - self.span_s:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.span_s - now

    def add(self, now: float) -> None:
        self.times.append(now)

    def idle(self, now: float) -> bool:
        """Nothing left in the window: forgetting it changes nothing."""
        return not self.times or self.times[-1] <= now - self.span_s


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """The numbers; defaults are Telegram's published limits."""

    global_rate: float = 30.0
    """Messages per second across all chats: ``max(1, floor(rate))`` of them in any
    ``that / rate`` seconds (30 in any 1 s; 2.5/s would be 2 in any 0.8 s)."""
    chat_limit: int = 3
    chat_window_s: float = 3.0
    group_limit: int = 20
    group_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    wait_s: float
    scope: str
    """``global``, ``chat`` or ``group``: the window that must wait longest."""

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait_s - 1e-9))


@dataclass(slots=True)
class SandboxFlood:
    """One bot's windows: global, per chat, per group."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    _global: Window | None = None
    _chats: dict[Hashable, Window] = field(default_factory=dict)
    _groups: dict[Hashable, Window] = field(default_factory=dict)
    _sent: int = 0

    def __post_init__(self) -> None:
        limit = max(1, math.floor(self.limits.global_rate + 1e-9))
        self._global = Window(limit, limit / self.limits.global_rate)

    def _window(self, table: dict[Hashable, Window], key: Hashable, limit: int, span_s: float) -> Window:
        window = table.get(key)
        if window is None:
            window = table[key] = Window(limit, span_s)
        return window

    def send(self, now: float, chat_id: Hashable, *, is_group: bool = False) -> Refusal | None:
        """Count a message to ``chat_id`` at ``now``, or refuse it (counting nothing)."""
        assert self._global is not None
        lim = self.limits
        windows = [
            ("global", self._global),
            ("chat", self._window(self._chats, chat_id, lim.chat_limit, lim.chat_window_s)),
        ]
        if is_group:
            windows.append(
                ("group", self._window(self._groups, chat_id, lim.group_limit, lim.group_window_s))
            )
        worst: Refusal | None = None
        for scope, window in windows:
            wait = window.wait(now)
            if wait > 0 and (worst is None or wait > worst.wait_s):
                worst = Refusal(wait, scope)
        if worst is not None:
            return worst
        for _scope, window in windows:
            window.add(now)
        self._sent += 1
        if self._sent % 4096 == 0:
            self.prune(now)
        return None

    def prune(self, now: float) -> None:
        """Forget the windows of chats that sent nothing within their span."""
        for table in (self._chats, self._groups):
            for key in [k for k, w in table.items() if w.idle(now)]:
                del table[key]

    @property
    def tracked_chats(self) -> int:
        return len(self._chats)
