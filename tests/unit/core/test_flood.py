"""Flood-limit arithmetic with an injected clock: milliseconds, no sleeping."""

from __future__ import annotations

import itertools

import pytest

from core.flood import (
    PAID_BROADCAST_RATE,
    FloodLimits,
    FloodPolicy,
    FloodScope,
    TokenBucket,
    retry_after_seconds,
)


def test_bucket_starts_full_and_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.try_take(10.0)[0] for _ in range(3)] == [True, True, True]
    ok, wait = bucket.try_take(10.0)
    assert not ok and wait == pytest.approx(0.5)
    assert bucket.try_take(10.49) == (False, pytest.approx(0.01))
    assert bucket.try_take(10.5) == (True, 0.0)
    # never more than burst, however long we wait
    assert bucket.available(1000.0) == 3.0


def test_bucket_refusal_takes_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.try_take(0.0)[0]
    for t in (0.1, 0.2, 0.3):
        assert not bucket.try_take(t)[0]
    assert bucket.try_take(1.0)[0]


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)


@pytest.mark.parametrize(("wait", "expected"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.0001, 2), (13.2, 14)])
def test_retry_after_is_whole_seconds_at_least_one(wait: float, expected: int) -> None:
    assert retry_after_seconds(wait) == expected


def test_per_chat_one_per_second_after_a_short_burst() -> None:
    policy = FloodPolicy(FloodLimits(chat_burst=3))
    assert all(policy.try_send(0.0, 42).ok for _ in range(3))
    refused = policy.try_send(0.0, 42)
    assert not refused.ok and refused.scope is FloodScope.CHAT
    assert refused.wait_s == pytest.approx(1.0) and refused.retry_after == 1
    # other chats are not affected
    assert policy.try_send(0.0, 43).ok
    # sustained: exactly one a second
    sent = sum(policy.try_send(1.0 + i * 0.25, 42).ok for i in range(40))
    assert sent == 10


def test_global_rate_counts_all_chats() -> None:
    policy = FloodPolicy(FloodLimits(global_rate=30))
    results = [policy.try_send(0.0, chat).ok for chat in range(31)]
    assert results.count(True) == 30 and not results[-1]
    refused = policy.try_send(0.0, 999)
    assert refused.scope is FloodScope.GLOBAL and refused.wait_s == pytest.approx(1 / 30)
    # a sender at 95% of the rate, one message per fresh chat, is never refused
    t, sent = 1.0, 0
    for chat in range(1000, 1000 + 30 * 60):
        assert policy.try_send(t, chat).ok
        sent += 1
        t += 1 / (30 * 0.95)
    assert sent == 1800


def test_paid_broadcast_raises_global_rate() -> None:
    limits = FloodLimits.telegram(paid_broadcast=True)
    assert limits.global_rate == PAID_BROADCAST_RATE
    policy = FloodPolicy(limits)
    assert sum(policy.try_send(0.0, chat).ok for chat in range(1001)) == 1000


def test_group_twenty_per_minute() -> None:
    policy = FloodPolicy(FloodLimits(group_burst=5))
    group = -100123
    # one a second (the per-chat limit) drains the group burst, then 1 per 3 s
    ok_times = [t for t in range(60) if policy.try_send(float(t), group, is_group=True).ok]
    assert ok_times[:5] == [0, 1, 2, 3, 4]
    gaps = {b - a for a, b in itertools.pairwise(ok_times[6:])}
    assert gaps == {3}
    refused = policy.check(float(ok_times[-1]), group, is_group=True)
    assert refused.scope is FloodScope.GROUP and 1 <= refused.retry_after <= 3
    assert len([t for t in ok_times if t >= 30]) == 10  # 20/min sustained
    # the same chat id as a private chat would only see the per-chat limit
    assert sum(FloodPolicy().try_send(float(t), group).ok for t in range(60)) == 60


def test_refused_by_one_bucket_takes_from_none() -> None:
    policy = FloodPolicy(FloodLimits(global_rate=2, chat_burst=1))
    assert policy.try_send(0.0, 1).ok
    assert not policy.try_send(0.0, 1).ok  # chat refuses; global must keep its token
    assert policy.try_send(0.0, 2).ok
    assert not policy.try_send(0.0, 3).ok


def test_prune_forgets_refilled_buckets() -> None:
    policy = FloodPolicy()
    for chat in range(10):
        policy.try_send(0.0, chat)
    assert policy.tracked_chats == 10
    policy.prune(100.0)
    assert policy.tracked_chats == 0
