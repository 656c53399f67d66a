"""core.scoring: bounds, monotonicity, priorities."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.models import Priority
from core.scoring import FUNDING_SCORING, SPOT_SCORING, ScoreInputs, ScoringConfig, score


def inputs(**kw: float | None) -> ScoreInputs:
    base: dict[str, float | None] = {"net_bps": 15.0, "notional_usd": 1000.0, "executable_usd": 1000.0}
    base.update(kw)
    return ScoreInputs(**base)  # type: ignore[arg-type]


def test_hand_computed() -> None:
    # edge 10/20 = 0.5 with weight .35/.75; depth and freshness 1
    s = score(inputs(net_bps=10.0))
    assert s.confidence == pytest.approx(0.5 ** (0.35 / 0.75))
    assert s.priority is Priority.MEDIUM and s.meets_threshold
    assert s.components == {"edge": 0.5, "depth": 1.0, "freshness": 1.0}


def test_priorities() -> None:
    assert score(inputs(net_bps=25.0)).priority is Priority.HIGH
    assert score(inputs(net_bps=5.0)).priority is Priority.LOW
    assert not score(inputs(net_bps=5.0)).meets_threshold


def test_zero_edge_or_depth_gives_zero() -> None:
    assert score(inputs(net_bps=-3.0)).confidence == 0.0
    assert score(inputs(executable_usd=0.0)).confidence == 0.0
    assert score(inputs(notional_usd=0.0)).confidence == 0.0


def test_known_components_count() -> None:
    plain = score(inputs(net_bps=30.0)).confidence
    assert plain == 1.0
    assert score(inputs(net_bps=30.0, persistence=0.5)).confidence < plain
    assert score(inputs(net_bps=30.0, volatility_bps=50.0)).confidence < plain
    assert score(inputs(net_bps=30.0, volatility_bps=500.0)).confidence == 0.0
    assert score(inputs(net_bps=30.0, age_s=2.0, freshness_s=2.0)).components["freshness"] == 0.5


def test_decimal_inputs_and_configs() -> None:
    s = score(
        ScoreInputs(net_bps=Decimal("40"), notional_usd=Decimal(1000), executable_usd=Decimal(1000)),
        FUNDING_SCORING,
    )
    assert s.components["edge"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        ScoringConfig(min_net_bps=5.0, full_edge_bps=5.0)
    with pytest.raises(ValueError):
        ScoringConfig(push_threshold=0.9, high_threshold=0.8)
    strict = ScoringConfig(push_threshold=0.99, high_threshold=0.995)
    assert not score(inputs(net_bps=15.0), strict).meets_threshold


unit = st.floats(0.0, 1.0)
bps = st.floats(-50.0, 100.0)


@given(
    net=bps,
    net2=bps,
    depth=unit,
    depth2=unit,
    age=st.floats(0.0, 2.0),
    age2=st.floats(0.0, 2.0),
    pers=unit,
    pers2=unit,
    vol=st.floats(0.0, 150.0),
    vol2=st.floats(0.0, 150.0),
)
def test_monotone_and_bounded(
    net: float,
    net2: float,
    depth: float,
    depth2: float,
    age: float,
    age2: float,
    pers: float,
    pers2: float,
    vol: float,
    vol2: float,
) -> None:
    def conf(n: float, d: float, a: float, p: float, v: float) -> float:
        c = score(ScoreInputs(n, 1000.0, 1000.0 * d, a, 2.0, p, v), SPOT_SCORING).confidence
        assert 0.0 <= c <= 1.0
        return c

    lo, hi = sorted((net, net2))
    assert conf(lo, depth, age, pers, vol) <= conf(hi, depth, age, pers, vol) + 1e-12
    lo, hi = sorted((depth, depth2))
    assert conf(net, lo, age, pers, vol) <= conf(net, hi, age, pers, vol) + 1e-12
    lo, hi = sorted((pers, pers2))
    assert conf(net, depth, age, lo, vol) <= conf(net, depth, age, hi, vol) + 1e-12
    young, old = sorted((age, age2))
    assert conf(net, depth, old, pers, vol) <= conf(net, depth, young, pers, vol) + 1e-12
    calm, wild = sorted((vol, vol2))
    assert conf(net, depth, age, pers, wild) <= conf(net, depth, age, pers, calm) + 1e-12
