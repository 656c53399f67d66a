"""Hand-computed cases for core.spread and core.fees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.errors import ConfigError
from core.fees import FeeSchedule
from core.models import (
    Level,
    MarketType,
    NetworkStatus,
    OrderBook,
    Rejection,
    RejectReason,
    SpreadOpportunity,
    TransferStatus,
)
from core.settings import load_settings
from core.spread import base_fill, evaluate_spread, vwap_fill

D = Decimal
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FEES = FeeSchedule.build()


def book(
    exchange: str,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    age_s: float = 0.0,
    symbol: str = "BTC/USDT",
) -> OrderBook:
    return OrderBook(
        exchange=exchange,
        symbol=symbol,
        ts=NOW - timedelta(seconds=age_s),
        bids=tuple(Level(D(p), D(s)) for p, s in bids),
        asks=tuple(Level(D(p), D(s)) for p, s in asks),
    )


def opp(result: SpreadOpportunity | Rejection) -> SpreadOpportunity:
    assert isinstance(result, SpreadOpportunity), result
    return result


def rejected(result: SpreadOpportunity | Rejection) -> RejectReason:
    assert isinstance(result, Rejection), result
    return result.reason


# ----------------------------------------------------------------------------- vwap walks


def test_vwap_fill_single_level() -> None:
    fill = vwap_fill([Level(D(100), D(100))], D(1000))
    assert fill.vwap == D(100)
    assert fill.base_qty == D(10)
    assert fill.notional == D(1000)
    assert fill.complete
    assert fill.levels_used == 1


def test_vwap_fill_walks_levels() -> None:
    # 500 USD at 100 (5 base), the other 500 at 101
    fill = vwap_fill([Level(D(100), D(5)), Level(D(101), D(10))], D(1000))
    assert fill.base_qty == D(5) + D(500) / D(101)
    assert fill.vwap == D(1000) / (D(5) + D(500) / D(101))
    assert fill.complete
    assert fill.levels_used == 2


def test_vwap_fill_notional_larger_than_book_is_partial() -> None:
    fill = vwap_fill([Level(D(100), D(2)), Level(D(101), D(3))], D(1000))
    assert not fill.complete
    assert fill.base_qty == D(5)
    assert fill.notional == D(503)
    assert fill.vwap == D(503) / D(5)


def test_vwap_fill_exact_boundary_and_zero() -> None:
    fill = vwap_fill([Level(D(100), D(5)), Level(D(200), D(5))], D(500))
    assert fill.complete and fill.levels_used == 1 and fill.vwap == D(100)
    empty = vwap_fill([Level(D(100), D(5))], D(0))
    assert empty.vwap is None and empty.complete
    with pytest.raises(ValueError):
        vwap_fill([], D(-1))


def test_base_fill_skips_empty_levels() -> None:
    fill = base_fill([Level(D(100), D(0)), Level(D(99), D(2)), Level(D(98), D(2))], D(3))
    assert fill.vwap == (D(198) + D(98)) / D(3)
    assert fill.complete and fill.levels_used == 2
    short = base_fill([Level(D(99), D(2))], D(3))
    assert not short.complete and short.base_qty == D(2)


# ----------------------------------------------------------------------------- spreads


def test_fees_on_both_sides() -> None:
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "100")], [("102", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    assert o.buy_vwap == D(100) and o.sell_vwap == D(101)
    assert o.gross_bps == D(100)
    # (101*0.999 - 100*1.001) / (100*1.001) = 0.799 / 100.1
    assert o.net_bps == D("0.799") / D("100.1") * 10_000
    assert o.buy_fee == D("0.001") and o.sell_fee == D("0.001")
    assert o.executable_base == D(10) and o.executable_usd == D(1000)
    assert o.buy_depth_usd == D(10_000) and o.sell_depth_usd == D(10_100)
    assert o.flags == () and o.pushable
    assert o.net_bps < o.gross_bps


def test_fee_overrides_change_net() -> None:
    fees = FeeSchedule.build(overrides={"binance": {"spot_taker": 0.0}, "okx": {"spot_taker": "0.002"}})
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "100")], [("102", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, fees, D(1000), NOW))
    assert o.net_bps == (D(101) * D("0.998") - D(100)) / D(100) * 10_000


def test_partial_depth_walks_both_books() -> None:
    buy = book("binance", [("99", "100")], [("100", "5"), ("101", "10")])
    sell = book("okx", [("103", "4"), ("102", "100")], [("104", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    q = D(5) + D(500) / D(101)
    assert o.executable_base == q
    assert o.buy_vwap == D(1000) / q
    assert o.sell_vwap == (D(4) * D(103) + (q - D(4)) * D(102)) / q
    assert RejectReason.INSUFFICIENT_DEPTH not in o.flags


def test_notional_larger_than_the_book() -> None:
    buy = book("binance", [("99", "100")], [("100", "2"), ("101", "3")])
    sell = book("okx", [("105", "100")], [("106", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    assert o.executable_base == D(5)
    assert o.executable_usd == D(503)
    assert o.buy_vwap == D("100.6")
    assert RejectReason.INSUFFICIENT_DEPTH in o.flags
    assert not o.pushable


def test_thin_sell_side_limits_the_size() -> None:
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "3")], [("102", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    assert o.executable_base == D(3)
    assert o.executable_usd == D(300)
    assert o.buy_vwap == D(100) and o.sell_vwap == D(101)
    assert RejectReason.INSUFFICIENT_DEPTH in o.flags and not o.pushable


def test_identical_books_lose_money() -> None:
    a = book("binance", [("99.9", "10")], [("100.1", "10")])
    b = book("okx", [("99.9", "10")], [("100.1", "10")])
    o = opp(evaluate_spread("BTC/USDT", a, b, FEES, D(500), NOW))
    assert o.gross_bps < 0 and o.net_bps < 0
    assert RejectReason.BELOW_THRESHOLD in o.flags and not o.pushable


def test_threshold() -> None:
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("100.3", "100")], [("102", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW, min_net_bps=D(20)))
    assert D(0) < o.net_bps < D(20)
    assert o.flags == (RejectReason.BELOW_THRESHOLD,)


@pytest.mark.parametrize(
    ("bids", "asks", "reason"),
    [
        ([("101", "1")], [("100", "1")], RejectReason.CROSSED_BOOK),
        ([("100", "1")], [("100", "1")], RejectReason.CROSSED_BOOK),
        ([], [], RejectReason.EMPTY_BOOK),
        ([("99", "1")], [], RejectReason.ONE_SIDED_BOOK),
        ([], [("101", "1")], RejectReason.ONE_SIDED_BOOK),
    ],
)
def test_bad_books_are_rejected(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], reason: RejectReason
) -> None:
    good = book("binance", [("99", "100")], [("100", "100")])
    bad = book("okx", bids, asks)
    assert rejected(evaluate_spread("BTC/USDT", good, bad, FEES, D(1000), NOW)) is reason
    assert rejected(evaluate_spread("BTC/USDT", bad, good, FEES, D(1000), NOW)) is reason


def test_stale_quote() -> None:
    fresh = book("binance", [("99", "100")], [("100", "100")])
    old = book("okx", [("101", "100")], [("102", "100")], age_s=2.5)
    result = evaluate_spread("BTC/USDT", fresh, old, FEES, D(1000), NOW)
    assert rejected(result) is RejectReason.STALE
    assert "okx" in result.detail  # type: ignore[union-attr]
    # on the bound is still fresh
    edge = book("okx", [("101", "100")], [("102", "100")], age_s=2.0)
    assert isinstance(evaluate_spread("BTC/USDT", fresh, edge, FEES, D(1000), NOW), SpreadOpportunity)
    # a looser bound accepts it
    assert isinstance(
        evaluate_spread("BTC/USDT", fresh, old, FEES, D(1000), NOW, freshness_s=3), SpreadOpportunity
    )


def test_stale_leg() -> None:
    # both fresh against now, but the legs are 2.5 s apart (one clock runs ahead)
    ahead = book("binance", [("99", "100")], [("100", "100")], age_s=-1.0)
    behind = book("okx", [("101", "100")], [("102", "100")], age_s=1.5)
    assert rejected(evaluate_spread("BTC/USDT", ahead, behind, FEES, D(1000), NOW)) is RejectReason.STALE_LEG
    # a tighter leg bound catches a smaller gap
    a = book("binance", [("99", "100")], [("100", "100")], age_s=0.0)
    b = book("okx", [("101", "100")], [("102", "100")], age_s=1.0)
    result = evaluate_spread("BTC/USDT", a, b, FEES, D(1000), NOW, leg_skew_s="0.5")
    assert rejected(result) is RejectReason.STALE_LEG


def test_ticker_collision_is_flagged_not_pushed() -> None:
    buy = book("binance", [("0.99", "100000")], [("1.00", "100000")])
    sell = book("okx", [("1.50", "100000")], [("1.51", "100000")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    assert o.gross_bps == D(5000)
    assert o.flags == (RejectReason.IMPLAUSIBLE_SPREAD,)
    assert not o.pushable
    # just below a raised cap it is an ordinary opportunity
    ok = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW, plausibility_cap="0.6"))
    assert ok.pushable


def test_not_transferable() -> None:
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "100")], [("102", "100")])
    closed = {"binance": {"BTC": (True, True)}, "okx": {"BTC": (False, True)}}  # okx takes no deposits
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW, transfer=closed))
    assert o.flags == (RejectReason.NOT_TRANSFERABLE,) and not o.pushable
    # the other direction only needs okx's withdrawals, which are open
    back = opp(evaluate_spread("BTC/USDT", sell, buy, FEES, D(1000), NOW, transfer=closed))
    assert RejectReason.NOT_TRANSFERABLE not in back.flags
    # okx says nothing about BTC: unknown, flagged but not blocking
    other_asset = {"binance": {"BTC": (True, True)}, "okx": {"ETH": (False, False)}}
    unknown = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW, transfer=other_asset))
    assert unknown.pushable and unknown.flags == (RejectReason.TRANSFER_UNKNOWN,)
    # no transfer data at all: not checked
    assert opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW)).flags == ()


def test_the_withdrawal_fee_is_subtracted_at_the_executable_quantity() -> None:
    buy = book("binance", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "100")], [("102", "100")])
    plain = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    nets = (NetworkStatus("ETH", True, True, 0.05), NetworkStatus("ARB", True, True, 0.01))
    transfer = {
        "binance": {"BTC": TransferStatus(networks=nets)},
        "okx": {"BTC": TransferStatus(networks=nets)},
    }
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW, transfer=transfer))
    assert o.transfer_network == "ARB"
    assert o.transfer_bps == D("0.01") / o.executable_base * 10_000  # 10 base → 10 bps
    assert o.net_bps == plain.net_bps - o.transfer_bps


def test_unknown_exchange_uses_flagged_default_fee() -> None:
    buy = book("somedex", [("99", "100")], [("100", "100")])
    sell = book("okx", [("101", "100")], [("102", "100")])
    o = opp(evaluate_spread("BTC/USDT", buy, sell, FEES, D(1000), NOW))
    assert o.buy_fee == D("0.001")
    assert o.flags == (RejectReason.DEFAULT_FEE,)
    assert o.pushable  # informational only


def test_same_exchange_and_bad_notional() -> None:
    a = book("okx", [("99", "100")], [("100", "100")])
    assert rejected(evaluate_spread("BTC/USDT", a, a, FEES, D(1000), NOW)) is RejectReason.SAME_EXCHANGE
    with pytest.raises(ValueError):
        evaluate_spread("BTC/USDT", a, book("binance", [], []), FEES, D(0), NOW)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError):
        OrderBook("okx", "BTC/USDT", datetime(2026, 1, 1), (), ())


def test_from_lists() -> None:
    ob = OrderBook.from_lists("okx", "BTC/USDT", NOW, [[0.1, 2.0]], [[0.2, 3.0]])
    assert ob.best_bid == D("0.1") and ob.best_ask == D("0.2")


# ----------------------------------------------------------------------------- fees


def test_fee_defaults() -> None:
    fees = FeeSchedule.build()
    assert fees.taker("binance", "spot") == D("0.001")
    assert fees.taker("binance", "swap") == D("0.0005")
    assert fees.taker("bybit", "swap") == D("0.00055")
    assert fees.taker("okx", MarketType.SWAP) == D("0.0005")
    assert fees.taker("OKX", "future") == D("0.0005")  # futures fall back to the swap fee
    unknown = fees.fee("somedex", "swap")
    assert unknown.rate == D("0.0006") and unknown.is_default
    assert fees.fee("somedex", "spot").rate == D("0.001")
    assert not fees.fee("binance").is_default


def test_fee_precedence() -> None:
    fees = FeeSchedule.build(
        overrides={"binance": {"spot_taker": 0.00075}},
        markets={"binance": {"spot_taker": 0.0009, "swap_taker": 0.0004}, "kraken": {"spot_taker": 0.0026}},
    )
    assert fees.taker("binance", "spot") == D("0.00075")
    assert fees.taker("binance", "swap") == D("0.0004")
    assert fees.fee("kraken", "spot") == fees.fee("kraken", "spot")
    assert not fees.fee("kraken", "spot").is_default
    assert fees.fee("kraken", "swap").is_default  # kraken known, but not its swap fee


def test_fees_from_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBFLOW_FEES", '{"binance":{"spot_taker":0.002,"swap_taker":0.0001}}')
    fees = FeeSchedule.build(overrides=load_settings().fees)
    assert fees.taker("binance", "spot") == D("0.002")
    assert fees.taker("binance", "swap") == D("0.0001")


@pytest.mark.parametrize(
    "table", [{"binance": {"spot_taker": 0.5}}, {"binance": {"spot_taker": -0.1}}, {"x": 1}]
)
def test_bad_fee_override(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        FeeSchedule.build(overrides=table)  # type: ignore[arg-type]


def test_fee_rows() -> None:
    rows = FeeSchedule.build().rows(["okx", "somedex"], ["spot"])
    assert rows == [
        {"exchange": "okx", "market_type": "spot", "taker_fee": 0.001, "fee_is_default": False},
        {"exchange": "somedex", "market_type": "spot", "taker_fee": 0.001, "fee_is_default": True},
    ]
