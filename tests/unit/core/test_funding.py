"""Hand-computed cases for core.funding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.fees import FeeSchedule
from core.funding import evaluate_funding, rate_per_hour
from core.models import FundingOpportunity, FundingSnapshot, RateSource, Rejection, RejectReason

D = Decimal
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FEES = FeeSchedule.build()
SYM = "BTC/USDT:USDT"


def snap(
    exchange: str,
    rate: str,
    interval: str,
    *,
    mark: str | None = "100",
    predicted: str | None = None,
    age_s: float = 0.0,
    next_in_h: float = 1.0,
) -> FundingSnapshot:
    return FundingSnapshot(
        exchange=exchange,
        symbol=SYM,
        ts=NOW - timedelta(seconds=age_s),
        funding_rate=D(rate),
        interval_hours=D(interval),
        next_funding_ts=NOW + timedelta(hours=next_in_h),
        next_funding_rate=D(predicted) if predicted is not None else None,
        mark_price=D(mark) if mark is not None else None,
    )


def opp(result: FundingOpportunity | Rejection) -> FundingOpportunity:
    assert isinstance(result, FundingOpportunity), result
    return result


def test_rate_per_hour_uses_its_own_interval() -> None:
    assert rate_per_hour("0.0001", 8) == D("0.0000125")
    assert rate_per_hour("0.0001", 4) == D("0.000025")
    assert rate_per_hour("0.0001", 1) == D("0.0001")
    with pytest.raises(ValueError):
        rate_per_hour("0.0001", 0)


def test_different_intervals_1h_vs_8h() -> None:
    # per 8 h binance pays 1 bp; bybit pays 0.5 bp per *hour* (4 bp per 8 h).
    # Assuming 8 h everywhere would go long bybit; per hour bybit is the higher rate.
    binance = snap("binance", "0.0001", "8", next_in_h=3)
    bybit = snap("bybit", "0.00005", "1", next_in_h=0.5)
    o = opp(evaluate_funding(bybit, binance, FEES, D(10_000), NOW))
    assert (o.buy_exchange, o.sell_exchange) == ("binance", "bybit")
    assert o.long_rate_per_hour == D("0.0000125") and o.short_rate_per_hour == D("0.00005")
    assert o.spread_per_hour == D("0.0000375")
    assert o.spread_per_day == D("0.0009")
    assert o.gross_apr == D("0.3285")
    assert o.fees == D("0.0021")  # 2 * 0.0005 + 2 * 0.00055
    assert o.entry_basis == D(0) and o.basis_cost == D(0)
    assert o.roundtrip_cost == D("0.0021")
    assert o.horizon_hours == D(168)
    assert o.gross_bps == D(63)  # 0.0000375 * 168
    assert o.net_bps == D(42)
    assert o.net_apr == D("0.0042") * 8760 / 168
    assert o.breakeven_hours == D(56)
    assert o.long_next_funding == NOW + timedelta(hours=3)
    assert o.short_next_funding == NOW + timedelta(minutes=30)
    assert o.rate_source is RateSource.SETTLED
    assert o.flags == () and o.pushable
    # argument order does not matter
    again = opp(evaluate_funding(binance, bybit, FEES, D(10_000), NOW))
    assert again.model_dump() == o.model_dump()


def test_4h_interval_and_negative_rates() -> None:
    a = snap("okx", "-0.0002", "4")  # -0.5 bp/h: longs get paid
    b = snap("binance", "0.0001", "8")  # 0.125 bp/h
    o = opp(evaluate_funding(a, b, FEES, D(1000), NOW, horizon_hours=24))
    assert (o.buy_exchange, o.sell_exchange) == ("okx", "binance")
    assert o.spread_per_hour == D("0.0000625")
    assert o.net_bps == (D("0.0000625") * 24 - D("0.002")) * 10_000
    assert o.net_bps == D(-5)
    assert RejectReason.BELOW_THRESHOLD in o.flags and not o.pushable
    assert o.breakeven_hours == D(32)


def test_adverse_basis_is_a_cost() -> None:
    long_ = snap("binance", "0.0000", "8", mark="100")
    short = snap("okx", "0.0008", "8", mark="99.9")  # short leg cheaper: lose 10 bp on convergence
    o = opp(evaluate_funding(long_, short, FEES, D(10_000), NOW))
    assert o.entry_basis == D("-0.001")
    assert o.basis_cost == D("0.001")
    assert o.roundtrip_cost == D("0.002") + D("0.001")


def test_favourable_basis_credited_only_when_asked() -> None:
    long_ = snap("binance", "0.0000", "8", mark="100")
    short = snap("okx", "0.0008", "8", mark="100.1")
    conservative = opp(evaluate_funding(long_, short, FEES, D(10_000), NOW))
    assert conservative.entry_basis == D("0.001") and conservative.basis_cost == D(0)
    credited = opp(evaluate_funding(long_, short, FEES, D(10_000), NOW, credit_favourable_basis=True))
    assert credited.basis_cost == D("-0.001")
    assert credited.roundtrip_cost == D("0.001")
    exit_wide = opp(evaluate_funding(long_, short, FEES, D(10_000), NOW, exit_basis="0.003"))
    assert exit_wide.basis_cost == D("0.002")


def test_missing_mark_price_flags_basis_unknown() -> None:
    o = opp(
        evaluate_funding(snap("binance", "0", "8", mark=None), snap("okx", "0.001", "8"), FEES, D(1), NOW)
    )
    assert o.entry_basis is None and o.basis_cost == D(0)
    assert o.flags == (RejectReason.BASIS_UNKNOWN,)
    assert o.pushable


def test_collision_by_basis() -> None:
    o = opp(
        evaluate_funding(snap("binance", "0", "8"), snap("okx", "0.001", "8", mark="150"), FEES, D(1), NOW)
    )
    assert RejectReason.IMPLAUSIBLE_SPREAD in o.flags and not o.pushable


def test_settled_by_default_predicted_on_request() -> None:
    a = snap("binance", "0.0001", "8", predicted="0.0003")
    b = snap("okx", "0.0002", "8", predicted="0.0001")
    settled = opp(evaluate_funding(a, b, FEES, D(1000), NOW))
    assert settled.rate_source is RateSource.SETTLED
    assert (settled.buy_exchange, settled.sell_exchange) == ("binance", "okx")
    predicted = opp(evaluate_funding(a, b, FEES, D(1000), NOW, use_predicted=True))
    assert predicted.rate_source is RateSource.PREDICTED
    assert predicted.flags[0] is RejectReason.PREDICTED_RATE
    assert (predicted.buy_exchange, predicted.sell_exchange) == ("okx", "binance")
    assert predicted.spread_per_hour == D("0.000025")
    one_missing = snap("okx", "0.0002", "8")
    fallback = opp(evaluate_funding(a, one_missing, FEES, D(1000), NOW, use_predicted=True))
    assert fallback.rate_source is RateSource.SETTLED
    assert fallback.flags[0] is RejectReason.PREDICTED_UNAVAILABLE


def test_equal_rates_never_break_even() -> None:
    o = opp(evaluate_funding(snap("okx", "0.0001", "8"), snap("binance", "0.0001", "8"), FEES, D(1), NOW))
    assert o.buy_exchange == "binance"  # tie: the name that sorts first goes long
    assert o.spread_per_hour == D(0) and o.breakeven_hours is None
    assert not o.pushable


def test_threshold_and_default_fee() -> None:
    a = snap("binance", "0", "8")
    b = snap("somedex", "0.001", "8")
    o = opp(evaluate_funding(a, b, FEES, D(1000), NOW, min_net_apr=100))
    assert o.fees == D("0.001") + D("0.0012")
    assert o.flags == (RejectReason.BELOW_THRESHOLD, RejectReason.DEFAULT_FEE)


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        (snap("binance", "0", "8"), snap("binance", "0.001", "8"), RejectReason.SAME_EXCHANGE),
        (snap("binance", "0", "0"), snap("okx", "0.001", "8"), RejectReason.INVALID_INTERVAL),
        (snap("binance", "0", "8", age_s=61), snap("okx", "0.001", "8"), RejectReason.STALE),
        (snap("binance", "0", "8", age_s=-30), snap("okx", "0.001", "8", age_s=40), RejectReason.STALE_LEG),
    ],
)
def test_rejections(a: FundingSnapshot, b: FundingSnapshot, reason: RejectReason) -> None:
    result = evaluate_funding(a, b, FEES, D(1000), NOW)
    assert isinstance(result, Rejection)
    assert result.reason is reason


def test_bad_inputs() -> None:
    a = snap("binance", "0", "8")
    with pytest.raises(ValueError):
        evaluate_funding(a, snap("okx", "0", "8"), FEES, D(0), NOW)
    other = FundingSnapshot("okx", "ETH/USDT:USDT", NOW, D(0), D(8))
    with pytest.raises(ValueError):
        evaluate_funding(a, other, FEES, D(1), NOW)
