"""pipeline.detect: the vectorised detector equals core.spread / core.funding, row for row."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fees import FeeSchedule
from core.funding import evaluate_funding
from core.models import (
    FundingOpportunity,
    FundingSnapshot,
    Level,
    NetworkStatus,
    OrderBook,
    RejectReason,
    SpreadOpportunity,
    TransferMap,
    TransferStatus,
)
from core.scoring import FUNDING_SCORING, ScoreInputs, score
from core.spread import evaluate_spread
from core.transfers import TRANSFER_UNKNOWN_FACTOR
from pipeline.detect import book_rejections, detect_spreads, fee_table
from pipeline.detect_funding import detect_funding
from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS

NOW_MS = 1_767_268_800_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
FEES = FeeSchedule.build(overrides={"kraken": {"spot_taker": 0.0026}})
EXCHANGES = ["binance", "bybit", "okx", "kraken", "somedex"]


def d(x: float) -> Decimal:
    return Decimal(repr(x))


def book_rows(books: list[OrderBook]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "ts": b.ts,
                "recv_ts": b.ts,
                "exchange": b.exchange,
                "symbol": b.symbol,
                "market_type": b.market_type.value,
                "depth": max(len(b.bids), len(b.asks)),
                "bid_px": [float(lv.price) for lv in b.bids],
                "bid_sz": [float(lv.size) for lv in b.bids],
                "ask_px": [float(lv.price) for lv in b.asks],
                "ask_sz": [float(lv.size) for lv in b.asks],
                "nonce": None,
            }
            for b in books
        ],
        schema=ORDER_BOOKS,
    )


def random_books(seed: int, n_symbols: int = 12) -> list[OrderBook]:
    rng = np.random.default_rng(seed)
    out: list[OrderBook] = []
    for s in range(n_symbols):
        mid = float(np.exp(rng.uniform(-3, 10)))
        for ex in EXCHANGES:
            m = mid * (1 + rng.normal(0, 2e-3))
            if s == 0 and ex == "okx":
                m *= 1.4  # a ticker collision
            depth_b, depth_a = int(rng.integers(1, 15)), int(rng.integers(1, 15))
            half = m * rng.uniform(1e-5, 5e-4)
            bid_px = m - half - np.concatenate([[0.0], np.cumsum(rng.uniform(1e-5, 1e-3, depth_b - 1) * m)])
            ask_px = m + half + np.concatenate([[0.0], np.cumsum(rng.uniform(1e-5, 1e-3, depth_a - 1) * m)])
            bid_sz = np.exp(rng.normal(np.log(2000), 1.2, depth_b)) / m
            ask_sz = np.exp(rng.normal(np.log(2000), 1.2, depth_a)) / m
            bids = [Level(d(float(p)), d(float(q))) for p, q in zip(bid_px, bid_sz, strict=True)]
            asks = [Level(d(float(p)), d(float(q))) for p, q in zip(ask_px, ask_sz, strict=True)]
            shape = 1.0 if s == 0 else rng.random()  # S0 stays clean: it carries the collision
            if shape < 0.04:
                bids, asks = [], []
            elif shape < 0.08:
                bids = []
            elif shape < 0.12:
                bids = [Level(asks[0].price * Decimal("1.001"), Decimal(1)), *bids]  # crossed
            age_ms = int(rng.integers(-200, 2_600)) if s else 0  # some ahead of now, some stale
            ts = NOW - timedelta(milliseconds=age_ms)
            out.append(OrderBook(ex, f"S{s}/USDT", ts, tuple(bids), tuple(asks)))
    return out


_NETS = (NetworkStatus("ETH", True, True, 0.4), NetworkStatus("TRX", True, True, 0.05))
TRANSFER: TransferMap = {
    "binance": {f"S{i}": TransferStatus(networks=_NETS) for i in range(8)},
    "bybit": {"S3": (True, False), "S4": TransferStatus(networks=(NetworkStatus("TRX", None, None, 0.05),))},
    "kraken": {"S5": (False, True), "S6": (True, True)},
    "okx": {f"S{i}": TransferStatus(networks=_NETS[:1]) for i in range(8)},
}
"""Routes open with fees (binance ↔ okx on ETH/TRX), closed by either side, currency-level
only (kraken S6), unknown (a venue or asset missing, bybit S4's networks)."""
NOTIONALS = (1_000.0, 10_000.0, 250_000.0)


def loop(
    books: list[OrderBook], notionals: tuple[float, ...]
) -> dict[tuple[str, str, str, float], SpreadOpportunity]:
    by_symbol: dict[str, list[OrderBook]] = {}
    for b in books:
        by_symbol.setdefault(b.symbol, []).append(b)
    out = {}
    for symbol, group in by_symbol.items():
        for buy, sell in itertools.permutations(group, 2):
            for n in notionals:
                r = evaluate_spread(symbol, buy, sell, FEES, d(n), NOW, transfer=TRANSFER)
                if isinstance(r, SpreadOpportunity):
                    out[(symbol, buy.exchange, sell.exchange, n)] = r
    return out


def close(a: float, b: Decimal | float, rel: float = 1e-9, abs_: float = 0.0) -> bool:
    return math.isclose(a, float(b), rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_equals_core_on_random_books(seed: int) -> None:
    books = random_books(seed)
    expected = loop(books, NOTIONALS)
    got = detect_spreads(
        book_rows(books), FEES, NOTIONALS, now_ms=NOW_MS, transfer=TRANSFER, min_gross_bps=None
    )
    keys = {
        (r["symbol"], r["buy_exchange"], r["sell_exchange"], r["notional_usd"])
        for r in got.iter_rows(named=True)
    }
    assert keys == set(expected)
    assert len(keys) == got.height
    flags_seen: set[str] = set()
    for row in got.iter_rows(named=True):
        o = expected[(row["symbol"], row["buy_exchange"], row["sell_exchange"], row["notional_usd"])]
        for col in (
            "buy_vwap",
            "sell_vwap",
            "executable_base",
            "executable_usd",
            "buy_depth_usd",
            "sell_depth_usd",
        ):
            assert close(row[col], getattr(o, col)), (col, row[col], getattr(o, col))
        # bps near zero: compare as fractions to 1e-9 of the price ratio
        assert close(row["gross_bps"], o.gross_bps, abs_=1e-5), (row["gross_bps"], o.gross_bps)
        assert close(row["net_bps"], o.net_bps, abs_=1e-5)
        assert row["flags"] == o.flags_csv
        assert row["pushable"] == o.pushable
        assert row["transfer_network"] == o.transfer_network
        if o.transfer_bps is None:
            assert row["transfer_bps"] is None
        else:
            assert close(row["transfer_bps"], o.transfer_bps, abs_=1e-6)
        age = (NOW - min(o.buy_ts, o.sell_ts)).total_seconds()
        s = score(ScoreInputs(o.net_bps, o.notional_usd, o.executable_usd, max(age, 0.0), 2.0))
        unknown = RejectReason.TRANSFER_UNKNOWN in o.flags
        assert close(
            row["confidence"], s.confidence * (TRANSFER_UNKNOWN_FACTOR if unknown else 1.0), abs_=1e-9
        )
        if not unknown:
            assert row["priority"] == s.priority.value
        assert row["buy_ts"] == o.buy_ts and row["sell_ts"] == o.sell_ts
        flags_seen.update(f for f in row["flags"].split(",") if f)
    # the scenario exercises the rare path where the bids, not the notional, limit the size
    limit = pl.min_horizontal("notional_usd", "buy_depth_usd") * (1 - 1e-9)
    assert got.select((pl.col("executable_usd") < limit).any()).item()
    # the scenario exercises every flag
    assert flags_seen >= {
        "implausible_spread",
        "not_transferable",
        "insufficient_depth",
        "below_threshold",
        "default_fee",
        "transfer_unknown",
    }


@pytest.mark.parametrize("seed", [4, 5])
def test_pruned_output_is_the_positive_gross_subset(seed: int) -> None:
    books = random_books(seed)
    expected = {k: o for k, o in loop(books, NOTIONALS).items() if o.gross_bps > 0}
    got = detect_spreads(book_rows(books), FEES, NOTIONALS, now_ms=NOW_MS, transfer=TRANSFER)
    keys = {
        (r["symbol"], r["buy_exchange"], r["sell_exchange"], r["notional_usd"])
        for r in got.iter_rows(named=True)
    }
    assert keys == set(expected)
    assert (got["gross_bps"] > 0).all()
    assert (got["net_bps"] <= got["gross_bps"]).all()


def test_identical_books_give_nothing() -> None:
    template = random_books(9, n_symbols=6)
    books = [
        OrderBook(ex, b.symbol, NOW, b.bids, b.asks)
        for b in template
        if b.exchange == "binance" and b.bids and b.asks and b.bids[0].price < b.asks[0].price
        for ex in EXCHANGES
    ]
    assert books
    table = book_rows(books)
    assert detect_spreads(table, FEES, now_ms=NOW_MS).height == 0
    everything = detect_spreads(table, FEES, now_ms=NOW_MS, min_gross_bps=None)
    assert everything.height == len(books) * (len(EXCHANGES) - 1) * 2
    assert (everything["net_bps"] < 0).all() and (everything["gross_bps"] < 0).all()
    assert not everything["pushable"].any()


def simple_book(ex: str, bid: float, ask: float, ts: datetime = NOW, size: float = 100.0) -> OrderBook:
    return OrderBook(ex, "BTC/USDT", ts, (Level(d(bid), d(size)),), (Level(d(ask), d(size)),))


def test_hand_case_and_latest_row_wins() -> None:
    older = simple_book("okx", 150.0, 151.0, ts=NOW - timedelta(milliseconds=500))
    books = [simple_book("binance", 99.0, 100.0), older, simple_book("okx", 101.0, 102.0)]
    got = detect_spreads(book_rows(books), FEES, (1000.0,), now_ms=NOW_MS)
    assert got.height == 1
    row = got.row(0, named=True)
    assert (row["buy_exchange"], row["sell_exchange"]) == ("binance", "okx")
    assert row["gross_bps"] == pytest.approx(100.0)
    assert row["net_bps"] == pytest.approx(0.799 / 100.1 * 10_000)
    assert row["flags"] == "" and row["pushable"]
    assert row["kind"] == "spot_spread"


def test_thresholds_freshness_and_arrow_batches() -> None:
    books = [simple_book("binance", 99.0, 100.0), simple_book("okx", 101.0, 102.0)]
    batch = book_rows(books).to_batches()[0]
    assert detect_spreads(batch, FEES, (1000.0,), now_ms=NOW_MS, min_gross_bps=150.0).height == 0
    flagged = detect_spreads(batch, FEES, (1000.0,), now_ms=NOW_MS, min_net_bps=100.0)
    assert flagged["flags"].to_list() == ["below_threshold"]
    assert detect_spreads(batch, FEES, (1000.0,), now_ms=NOW_MS + 2_001).height == 0
    assert detect_spreads(batch, FEES, (1000.0,), now_ms=NOW_MS + 2_001, freshness_s=3.0).height == 1


def test_swap_books_are_ignored_for_spot_and_empty_input() -> None:
    swap = [
        OrderBook(b.exchange, b.symbol, b.ts, b.bids, b.asks, market_type=b.market_type.SWAP)
        for b in [simple_book("binance", 99.0, 100.0), simple_book("okx", 101.0, 102.0)]
    ]
    assert detect_spreads(book_rows(swap), FEES, now_ms=NOW_MS).height == 0
    assert detect_spreads(book_rows(swap), FEES, now_ms=NOW_MS, market_types=("swap",)).height == 2
    empty = detect_spreads(ORDER_BOOKS.empty_table(), FEES, now_ms=NOW_MS)
    full = detect_spreads(book_rows(swap), FEES, now_ms=NOW_MS, market_types=("swap",))
    assert empty.height == 0 and empty.schema == full.schema
    assert full.schema["buy_ts"] == pl.Datetime("ms", "UTC")
    nothing = detect_funding(FUNDING_RATES.empty_table(), FEES, now_ms=NOW_MS)
    assert nothing.height == 0 and nothing.schema["long_next_funding"] == pl.Datetime("ms", "UTC")


def test_book_rejections() -> None:
    books = [
        simple_book("binance", 99.0, 100.0),
        simple_book("okx", 101.0, 100.0),
        simple_book("bybit", 99.0, 100.0, ts=NOW - timedelta(seconds=5)),
        OrderBook("kraken", "BTC/USDT", NOW, (), ()),
        OrderBook("somedex", "BTC/USDT", NOW, (Level(d(99.0), d(1.0)),), ()),
    ]
    got = {
        r["exchange"]: r["reason"] for r in book_rejections(book_rows(books), NOW_MS).iter_rows(named=True)
    }
    assert got == {
        "okx": "crossed_book",
        "bybit": "stale",
        "kraken": "empty_book",
        "somedex": "one_sided_book",
    }


def test_fee_table_fills_unknown_exchanges() -> None:
    given = pl.DataFrame(
        {"exchange": ["binance"], "market_type": ["spot"], "taker_fee": [0.0], "fee_is_default": [False]}
    )
    table = fee_table(given, ["binance", "okx"])
    spot = {r["exchange"]: r for r in table.filter(pl.col("market_type") == "spot").iter_rows(named=True)}
    assert spot["binance"]["taker_fee"] == 0.0 and not spot["binance"]["fee_is_default"]
    assert spot["okx"]["taker_fee"] == 0.001 and spot["okx"]["fee_is_default"]
    books = [simple_book("binance", 99.0, 100.0), simple_book("okx", 101.0, 102.0)]
    row = detect_spreads(book_rows(books), given, (1000.0,), now_ms=NOW_MS).row(0, named=True)
    assert row["flags"] == "default_fee"
    assert row["net_bps"] == pytest.approx((101.0 * 0.999 - 100.0) / 100.0 * 10_000)


# ----------------------------------------------------------------------------- funding


def random_funding(seed: int) -> list[FundingSnapshot]:
    rng = np.random.default_rng(seed)
    out = []
    for s in range(8):
        mark = float(np.exp(rng.uniform(0, 10)))
        for ex in EXCHANGES:
            interval = float(rng.choice([1.0, 4.0, 8.0]))
            if rng.random() < 0.05:
                interval = 0.0
            age_ms = int(rng.integers(-1_000, 70_000))
            has_mark = rng.random() > 0.15
            m = mark * (1 + rng.normal(0, 1e-3)) * (1.5 if (s == 1 and ex == "okx") else 1.0)
            out.append(
                FundingSnapshot(
                    exchange=ex,
                    symbol=f"S{s}/USDT:USDT",
                    ts=NOW - timedelta(milliseconds=age_ms),
                    funding_rate=d(float(rng.normal(1e-4, 3e-4))),
                    interval_hours=d(interval),
                    next_funding_ts=NOW + timedelta(minutes=int(rng.integers(1, 480))),
                    next_funding_rate=d(float(rng.normal(1e-4, 3e-4))) if rng.random() > 0.2 else None,
                    mark_price=d(m) if has_mark else None,
                )
            )
    return out


def funding_rows(snaps: list[FundingSnapshot]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "ts": s.ts,
                "recv_ts": s.ts,
                "exchange": s.exchange,
                "symbol": s.symbol,
                "funding_rate": float(s.funding_rate),
                "interval_hours": float(s.interval_hours),
                "rate_per_hour": float(s.funding_rate / s.interval_hours) if s.interval_hours else 0.0,
                "funding_ts": None,
                "next_funding_ts": s.next_funding_ts,
                "next_funding_rate": float(s.next_funding_rate) if s.next_funding_rate is not None else None,
                "mark_price": float(s.mark_price) if s.mark_price is not None else None,
                "index_price": None,
            }
            for s in snaps
        ],
        schema=FUNDING_RATES,
    )


