"""Backoff policy and circuit breaker: pure, with injected time and randomness."""

from __future__ import annotations

import pytest

from core.resilience import BackoffPolicy, BreakerState, CircuitBreaker


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = BackoffPolicy(base_s=0.5, cap_s=10.0, factor=2.0, jitter=0.5)
    assert [policy.ceiling(a) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.ceiling(10_000) == 10.0  # no overflow on absurd attempt counts


def test_backoff_jitter_stays_within_bounds() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=60.0, jitter=0.5)
    assert policy.delay(3, 0.0) == 4.0  # lower bound: half the ceiling
    assert policy.delay(3, 1.0) == 8.0
    assert policy.delay(3, 0.5) == 6.0
    no_jitter = BackoffPolicy(base_s=1.0, cap_s=60.0, jitter=0.0)
    assert no_jitter.delay(2, 0.9) == 4.0


@pytest.mark.parametrize("kwargs", [{"base_s": 0}, {"cap_s": -1}, {"factor": 0.5}, {"jitter": 1.5}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_backoff_rejects_bad_draws() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy().delay(0, 2.0)
    with pytest.raises(ValueError):
        BackoffPolicy().ceiling(-1)


def test_breaker_opens_after_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=30.0)
    for t in (0.0, 1.0):
        assert breaker.allow(t)
        breaker.record_failure(t)
        assert breaker.state(t) is BreakerState.CLOSED
    breaker.record_failure(2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert not breaker.allow(10.0)
    assert breaker.retry_in(10.0) == pytest.approx(22.0)
    assert breaker.times_opened == 1


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=5.0)
    breaker.record_failure(0.0)
    breaker.record_success(0.5)
    breaker.record_failure(1.0)
    assert breaker.state(1.0) is BreakerState.CLOSED


def test_half_open_lets_one_probe_through_and_success_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=30.0)
    breaker.record_failure(0.0)
    assert breaker.state(29.9) is BreakerState.OPEN
    assert breaker.state(30.0) is BreakerState.HALF_OPEN
    assert breaker.allow(30.0)  # the probe
    assert not breaker.allow(30.1)  # only one at a time
    breaker.record_success(30.2)
    assert breaker.state(30.2) is BreakerState.CLOSED
    assert breaker.allow(30.3) and breaker.allow(30.3)
    assert breaker.retry_in(30.3) == 0.0


def test_failed_probe_reopens_for_a_full_window() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=10.0)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.allow(10.0)
    breaker.record_failure(10.5)
    assert breaker.state(11.0) is BreakerState.OPEN
    assert breaker.retry_in(11.0) == pytest.approx(9.5)
    assert breaker.times_opened == 2
    assert breaker.state(20.5) is BreakerState.HALF_OPEN


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1.0)
