"""The rate limiter with a fake clock, checked against the sandbox's own windows.

Every simulation hands the limiter's send times (plus network jitter) to the sandbox's
``SandboxFlood`` with Telegram's limits (sliding windows, not the limiter's token buckets),
exactly what the sandbox runs, and asserts it never refuses one while the limiter sustains
at least 96% of the rate.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from actors.ratelimit import SEND_LEAD_S, PoolRateLimiter, RateLimiter, configured_rate
from core.flood import PAID_BROADCAST_RATE, FloodLimits, FloodScope
from core.settings import DistributionSettings, Settings, TelegramSettings
from serve.standins.sandbox.flood import SandboxFlood, SandboxLimits


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def limiter(rate: float = 30.0, **options: object) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(FloodLimits.telegram(global_rate=rate), clock=clock, **options), clock  # type: ignore[arg-type]


def replay(sends: Sequence[tuple[float, int | str, bool]], rate: float) -> list[tuple[float, str]]:
    """Feed arrivals to the sandbox's windows in time order: the refusals."""
    flood = SandboxFlood(SandboxLimits(global_rate=rate))
    refused = []
    for at, chat, is_group in sorted(sends, key=lambda s: s[0]):
        refusal = flood.send(at, chat, is_group=is_group)
        if refusal is not None:
            refused.append((at, refusal.scope))
    return refused


# -- spacing ---------------------------------------------------------------------------------------


def test_global_slots_are_evenly_spaced_under_the_rate() -> None:
    rl, _ = limiter(30.0)
    delays = rl.reserve([(chat, False) for chat in range(90)])
    step = 1 / (30 * 0.97)
    assert delays[0] == 0.0
    assert delays == pytest.approx([i * step for i in range(90)])
    # 90 messages take ~3.1 s, not 3 s: ≥ 95% of the rate, and never faster than it
    assert 0.95 * 30 <= 89 / delays[-1] < 30


def test_a_lead_keeps_every_slot_that_far_ahead_and_the_spacing_as_it_was() -> None:
    """The queue shards' limiter (``SEND_LEAD_S``): an idle limiter's first slot is not "now",
    which the sender would miss by its Redis mark, crowding the second after it."""
    rl, clock = limiter(30.0, lead_s=SEND_LEAD_S)
    delays = rl.reserve([(chat, False) for chat in range(60)])
    step = 1 / (30 * 0.97)
    # slots stay on the limiter's grid: the first one on it at least the lead away
    assert SEND_LEAD_S <= delays[0] < SEND_LEAD_S + step
    assert [b - a for a, b in itertools.pairwise(delays)] == pytest.approx([step] * 59)
    assert replay([(clock.t + d, chat, False) for chat, d in enumerate(delays)], 30.0) == []
    clock.t += 10.0  # idle again: the next slot is the lead away, not sooner
    (idle,) = rl.reserve([(99, False)])
    assert SEND_LEAD_S <= idle < SEND_LEAD_S + step