@pytest.mark.parametrize(
    ("seed", "use_predicted", "credit"), [(1, False, False), (2, True, False), (3, False, True)]
)
def test_funding_vectorised_equals_core(seed: int, use_predicted: bool, credit: bool) -> None:
    snaps = random_funding(seed)
    expected: dict[tuple[str, str, str], FundingOpportunity] = {}
    for a, b in itertools.combinations(snaps, 2):
        if a.symbol != b.symbol:
            continue
        r = evaluate_funding(
            a, b, FEES, 5_000, NOW, use_predicted=use_predicted, credit_favourable_basis=credit
        )
        if isinstance(r, FundingOpportunity):
            expected[(r.symbol, r.buy_exchange, r.sell_exchange)] = r
    got = detect_funding(
        funding_rows(snaps),
        FEES,
        5_000.0,
        now_ms=NOW_MS,
        use_predicted=use_predicted,
        credit_favourable_basis=credit,
        min_spread_per_hour=None,
    )
    keys = {(r["symbol"], r["buy_exchange"], r["sell_exchange"]) for r in got.iter_rows(named=True)}
    assert keys == set(expected)
    assert len(keys) == got.height > 0
    for row in got.iter_rows(named=True):
        o = expected[(row["symbol"], row["buy_exchange"], row["sell_exchange"])]
        for col in (
            "long_rate_per_hour",
            "short_rate_per_hour",
            "spread_per_hour",
            "spread_per_day",
            "gross_apr",
            "fees",
            "basis_cost",
            "roundtrip_cost",
            "net_apr",
            "gross_bps",
            "net_bps",
        ):
            assert close(row[col], getattr(o, col), abs_=1e-12), (col, row[col], getattr(o, col))
        if o.entry_basis is None:
            assert row["entry_basis"] is None
        else:
            assert close(row["entry_basis"], o.entry_basis, abs_=1e-12)
        if o.breakeven_hours is None:
            assert row["breakeven_hours"] is None
        else:
            assert close(row["breakeven_hours"], o.breakeven_hours)
        assert row["rate_source"] == o.rate_source.value
        assert row["flags"] == o.flags_csv
        assert row["pushable"] == o.pushable
        assert row["long_next_funding"] == o.long_next_funding
        assert row["short_next_funding"] == o.short_next_funding
        age = NOW - min(
            expected_ts(snaps, o.symbol, o.buy_exchange), expected_ts(snaps, o.symbol, o.sell_exchange)
        )
        s = score(ScoreInputs(o.net_bps, 1, 1, max(age.total_seconds(), 0.0), 60.0), FUNDING_SCORING)
        assert close(row["confidence"], s.confidence, abs_=1e-9)


