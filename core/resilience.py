"""Retry policy for exchange calls: exponential backoff with jitter, and a circuit breaker.

Pure code: the caller injects ``now`` (monotonic seconds) and the random draw, so
every decision is reproducible in a test. Adapters (``CcxtMarketSource``) own the
sleeping and the calling.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff: ``base_s * factor**attempt`` capped at ``cap_s``, then jittered.

    ``jitter`` is the fraction of the delay that is randomised: with 0.5 the delay
    is uniformly drawn in ``[d/2, d]`` ("equal jitter"), so concurrent clients spread
    out while a retry never happens immediately.
    """

    base_s: float = 0.5
    cap_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s <= 0:
            raise ValueError("backoff base_s and cap_s must be positive")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (0 = first retry)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Avoid float overflow on absurd attempt counts: past the cap nothing changes.
        delay = self.base_s
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.cap_s:
                return self.cap_s
        return min(delay, self.cap_s)

    def delay(self, attempt: int, rand: float) -> float:
        """Delay in seconds before retry ``attempt``; ``rand`` is a uniform draw in [0, 1)."""
        if not 0 <= rand <= 1:
            raise ValueError("rand must be within [0, 1]")
        ceiling = self.ceiling(attempt)
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * rand


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures, for ``reset_after_s``.

    After that it is half-open: one trial call is allowed at a time. Its success
    closes the breaker; its failure opens it again for another ``reset_after_s``.
    """

    def __init__(self, failure_threshold: int, reset_after_s: float) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_after_s < 0:
            raise ValueError("reset_after_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0
        self._probe_in_flight = False

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """Whether a call may go out now. In half-open state this claims the single probe."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until a call may be attempted again (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.reset_after_s - now)

    def record_success(self, now: float) -> None:
        del now  # part of the signature for symmetry and future use (metrics)
        self.consecutive_failures = 0
        self.opened_at = None
        self._probe_in_flight = False

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or (self.opened_at is None and self.consecutive_failures >= self.failure_threshold):
            self.opened_at = now
            self.times_opened += 1
        elif self.opened_at is not None and self.state(now) is BreakerState.HALF_OPEN:
            # A failure reported in half-open state without the probe (a call that
            # started before the breaker opened): re-open the window.
            self.opened_at = now
            self.times_opened += 1
