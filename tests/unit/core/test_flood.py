"""Flood-limit arithmetic with an injected clock: milliseconds, no sleeping."""

from __future__ import annotations

import itertools

import pytest

from core.flood import PAID_BROADCAST_RATE, FloodLimits, TokenBucket


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


def test_paid_broadcast_raises_the_global_rate() -> None:
    assert FloodLimits.telegram().global_rate == 30
    assert FloodLimits.telegram(paid_broadcast=True).global_rate == PAID_BROADCAST_RATE
    assert FloodLimits.telegram(paid_broadcast=True, global_rate=400).global_rate == 400


def test_a_bucket_of_one_spaces_events_evenly() -> None:
    bucket = TokenBucket(rate=0.5, burst=1)
    times, t = [], 0.0
    for _ in range(4):
        t += bucket.wait(t)
        bucket.take(t)
        times.append(t)
    assert [b - a for a, b in itertools.pairwise(times)] == [2.0, 2.0, 2.0]