def expected_ts(snaps: list[FundingSnapshot], symbol: str, exchange: str) -> datetime:
    return next(s.ts for s in snaps if s.symbol == symbol and s.exchange == exchange)


def test_funding_intervals_hand_case() -> None:
    snaps = [
        FundingSnapshot("binance", "BTC/USDT:USDT", NOW, d(0.0001), d(8.0), mark_price=d(100.0)),
        FundingSnapshot("bybit", "BTC/USDT:USDT", NOW, d(0.00005), d(1.0), mark_price=d(100.0)),
    ]
    row = detect_funding(funding_rows(snaps), FEES, now_ms=NOW_MS).row(0, named=True)
    assert (row["buy_exchange"], row["sell_exchange"]) == ("binance", "bybit")
    assert row["spread_per_hour"] == pytest.approx(0.0000375)
    assert row["gross_apr"] == pytest.approx(0.3285)
    assert row["breakeven_hours"] == pytest.approx(56.0)
    assert row["net_bps"] == pytest.approx(42.0)
    assert row["kind"] == "funding_rate" and row["pushable"]


level_lists = st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0.001, 50.0)), min_size=1, max_size=8)


@st.composite
def hyp_book(draw: st.DrawFn, exchange: str) -> OrderBook:
    mid = draw(st.floats(1.0, 1000.0))
    half = mid * draw(st.floats(1e-5, 0.01))
    bids, asks = [], []
    px = mid - half
    for step, size in draw(level_lists):
        if px <= 0.001:
            break
        bids.append(Level(d(px), d(size)))
        px -= step
    px = mid + half
    for step, size in draw(level_lists):
        asks.append(Level(d(px), d(size)))
        px += step
    age_ms = draw(st.integers(0, 1_900))
    return OrderBook(exchange, "X/USDT", NOW - timedelta(milliseconds=age_ms), tuple(bids), tuple(asks))


