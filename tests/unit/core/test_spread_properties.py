"""Hypothesis properties of core.spread: net <= gross, VWAP monotone in size, identical books lose."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.fees import FeeSchedule
from core.models import Level, OrderBook, SpreadOpportunity
from core.spread import base_fill, evaluate_spread, vwap_fill

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EPS = Decimal("1e-20")  # Decimal division rounds at 28 digits

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100_000), places=2)
sizes = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(1_000), places=3)
steps = st.lists(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5), places=2), min_size=1, max_size=12
)
fees = st.decimals(min_value=Decimal(0), max_value=Decimal("0.01"), places=5)
notionals = st.decimals(min_value=Decimal(1), max_value=Decimal(5_000_000), places=2)


@st.composite
def books(draw: st.DrawFn, exchange: str = "a") -> OrderBook:
    mid = draw(prices) + Decimal(10)
    half = draw(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(2), places=2))
    ask_steps, bid_steps = draw(steps), draw(steps)
    asks, px = [], mid + half
    for step in ask_steps:
        asks.append(Level(px, draw(sizes)))
        px += step
    bids, px = [], mid - half
    for step in bid_steps:
        if px <= 0:
            break
        bids.append(Level(px, draw(sizes)))
        px -= step
    return OrderBook(exchange, "X/USDT", NOW, tuple(bids), tuple(asks))


def fee_schedule(f_buy: Decimal, f_sell: Decimal) -> FeeSchedule:
    return FeeSchedule.build(overrides={"a": {"spot_taker": f_buy}, "b": {"spot_taker": f_sell}})


@given(books("a"), books("b"), fees, fees, notionals)
def test_net_never_exceeds_gross(
    buy: OrderBook, sell: OrderBook, f_buy: Decimal, f_sell: Decimal, notional: Decimal
) -> None:
    o = evaluate_spread(
        "X/USDT", buy, sell, fee_schedule(f_buy, f_sell), notional, NOW, plausibility_cap=1000
    )
    assert isinstance(o, SpreadOpportunity)
    assert o.net_bps <= o.gross_bps
    assert o.executable_usd <= notional
    assert o.buy_vwap >= buy.asks[0].price - EPS and o.sell_vwap <= sell.bids[0].price + EPS


@given(books("a"), notionals, notionals)
def test_larger_notional_never_buys_cheaper(book: OrderBook, n1: Decimal, n2: Decimal) -> None:
    small, large = sorted((n1, n2))
    v_small, v_large = vwap_fill(book.asks, small).vwap, vwap_fill(book.asks, large).vwap
    assert v_small is not None and v_large is not None
    assert v_small <= v_large * (1 + EPS)


@given(books("a"), sizes, sizes)
def test_larger_quantity_never_sells_dearer(book: OrderBook, q1: Decimal, q2: Decimal) -> None:
    small, large = sorted((q1, q2))
    v_small, v_large = base_fill(book.bids, small).vwap, base_fill(book.bids, large).vwap
    assert v_small is not None and v_large is not None
    assert v_small >= v_large * (1 - EPS)


@settings(max_examples=60)
@given(books("a"), books("b"), notionals, notionals)
def test_evaluate_spread_vwaps_monotone_in_notional(
    buy: OrderBook, sell: OrderBook, n1: Decimal, n2: Decimal
) -> None:
    small, large = sorted((n1, n2))
    fs = FeeSchedule.build()
    a = evaluate_spread("X/USDT", buy, sell, fs, small, NOW)
    b = evaluate_spread("X/USDT", buy, sell, fs, large, NOW)
    assert isinstance(a, SpreadOpportunity) and isinstance(b, SpreadOpportunity)
    assert a.buy_vwap <= b.buy_vwap * (1 + EPS)
    assert a.sell_vwap >= b.sell_vwap * (1 - EPS)
    assert a.executable_base <= b.executable_base


@given(books("a"), fees, fees, notionals)
def test_identical_books_give_no_opportunity(
    book: OrderBook, f1: Decimal, f2: Decimal, notional: Decimal
) -> None:
    twin = OrderBook("b", book.symbol, book.ts, book.bids, book.asks)
    o = evaluate_spread("X/USDT", book, twin, fee_schedule(f1, f2), notional, NOW)
    assert isinstance(o, SpreadOpportunity)
    assert o.gross_bps < 0 and o.net_bps < 0
    assert not o.pushable
