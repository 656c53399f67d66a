"""core.stats: the ratio estimate and its user-level variance, the difference of two
variants, and how the analysis behaves on simulated populations (an A/A split is not
significant more often than its level; a planted effect is found with the right sign)."""

from __future__ import annotations

import math
import random

import pytest

from core.experiments import Experiment, Variant, assign
from core.stats import (
    MIN_USERS,
    difference,
    normal_cdf,
    ratio_estimate,
    two_proportion_p,
    two_sided_p,
    verdict,
)


def test_normal_helpers() -> None:
    assert normal_cdf(0) == pytest.approx(0.5)
    assert two_sided_p(1.959963984540054) == pytest.approx(0.05, abs=1e-9)
    assert two_sided_p(0) == 1.0


def test_ratio_estimate_by_hand() -> None:
    # three users: 1/2, 0/4, 3/4 → R = 4/10; residuals 0.2, -1.6, 1.4
    est = ratio_estimate([1, 0, 3], [2, 4, 4])
    assert est.rate == pytest.approx(0.4)
    var = 3 / 2 * (0.2**2 + 1.6**2 + 1.4**2) / 100
    assert est.se == pytest.approx(math.sqrt(var))
    low, high = est.interval() or (0, 0)
    assert low == pytest.approx(max(0.0, 0.4 - 1.96 * math.sqrt(var)), abs=1e-3)
    assert high == pytest.approx(0.4 + 1.96 * math.sqrt(var), abs=1e-3)


def test_ratio_estimate_degenerate() -> None:
    assert ratio_estimate([], []).rate is None
    one = ratio_estimate([1], [3])
    assert one.rate == pytest.approx(1 / 3) and one.se is None and one.interval() is None
    with pytest.raises(ValueError):
        ratio_estimate([1], [1, 2])
    assert difference(one, ratio_estimate([1, 1], [2, 2])) is None


def test_user_level_variance_is_wider_than_binomial_when_users_differ() -> None:
    # half the users press every push, half none: the pushes are far from independent
    est = ratio_estimate([10] * 50 + [0] * 50, [10] * 100)
    binomial_se = math.sqrt(0.5 * 0.5 / 1000)
    assert est.se is not None and est.se > 2.5 * binomial_se


def _population(
    rng: random.Random, users: int, *, base: float = 0.2, lift: float = 0.0, spread: float = 10.0
) -> tuple[list[int], list[int]]:
    """``users`` users: pushes sent 1 + Poisson-ish (mean ~9), each user's own press
    probability drawn from a Beta around ``base + lift`` (``spread`` = a + b: smaller is
    more heterogeneous)."""
    mean = min(0.95, max(0.01, base + lift))
    a, b = mean * spread, (1 - mean) * spread
    engaged, sent = [], []
    for _ in range(users):
        n = 1 + sum(rng.random() < 0.5 for _ in range(16))  # 1 + Binomial(16, 0.5)
        p = rng.betavariate(a, b)
        sent.append(n)
        engaged.append(sum(rng.random() < p for _ in range(n)))
    return engaged, sent


def test_aa_split_one_seed_is_not_significant() -> None:
    """Users assigned by the real hash to two identical arms: no significant difference."""
    exp = Experiment(name="aa", variants=[Variant(name="a"), Variant(name="b")])
    rng = random.Random(20261206)
    arms: dict[str, tuple[list[int], list[int]]] = {"a": ([], []), "b": ([], [])}
    engaged, sent = _population(rng, 1200)
    for uid, (e, s) in enumerate(zip(engaged, sent, strict=True), start=5_000_000):
        variant = assign(uid, [exp]).variant
        assert variant is not None
        arms[variant][0].append(e)
        arms[variant][1].append(s)
    a, b = ratio_estimate(*arms["a"]), ratio_estimate(*arms["b"])
    assert 500 < a.users < 700 and 500 < b.users < 700  # the hash splits about evenly
    diff = difference(a, b)
    assert diff is not None and diff.p_value >= 0.05
    assert diff.low < 0 < diff.high
    assert "no significant difference" in verdict("a", "b", a, b, diff)


def test_aa_false_positive_rate_is_near_its_level() -> None:
    """Over many seeded A/A splits the user-level test rejects about 5% of the time; the
    push-level binomial test, which ignores that a user's pushes are correlated, rejects far
    more often (why the report does not use it)."""
    runs, users = 400, 300
    ours = naive = 0
    for seed in range(runs):
        rng = random.Random(seed)
        a, b = _population(rng, users), _population(rng, users)
        diff = difference(ratio_estimate(*a), ratio_estimate(*b))
        assert diff is not None
        ours += diff.p_value < 0.05
        p = two_proportion_p(sum(a[0]), sum(a[1]), sum(b[0]), sum(b[1]))
        naive += p is not None and p < 0.05
    assert 0.02 <= ours / runs <= 0.085, ours / runs
    assert naive / runs > 0.10, naive / runs


def test_planted_effect_is_found_with_its_sign() -> None:
    """+8 points for variant b (0.20 → 0.28): found, positive, the interval around it."""
    found = 0
    for seed in range(20):
        rng = random.Random(1000 + seed)
        a, b = _population(rng, 400), _population(rng, 400, lift=0.08)
        ra, rb = ratio_estimate(*a), ratio_estimate(*b)
        diff = difference(ra, rb)
        assert diff is not None and diff.diff > 0
        if diff.p_value < 0.05:
            found += 1
            assert diff.low > 0 and diff.low < 0.08 < diff.high + 0.03
            assert verdict("a", "b", ra, rb, diff).startswith("b engages more than a")
    assert found >= 18  # the power at this size is ~99%


def test_planted_negative_effect_reads_less() -> None:
    rng = random.Random(7)
    a, b = _population(rng, 400), _population(rng, 400, lift=-0.08)
    ra, rb = ratio_estimate(*a), ratio_estimate(*b)
    diff = difference(ra, rb)
    assert diff is not None and diff.diff < 0 and diff.p_value < 0.05
    assert verdict("a", "b", ra, rb, diff).startswith("b engages less than a")


def test_verdict_on_small_samples_says_so() -> None:
    ra, rb = ratio_estimate([1, 0, 2], [3, 3, 3]), ratio_estimate([2, 1, 2], [3, 3, 3])
    diff = difference(ra, rb)
    assert diff is not None
    assert "too few users" in verdict("a", "b", ra, rb, diff) and str(MIN_USERS) in verdict(
        "a", "b", ra, rb, diff
    )
    assert "no pushes" in verdict("a", "b", ra, ratio_estimate([], []), None)
    one = ratio_estimate([1], [2])  # one user: a rate, no interval
    assert "too few users" in verdict("a", "b", ra, one, difference(ra, one))