def test_a_notional_far_above_the_book_fills_the_book_exactly() -> None:
    """Found by hypothesis: 32,769 USD against 0.00195 of one ask level used to cancel to a
    fill off by ``notional · eps`` (a VWAP 1.3e-9 away from the only price)."""

    def book(exchange: str, bid: str, ask: str, ask_size: str) -> OrderBook:
        return OrderBook(
            exchange,
            "X/USDT",
            NOW,
            (Level(Decimal(bid), Decimal("1.0")),),
            (Level(Decimal(ask), Decimal(ask_size)),),
        )

    books = [
        book("binance", "0.9921875", "1.0078125", "1.0"),
        book("okx", "0.9921875", "1.0078125", "1.0"),
        book("somedex", "0.99999", "1.00001", "0.001953125"),
    ]
    got = detect_spreads(book_rows(books), FEES, (32769.0,), now_ms=NOW_MS, min_gross_bps=None)
    row = got.filter(pl.col("buy_exchange") == "somedex").row(0, named=True)
    assert row["buy_vwap"] == 1.00001
    o = evaluate_spread("X/USDT", books[2], books[0], FEES, Decimal("32769"), NOW)
    assert isinstance(o, SpreadOpportunity) and close(row["executable_usd"], o.executable_usd)


@settings(max_examples=40, deadline=None)
@given(hyp_book("binance"), hyp_book("okx"), hyp_book("somedex"), st.floats(10.0, 100_000.0))
def test_vectorised_equals_core_hypothesis(a: OrderBook, b: OrderBook, c: OrderBook, notional: float) -> None:
    books = [a, b, c]
    got = detect_spreads(book_rows(books), FEES, (notional,), now_ms=NOW_MS, min_gross_bps=None)
    assert got.height == 6
    for row in got.iter_rows(named=True):
        buy = next(x for x in books if x.exchange == row["buy_exchange"])
        sell = next(x for x in books if x.exchange == row["sell_exchange"])
        o = evaluate_spread("X/USDT", buy, sell, FEES, d(notional), NOW)
        assert isinstance(o, SpreadOpportunity)
        assert close(row["buy_vwap"], o.buy_vwap) and close(row["sell_vwap"], o.sell_vwap)
        assert close(row["executable_usd"], o.executable_usd)
        assert close(row["net_bps"], o.net_bps, abs_=1e-5) and close(row["gross_bps"], o.gross_bps, abs_=1e-5)
        assert row["flags"] == o.flags_csv and row["pushable"] == o.pushable