def test_one_chat_gets_one_message_every_interval_no_burst() -> None:
    rl, _ = limiter(30.0)
    delays = rl.reserve([(42, False)] * 6)
    assert delays[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert all(g == pytest.approx(1 / 0.97, rel=1e-6) for g in gaps)
    # the sandbox's window (3 in any 3 s) takes them even when every other one arrives 80 ms late
    late = [1000.0 + d + (0.08 if i % 2 == 0 else 0.0) for i, d in enumerate(delays)]
    assert replay([(t, 42, False) for t in late], 30.0) == []


def test_a_late_send_pushes_the_chats_next_slot_back() -> None:
    rl, clock = limiter(30.0)
    (_first,) = rl.reserve([(42, False)])
    clock.t += 1.5  # its send ended 1.2 s late: at 1000.0 + 1.2
    (second,) = rl.reserve([(42, False, 0.3)])
    assert 1001.2 + 1 / 0.97 - 1e-9 <= clock.t + second <= 1001.2 + 1 / 0.97 + 1 / 29.1  # + a global slot
    (g1,) = rl.reserve([(-5, True, None)])
    clock.t += 1.0
    (g2,) = rl.reserve([(-5, True, 0.1)])  # the group's send ended 0.1 s ago
    assert clock.t + g2 >= clock.t - 0.1 + 3 / 0.97 - 1e-9 and g1 == pytest.approx(0.0, abs=0.1)


def test_a_waiting_chat_does_not_hold_up_other_chats() -> None:
    rl, _ = limiter(30.0)
    busy = rl.reserve([(1, False)] * 4)
    assert busy[-1] > 2.0
    others = rl.reserve([(chat, False) for chat in range(100, 110)])
    assert max(others) < 0.5  # slots between the busy chat's messages are handed out


def test_groups_get_twenty_a_minute() -> None:
    rl, clock = limiter(30.0)
    delays = rl.reserve([(-100123, True)] * 30)
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert delays[0] == 0.0 and all(g == pytest.approx(3 / 0.97, rel=1e-6) for g in gaps)
    in_first_minute = sum(1 for d in delays if d < 60.0)
    assert in_first_minute == 20
    assert replay([(clock.t + d, -100123, True) for d in delays], 30.0) == []


# -- simulated traffic against the sandbox's policy ------------------------------------------------


def simulate(
    rl: RateLimiter,
    clock: FakeClock,
    *,
    rate: float,
    seconds: float,
    shards: int = 8,
    batch: int,
    tick: float,
    chats: int,
    group_share: float = 0.0,
    jitter: float = 0.02,
    seed: int = 7,
) -> tuple[list[tuple[float, int, bool]], float]:
    """Shards reserving batches every ``tick`` (each only as much as it can send soon), as
    ``actors.queues`` does: one send in flight per chat, the next asked for with ``sent_ago``
    once the last one ended. Every send arrives after its delay plus 0..``jitter`` s."""
    rng = random.Random(seed)
    sends: list[tuple[float, int, bool]] = []
    arrived: dict[int, float] = {}  # chat -> when its last send ended
    horizon = [clock.t] * shards  # a shard does not reserve beyond ~1 s of backlog
    start = clock.t
    while clock.t < start + seconds:
        for shard in range(shards):
            if horizon[shard] - clock.t > 1.0:
                continue
            reqs: list[tuple[int, bool, float | None]] = []
            for _ in range(batch):
                chat = rng.randrange(chats) * shards + shard  # users sharded by id
                is_group = rng.random() < group_share
                chat_id = -chat - 1 if is_group else chat + 1
                ended = arrived.get(chat_id)
                if ended is not None and ended > clock.t:
                    continue  # still in flight
                if any(r[0] == chat_id for r in reqs):
                    continue
                reqs.append((chat_id, is_group, None if ended is None else clock.t - ended))
            if not reqs:
                continue
            delays = rl.reserve(reqs)
            for (chat_id, is_group, _ago), delay in zip(reqs, delays, strict=True):
                at = clock.t + delay + rng.uniform(0.0, jitter)
                arrived[chat_id] = at
                sends.append((at, chat_id, is_group))
            horizon[shard] = clock.t + max(delays)
        clock.t += tick
    return sends, start


def sustained(sends: Sequence[tuple[float, int, bool]], start: float, seconds: float) -> float:
    """Messages per second that arrived inside [start + 5, start + seconds] (steady state)."""
    n = sum(1 for at, _, _ in sends if start + 5.0 <= at < start + seconds)
    return n / (seconds - 5.0)


def test_sixty_seconds_at_thirty_a_second_never_429_and_at_least_96_percent() -> None:
    rl, clock = limiter(30.0)
    sends, start = simulate(rl, clock, rate=30.0, seconds=60.0, batch=8, tick=0.1, chats=50, group_share=0.05)
    assert replay(sends, 30.0) == []
    assert sustained(sends, start, 60.0) >= 0.96 * 30.0


def test_paid_broadcast_a_thousand_a_second_for_sixty_seconds() -> None:
    settings = Settings(distribution=DistributionSettings(paid_broadcast=True))
    assert configured_rate(settings) == PAID_BROADCAST_RATE
    clock = FakeClock()
    rl = RateLimiter.from_settings(settings, clock=clock)
    sends, start = simulate(rl, clock, rate=1000.0, seconds=60.0, batch=130, tick=0.1, chats=20_000)
    assert replay(sends, 1000.0) == []
    assert sustained(sends, start, 60.0) >= 0.96 * 1000.0
    stats = rl.stats()
    assert stats["reserved"] == len(sends) and stats["throttled"] == {"chat": 0, "global": 0}


def test_hot_chats_and_groups_with_large_jitter_never_429() -> None:
    """Per chat and per group the spacing counts from when the last send ended (``sent_ago``):
    however late the network delivers, a chat's window never overflows."""
    rl, clock = limiter(30.0)
    sends, _ = simulate(
        rl, clock, rate=30.0, seconds=30.0, shards=2, batch=10, tick=0.2, chats=3, group_share=0.3, jitter=0.9
    )
    assert len(sends) > 100 and replay(sends, 30.0) == []


def test_settings_rate() -> None:
    paid = DistributionSettings(paid_broadcast=True)
    assert configured_rate(Settings()) == 30.0
    assert configured_rate(Settings(telegram=TelegramSettings(global_rate=25))) == 25.0
    assert configured_rate(Settings(telegram=TelegramSettings(global_rate=400), distribution=paid)) == 400
    assert configured_rate(Settings(telegram=TelegramSettings(global_rate=5000), distribution=paid)) == 1000


# -- 429s -------------------------------------------------------------------------------------------


def test_pause_one_chat_holds_only_that_chat() -> None:
    rl, clock = limiter(30.0)
    assert rl.pause(3, chat_id=7) is FloodScope.CHAT
    delays = rl.reserve([(7, False), (8, False)])
    assert delays[0] >= 3.0 and delays[1] < 0.1
    clock.t += 10
    assert rl.reserve([(7, False)]) == [0.0]
    assert rl.stats()["throttled"] == {"chat": 1, "global": 0}


def test_pause_global_holds_everyone() -> None:
    rl, clock = limiter(30.0)
    assert rl.pause(2) is FloodScope.GLOBAL
    delays = rl.reserve([(1, False), (2, False)])
    assert delays[0] >= 2.0 and delays[1] >= 2.0 and delays[1] > delays[0]
    assert rl.stats()["global_pause_s"] == pytest.approx(2.0)
    clock.t += 2.5
    assert rl.stats()["global_pause_s"] == 0.0


def test_429s_from_several_chats_escalate_to_a_global_pause() -> None:
    rl, clock = limiter(30.0)
    assert rl.pause(1, chat_id=1) is FloodScope.CHAT
    clock.t += 0.2
    assert rl.pause(1, chat_id=2) is FloodScope.GLOBAL
    assert min(rl.reserve([(3, False)])) >= 1.0
    # far apart in time they stay per chat
    clock.t += 5
    assert rl.pause(1, chat_id=4) is FloodScope.CHAT


def test_after_a_chat_pause_the_chat_restarts_with_one_token() -> None:
    rl, _ = limiter(30.0)
    rl.pause(2, chat_id=9)
    delays = rl.reserve([(9, False)] * 3)
    assert delays[0] == pytest.approx(2.0, abs=1 / 29.1)  # the first global slot from then
    assert delays[1] - delays[0] == pytest.approx(1 / 0.97, rel=1e-3)  # no burst right after a 429


# -- restarts and memory -----------------------------------------------------------------------------


def test_a_restarted_limiter_starts_conservative() -> None:
    old, clock = limiter(30.0)
    chat_sends = [(clock.t + d, 5, False) for d in old.reserve([(5, False)] * 3)]
    clock.t += chat_sends[-1][0] - clock.t  # killed right after its last send
    new = RateLimiter(FloodLimits.telegram(), clock=clock, conservative=True)
    delays = new.reserve([(5, False)] * 3 + [(6, False)])
    assert delays[0] >= 1 / 0.97 - 1e-9  # the chat's bucket is assumed empty
    assert delays[-1] >= 1 / 0.97 - 1e-9  # every chat's, in the first seconds
    sends = chat_sends + [
        (clock.t + d, c, False) for d, (c, _) in zip(delays, [(5, 0)] * 3 + [(6, 0)], strict=True)
    ]
    assert replay(sends, 30.0) == []
    clock.t += 10  # after the warm-up, exact again
    assert new.reserve([(7, False), (7, False)])[0] == 0.0


def test_old_reservations_and_idle_chats_are_forgotten() -> None:
    rl, clock = limiter(1000.0)
    for _ in range(50):
        assert max(rl.reserve([(chat, False) for chat in range(200)])) < 0.25
        clock.t += 1.1
    assert rl.stats()["tracked_chats"] == 200
    clock.t += 10
    rl._prune(clock.t)
    assert rl.stats()["tracked_chats"] == 0 and len(rl._next) == 0
    first, second = rl.reserve([(1, False)] * 2)  # fresh again: now, then one chat interval later
    assert first < 1 / 970 and second - first == pytest.approx(1 / 0.97)


# -- a pool of bots: one budget per bot --------------------------------------------------------


def pool_limiter(bots: Sequence[int], rate: float = 30.0) -> tuple[PoolRateLimiter, FakeClock]:
    clock = FakeClock()
    limits = FloodLimits.telegram(global_rate=rate)
    return PoolRateLimiter(lambda: RateLimiter(limits, clock=clock), bots), clock


def test_a_pool_keeps_one_budget_per_bot_so_capacity_adds_up() -> None:
    rl, _ = pool_limiter([1, 2, 3])
    requests = [(chat, False, None, 1 + chat % 3) for chat in range(90)]
    delays = rl.reserve(requests)
    step = 1 / (30 * 0.97)
    # each bot's 30 messages at its own even spacing, all three bots at once: 90 in ~1 s; the
    # bots' slots interleaved (bot k's a k-th of a step later), so the pool's sends are even
    for k, bot in enumerate((1, 2, 3)):
        mine = [d for (_, _, _, b), d in zip(requests, delays, strict=True) if b == bot]
        assert mine == pytest.approx([(i + k / 3) * step for i in range(30)])
    assert max(delays) == pytest.approx((29 + 2 / 3) * step)
    assert sorted(delays) == pytest.approx([i * step / 3 for i in range(90)])
    # and what each bot sends passes Telegram's windows of that bot
    for bot in (1, 2, 3):
        sends = [(d, c, False) for (c, _, _, b), d in zip(requests, delays, strict=True) if b == bot]
        assert replay(sends, 30.0) == []


def test_a_chat_is_paced_per_bot_and_a_request_without_a_bot_is_the_primarys() -> None:
    rl, _ = pool_limiter([1, 2])
    # the same chat through two bots: two buckets (Telegram counts a chat per bot)
    step = 1 / (30 * 0.97)
    # not a second apart (one bucket would say): each bot's first slot
    assert rl.reserve([(5, False, None, 1), (5, False, None, 2)]) == [0.0, pytest.approx(step / 2)]
    (again,) = rl.reserve([(5, False)])  # no bot: the primary, whose bucket for chat 5 is spent
    assert again == pytest.approx(1 / 0.97)
    # bot 2's second slot (its grid half a step after the primary's)
    assert rl.reserve([(6, False)], bot=2) == [pytest.approx(1.5 * step)]


def test_a_429_from_one_bot_holds_back_only_that_bot() -> None:
    rl, _ = pool_limiter([1, 2])
    assert rl.pause(5.0, None, bot=2) is FloodScope.GLOBAL
    (one,) = rl.reserve([(7, False)], bot=1)
    (two,) = rl.reserve([(8, False)], bot=2)
    assert one == 0.0 and 5.0 <= two < 5.0 + 1 / (30 * 0.97)  # the next slot of bot 2 after the pause
    stats = rl.stats()
    assert stats["reserved"] == 2 and stats["throttled"]["global"] == 1
    assert stats["pool_rate"] == 60.0 and set(stats["bots"]) == {"1", "2"}


def test_a_pool_of_one_is_the_single_limiter() -> None:
    rl, _ = pool_limiter([])
    assert rl.reserve([(1, False), (2, False)]) == [0.0, pytest.approx(1 / (30 * 0.97))]
    assert "bots" not in rl.stats()
    settings = Settings(telegram=TelegramSettings(tokens=["11:a", "22:b"]))
    pool = PoolRateLimiter.from_settings(settings)
    assert list(pool.bots) == [11, 22] and pool.of(None) is pool.bots[11]
