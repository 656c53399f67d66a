"""Reply pacing without a limiter: the local buckets, and when PacedSends falls back to them."""

from __future__ import annotations

import asyncio
import itertools

from bot.pacing import HEADROOM, LocalPacer, PacedSends
from core.flood import FloodLimits
from serve.standins.sandbox.flood import SandboxFlood, SandboxLimits


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def test_local_pacer_starts_drained_and_spaces_one_chat_under_telegrams_limit() -> None:
    clock = Clock()
    pacer = LocalPacer(FloodLimits.telegram(), clock=clock)
    delays = pacer.reserve([(42, False)] * 5)
    chat_interval = 1 / HEADROOM
    assert delays[0] >= chat_interval - 1e-9  # drained at the start: a full interval first
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert all(g >= chat_interval - 1e-9 for g in gaps), gaps
    # Telegram's limits, as the sandbox's windows check them, accept every one of these sends
    flood = SandboxFlood()
    assert all(flood.send(clock.t + d, 42) is None for d in delays)


def test_local_pacer_keeps_the_global_rate_and_group_limits() -> None:
    clock = Clock()
    limits = FloodLimits.telegram(global_rate=10.0)
    pacer = LocalPacer(limits, clock=clock)
    delays = pacer.reserve([(chat, False) for chat in range(1, 41)])  # 40 chats at once
    assert max(delays) >= 40 / (10 * HEADROOM) - 1e-6  # no faster than the global rate
    group = pacer.reserve([(-100, True)] * 6)
    flood = SandboxFlood(SandboxLimits(global_rate=10.0))
    times = sorted([(clock.t + d, c, False) for c, d in zip(range(1, 41), delays, strict=True)])
    times += [(clock.t + d, -100, True) for d in group]
    assert all(flood.send(t, c, is_group=g) is None for t, c, g in sorted(times, key=lambda x: x[0]))


async def test_paced_sends_falls_back_when_the_limiter_hangs_and_asks_it_again_later() -> None:
    clock = Clock()
    answers: list[str] = []
    hang = asyncio.Event()

    async def reserve(requests: list[tuple[int | str, bool]]) -> list[float]:
        answers.append("asked")
        if not hang.is_set():
            await asyncio.sleep(3600)  # unreachable: never answers
        return [0.25] * len(requests)

    pacing = PacedSends(reserve, timeout_s=0.05, retry_s=5.0, clock=clock)
    first = await pacing.slot(7)
    assert pacing.local_paced == 1 and pacing.limiter_errors == 1
    assert first >= 1 / HEADROOM - 1e-9  # never "unpaced": the local bucket's slot
    second = await pacing.slot(7)  # within retry_s: not asked again, paced locally
    assert len(answers) == 1 and second >= first + 1 / HEADROOM - 1e-9
    hang.set()
    clock.t += 6.0
    assert await pacing.slot(7) == 0.25  # the limiter answers again: its slot, local dropped
    assert pacing.limited == 1 and pacing.local is None
