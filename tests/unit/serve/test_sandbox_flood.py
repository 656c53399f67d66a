"""The sandbox's own flood windows (``serve.standins.sandbox.flood``): Telegram's documented
limits as sliding windows, independent of the delivery limiter's token buckets — so that the
limiter's pacing is checked against them, not against itself."""

from __future__ import annotations

import pytest

from actors.ratelimit import RateLimiter
from core.flood import FloodLimits, TokenBucket
from serve.standins.sandbox.flood import SandboxFlood, SandboxLimits, Window


def test_window_holds_limit_events_in_any_span() -> None:
    w = Window(3, 3.0)
    for t in (0.0, 0.5, 1.0):
        assert w.wait(t) == 0
        w.add(t)
    assert w.wait(1.5) == pytest.approx(1.5)  # the event at 0 leaves at 3.0
    assert w.wait(3.0) == 0  # exactly a span later it is out
    with pytest.raises(ValueError, match="limit >= 1"):
        Window(0, 1.0)


def test_refused_message_counts_nowhere() -> None:
    flood = SandboxFlood(SandboxLimits(global_rate=30))
    for _i in range(3):
        assert flood.send(0.0, 7) is None
    refusal = flood.send(0.1, 7)
    assert refusal is not None and refusal.scope == "chat" and refusal.retry_after == 3
    # the refused one took no global room: 27 other chats still fit in this second
    assert all(flood.send(0.2, 100 + i) is None for i in range(27))
    last = flood.send(0.3, 200)
    assert last is not None and last.scope == "global" and last.retry_after == 1


def test_group_gets_twenty_a_minute_and_its_chat_window_too() -> None:
    flood = SandboxFlood()
    group = -100_123
    sent = [t for t in range(120) if flood.send(float(t), group, is_group=True) is None]
    assert sent == [*range(20), *range(60, 80)]
    burst = SandboxFlood()
    assert [burst.send(0.0, group, is_group=True) is None for _ in range(4)] == [True] * 3 + [False]


def test_fractional_and_paid_rates() -> None:
    slow = SandboxFlood(SandboxLimits(global_rate=2.5))  # 2 in any 0.8 s
    assert [slow.send(0.0, i) is None for i in range(3)] == [True, True, False]
    assert slow.send(0.8, 9) is None
    paid = SandboxFlood(SandboxLimits(global_rate=1000))
    assert sum(paid.send(0.0, i) is None for i in range(1001)) == 1000


def test_prune_forgets_only_idle_chats() -> None:
    flood = SandboxFlood()
    flood.send(0.0, 1)
    flood.send(2.0, 2)
    flood.prune(4.0)
    assert flood.tracked_chats == 1  # chat 1's send is out of its 3 s window; chat 2's is not


def _simulate(reserve_times: list[float], chat: int, flood: SandboxFlood) -> int:
    return sum(flood.send(t, chat) is not None for t in reserve_times)


def test_a_bursting_sender_is_caught() -> None:
    """A token bucket with burst 2 at 0.97/s per chat (the limiter's arithmetic before these
    windows) sends 4 messages to one chat within 3 s: the sandbox answers 429."""
    bucket = TokenBucket(0.97, 2.0)
    times, t = [], 0.0
    while len(times) < 6:
        wait = bucket.wait(t)
        t += wait
        bucket.take(t)
        times.append(t)
    assert _simulate(times, 42, SandboxFlood()) > 0


@pytest.mark.parametrize(
    ("private", "groups", "expected_per_s"),
    [
        (5, 2, 5 * 0.96 + 2 * 0.96 / 3),  # few chats: the per-chat and per-group limits bind
        (200, 20, 0.96 * 30),  # many chats: the global limit binds
    ],
)
def test_the_limiters_pacing_never_meets_a_429(private: int, groups: int, expected_per_s: float) -> None:
    """The delivery limiter's reservations played against the sandbox's windows at the
    reserved moments: no refusal, and the binding limit is nearly used."""
    clock = [0.0]
    limiter = RateLimiter(FloodLimits.telegram(global_rate=30), clock=lambda: clock[0])
    flood = SandboxFlood(SandboxLimits(global_rate=30))
    chats = [(c, False) for c in range(1, private + 1)] + [(-100_000 - g, True) for g in range(groups)]
    sends: list[tuple[float, int, bool]] = []
    busy_until: dict[int, float] = {}
    for step in range(400):  # every 50 ms each idle chat asks for its next message's slot
        clock[0] = step * 0.05
        idle = [(c, g) for c, g in chats if busy_until.get(c, -1.0) <= clock[0]]
        for (c, g), delay in zip(idle, limiter.reserve(idle), strict=True):
            sends.append((clock[0] + delay, c, g))
            busy_until[c] = clock[0] + delay
    sends.sort()
    refused = [s for s in sends if flood.send(s[0], s[1], is_group=s[2]) is not None]
    assert refused == []
    in_window = sum(1 for t, _c, _g in sends if 2.0 <= t < 17.0)
    assert in_window >= expected_per_s * 15
