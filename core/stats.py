"""Statistics of an experiment: an engagement rate per variant and the difference between
two variants, with confidence intervals and a p-value, where the unit of randomisation is
the user.

The rate of a variant is a ratio: engaged pushes over pushes sent, summed over its users.
Pushes of one user are not independent (one user presses often, another never), so the
usual binomial standard error, which counts every push as a separate draw, is too small
and an A/A split would look "significant" far more often than 5% of the time. Here the
variance comes from the users instead (the delta method for a ratio of per-user sums, also
called the cluster-robust or linearised variance):

    R = Σ eᵢ / Σ sᵢ,   Var(R) ≈ n / (n - 1) · Σ (eᵢ - R·sᵢ)² / (Σ sᵢ)²

with ``eᵢ`` the engaged pushes and ``sᵢ`` the pushes sent to user ``i`` of ``n``. Two
variants' users are disjoint, so the variance of the difference is the sum of the two;
the interval and the two-sided p-value are normal (the per-variant samples of an
experiment are users by the hundreds; with a few dozen the report says it is too early).

Pure: numbers in, numbers out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
"""The two-sided 95% normal quantile."""

MIN_USERS = 30
"""Fewer users than this in a variant: its verdict says the sample is too small."""


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def two_sided_p(z: float) -> float:
    """The two-sided p-value of a standard normal statistic ``z``."""
    return min(1.0, 2.0 * normal_cdf(-abs(z)))


@dataclass(frozen=True, slots=True)
class RatioEstimate:
    """A ratio of per-user sums (engaged / sent) with its user-level standard error."""

    users: int
    numerator: float
    denominator: float
    rate: float | None
    """``numerator / denominator`` (None: nothing sent)."""
    se: float | None
    """Its standard error (None: fewer than two users)."""

    def interval(self, z: float = Z95) -> tuple[float, float] | None:
        """The ``rate ± z·se`` interval, clipped to [0, 1] (None when either is unknown)."""
        if self.rate is None or self.se is None:
            return None
        return max(0.0, self.rate - z * self.se), min(1.0, self.rate + z * self.se)


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float]) -> RatioEstimate:
    """The ratio of sums of per-user ``numerators`` over ``denominators`` (one entry per
    user, in the same order) and its delta-method standard error."""
    if len(numerators) != len(denominators):
        raise ValueError("one numerator and one denominator per user")
    n = len(denominators)
    num, den = float(sum(numerators)), float(sum(denominators))
    if n == 0 or den <= 0:
        return RatioEstimate(n, num, den, None, None)
    rate = num / den
    if n < 2:
        return RatioEstimate(n, num, den, rate, None)
    residual = sum((e - rate * s) ** 2 for e, s in zip(numerators, denominators, strict=True))
    var = n / (n - 1) * residual / (den * den)
    return RatioEstimate(n, num, den, rate, math.sqrt(max(0.0, var)))


@dataclass(frozen=True, slots=True)
class Difference:
    """``treatment - control`` of two rates, its interval and the two-sided p-value."""

    diff: float
    se: float
    low: float
    high: float
    p_value: float


def difference(control: RatioEstimate, treatment: RatioEstimate, z: float = Z95) -> Difference | None:
    """The difference of two independent rates (disjoint users); None when either rate or
    its standard error is unknown."""
    if control.rate is None or treatment.rate is None or control.se is None or treatment.se is None:
        return None
    diff = treatment.rate - control.rate
    se = math.sqrt(control.se**2 + treatment.se**2)
    p = two_sided_p(diff / se) if se > 0 else (1.0 if diff == 0 else 0.0)
    return Difference(diff, se, diff - z * se, diff + z * se, p)


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float | None:
    """The pooled two-proportion z-test that treats every push as independent. Kept to show
    (tests, docs) why the experiment report does not use it: with users who differ, its
    false-positive rate on an A/A split is well above its nominal level."""
    if n_a <= 0 or n_b <= 0:
        return None
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    return two_sided_p((hits_b / n_b - hits_a / n_a) / se)


def verdict(
    control_name: str,
    name: str,
    control: RatioEstimate,
    treatment: RatioEstimate,
    diff: Difference | None,
    *,
    alpha: float = 0.05,
    min_users: int = MIN_USERS,
) -> str:
    """One line on ``name`` against ``control_name`` for a reader of the report."""
    if diff is None:
        if control.rate is None or treatment.rate is None:
            return f"{name}: no pushes to compare with {control_name} yet"
        return f"{name} vs {control_name}: too few users to tell yet (at least {min_users} per variant)"
    points = f"{100 * diff.diff:+.1f} pts"
    small = min(control.users, treatment.users) < min_users
    if diff.p_value < alpha:
        way = "more" if diff.diff > 0 else "less"
        line = f"{name} engages {way} than {control_name} ({points}, p={diff.p_value:.3g})"
        return line + (f"; fewer than {min_users} users in a variant: confirm it" if small else "")
    if small:
        return (
            f"{name} vs {control_name}: too few users to tell yet ({points}, p={diff.p_value:.2f}; "
            f"at least {min_users} users per variant)"
        )
    return f"{name} vs {control_name}: no significant difference ({points}, p={diff.p_value:.2f})"


__all__ = [
    "MIN_USERS",
    "Z95",
    "Difference",
    "RatioEstimate",
    "difference",
    "normal_cdf",
    "ratio_estimate",
    "two_proportion_p",
    "two_sided_p",
    "verdict",
]
