"""Normalisation of ccxt unified structures, fed by recorded exchange responses through ccxt."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from core.errors import MalformedRecord
from pipeline.normalise import (
    FundingRateBuilder,
    MarketBuilders,
    OrderBookBuilder,
    QuoteBuilder,
    market_type_of,
    normalise,
    parse_interval_hours,
)
from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS, QUOTES

RECV = 1_750_000_000_123  # receive time used throughout (ms)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _raw_levels(exchange: str, raw: dict[str, Any], side: str) -> list[list[str]]:
    """Price/size levels exactly as the exchange sent them (strings)."""
    if exchange == "binance":
        return raw[side]
    if exchange == "bybit":
        return raw["result"]["b" if side == "bids" else "a"]
    return raw["data"][0][side]  # okx


BOOK_CASES = [(ex, i) for ex in ("binance", "bybit", "okx") for i in range(2)]


@pytest.mark.parametrize(("exchange", "index"), BOOK_CASES)
def test_order_books_from_recorded_responses(recorded: Any, exchange: str, index: int) -> None:
    ex = recorded.sync_exchange(exchange)
    case = recorded.cases(exchange, "fetchOrderBook")[index]
    book = recorded.replay_case(ex, case)
    expected = case["parsedResponse"]
    symbol = expected["symbol"]
    market = ex.markets[symbol]

    builder = OrderBookBuilder(depth=20)
    builder.add(book, exchange=exchange, recv_ms=RECV, market=market)
    table = builder.take()
    assert table.schema == ORDER_BOOKS
    row = table.to_pylist()[0]

    assert row["exchange"] == exchange
    assert row["symbol"] == symbol
    assert row["market_type"] == market["type"] == market_type_of(symbol)
    assert _ms(row["recv_ts"]) == RECV
    assert _ms(row["ts"]) == (expected["timestamp"] if expected["timestamp"] is not None else RECV)
    assert row["nonce"] == expected["nonce"]
    scale = market["contractSize"] if market.get("contract") else 1
    for side in ("bids", "asks"):
        short = side[:3]
        assert row[f"{short}_px"] == [level[0] for level in expected[side]]
        assert row[f"{short}_sz"] == pytest.approx([level[1] * scale for level in expected[side]])
        raw = _raw_levels(exchange, case["httpResponse"], side)
        assert row[f"{short}_px"] == [float(level[0]) for level in raw]
        assert row[f"{short}_sz"] == pytest.approx([float(level[1]) * scale for level in raw])
    assert row["depth"] == len(expected["bids"])
    # best first: bids descending, asks ascending
    assert row["bid_px"] == sorted(row["bid_px"], reverse=True)
    assert row["ask_px"] == sorted(row["ask_px"])


def test_okx_swap_book_sizes_are_converted_from_contracts(recorded: Any) -> None:
    ex = recorded.sync_exchange("okx")
    case = recorded.cases("okx", "fetchOrderBook")[0]
    assert case["input"][0] == "BTC/USDT:USDT"
    book = recorded.replay_case(ex, case)
    assert ex.markets["BTC/USDT:USDT"]["contractSize"] == 0.01
    builder = OrderBookBuilder(depth=1)
    builder.add(book, exchange="okx", recv_ms=RECV, market=ex.markets["BTC/USDT:USDT"])
    row = builder.take().to_pylist()[0]
    # raw: ["43466.3", "13807", "0", "1"]: 13807 contracts of 0.01 BTC, truncated to 1 level
    assert row["bid_px"] == [43466.3]
    assert row["bid_sz"] == [pytest.approx(138.07)]
    assert row["ask_sz"] == [pytest.approx(148.81)]
    assert row["depth"] == 1
    # without the market the size passes through in ccxt's unit (contracts)
    builder.add(book, exchange="okx", recv_ms=RECV)
    assert builder.take().to_pylist()[0]["bid_sz"] == [13807.0]


TICKER_RAW = {
    "binance": lambda raw: (raw["bidPrice"], raw["askPrice"], raw["bidQty"], raw["askQty"]),
    "bybit": lambda raw: (
        raw["result"]["list"][0]["bid1Price"],
        raw["result"]["list"][0]["ask1Price"],
        raw["result"]["list"][0]["bid1Size"],
        raw["result"]["list"][0]["ask1Size"],
    ),
    "okx": lambda raw: (
        raw["data"][0]["bidPx"],
        raw["data"][0]["askPx"],
        raw["data"][0]["bidSz"],
        raw["data"][0]["askSz"],
    ),
}


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
def test_tickers_from_recorded_responses(recorded: Any, exchange: str) -> None:
    ex = recorded.sync_exchange(exchange)
    case = recorded.cases(exchange, "fetchTicker")[0]
    ticker = recorded.replay_case(ex, case)
    expected = case["parsedResponse"]
    symbol = expected["symbol"]

    builder = QuoteBuilder()
    builder.add(ticker, exchange=exchange, recv_ms=RECV, market=ex.markets[symbol])
    table = builder.take()
    assert table.schema == QUOTES
    row = table.to_pylist()[0]
    assert row["symbol"] == symbol
    assert row["market_type"] == market_type_of(symbol)
    assert _ms(row["ts"]) == (expected["timestamp"] if expected["timestamp"] is not None else RECV)
    assert _ms(row["recv_ts"]) == RECV
    assert row["bid"] == expected["bid"]
    assert row["ask"] == expected["ask"]
    assert row["bid_size"] == expected["bidVolume"]
    assert row["ask_size"] == expected["askVolume"]
    assert row["last"] == expected["last"]
    assert row["base_volume"] == expected["baseVolume"]
    assert row["quote_volume"] == expected["quoteVolume"]
    bid, ask, bid_size, ask_size = TICKER_RAW[exchange](case["httpResponse"])
    assert (row["bid"], row["ask"]) == (float(bid), float(ask))
    assert (row["bid_size"], row["ask_size"]) == (float(bid_size), float(ask_size))
    assert row["bid"] < row["ask"]


@pytest.mark.parametrize("method", ["fetchFundingRate", "fetchFundingRates"])
def test_bybit_funding_rates_from_recorded_responses(recorded: Any, method: str) -> None:
    ex = recorded.sync_exchange("bybit")
    case = recorded.cases("bybit", method)[0]
    result = recorded.replay_case(ex, case)
    rates = list(result.values()) if method == "fetchFundingRates" else [result]
    expected = case["parsedResponse"]
    expected = expected["BTC/USDT:USDT"] if method == "fetchFundingRates" else expected
    raw = case["httpResponse"]["result"]["list"][0]

    builder = FundingRateBuilder()
    for rate in rates:
        builder.add(rate, exchange="bybit", recv_ms=RECV)
    table = builder.take()
    assert table.schema == FUNDING_RATES
    row = table.to_pylist()[0]
    assert row["symbol"] == "BTC/USDT:USDT"
    assert row["funding_rate"] == expected["fundingRate"] == float(raw["fundingRate"])
    assert expected["interval"] == "8h"  # from the market's fundingInterval (480 minutes)
    assert row["interval_hours"] == 8.0
    assert row["rate_per_hour"] == pytest.approx(0.0001 / 8)
    assert _ms(row["ts"]) == expected["timestamp"]
    assert _ms(row["funding_ts"]) == expected["fundingTimestamp"] == int(raw["nextFundingTime"])
    assert _ms(row["next_funding_ts"]) == int(raw["nextFundingTime"])
    assert row["next_funding_rate"] is None
    assert row["mark_price"] == float(raw["markPrice"])
    assert row["index_price"] == float(raw["indexPrice"])
    assert builder.stats["interval_assumed"] == 0


def test_okx_funding_rate_through_ccxt_parser(recorded: Any) -> None:
    ex = recorded.sync_exchange("okx")
    raw = recorded.load_json(recorded.raw_dir / "okx" / "nautilus_v5_ws_funding_rate.json")["data"][0]
    rate = ex.parse_funding_rate(raw, ex.markets["BTC/USDT:USDT"])
    assert rate["interval"] == "8h"  # ccxt derives it from nextFundingTime - fundingTime

    builder = FundingRateBuilder()
    builder.add(rate, exchange="okx", recv_ms=RECV)
    row = builder.take().to_pylist()[0]
    assert row["symbol"] == "BTC/USDT:USDT"
    assert row["funding_rate"] == float(raw["fundingRate"]) == 0.0001
    assert row["next_funding_rate"] == float(raw["nextFundingRate"]) == 0.0002
    assert row["interval_hours"] == 8.0
    assert row["rate_per_hour"] == pytest.approx(0.0001 / 8)
    assert _ms(row["funding_ts"]) == int(raw["fundingTime"])
    assert _ms(row["ts"]) == RECV  # ccxt gives no timestamp for this structure
    # fundingTime is the upcoming settlement (ts <= recv), so it is the next funding
    assert _ms(row["next_funding_ts"]) == int(raw["nextFundingTime"])


def test_binance_premium_index_through_ccxt_parser(recorded: Any) -> None:
    ex = recorded.sync_exchange("binance")
    raw = recorded.load_json(recorded.raw_dir / "binance" / "nautilus_usdm_premiumIndex_BTCUSDT_docs.json")
    rate = ex.parse_funding_rate(raw, ex.markets["BTC/USDT:USDT"])
    assert rate["interval"] is None  # premiumIndex carries no interval

    builder = FundingRateBuilder()
    builder.add(rate, exchange="binance", recv_ms=RECV)
    row = builder.take().to_pylist()[0]
    assert row["funding_rate"] == float(raw["lastFundingRate"])
    assert _ms(row["ts"]) == raw["time"]
    assert _ms(row["funding_ts"]) == raw["nextFundingTime"]
    assert _ms(row["next_funding_ts"]) == raw["nextFundingTime"]
    assert row["mark_price"] == float(raw["markPrice"])
    assert row["interval_hours"] == 8.0
    assert builder.stats["interval_assumed"] == 1  # recorded, not silent

    # a known interval (e.g. from fetch_funding_intervals) wins over the assumption
    hinted = FundingRateBuilder({("binance", "BTC/USDT:USDT"): 4.0})
    hinted.add(rate, exchange="binance", recv_ms=RECV)
    row = hinted.take().to_pylist()[0]
    assert row["interval_hours"] == 4.0
    assert row["rate_per_hour"] == pytest.approx(float(raw["lastFundingRate"]) / 4)
    assert hinted.stats["interval_assumed"] == 0


def _funding(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "symbol": "ETH/USDT:USDT",
        "fundingRate": 0.0004,
        "timestamp": 1_700_000_000_000,
        "fundingTimestamp": 1_700_000_400_000,
        "nextFundingTimestamp": None,
        "interval": None,
    }
    base.update(overrides)
    return base


def test_funding_interval_inferred_from_timestamps_not_assumed() -> None:
    builder = FundingRateBuilder()
    builder.add(
        _funding(nextFundingTimestamp=1_700_000_400_000 + 4 * 3_600_000),
        exchange="x",
        recv_ms=RECV,
    )
    row = builder.take().to_pylist()[0]
    assert row["interval_hours"] == 4.0
    assert row["rate_per_hour"] == pytest.approx(0.0001)
    assert builder.stats == {"rows": 1, "malformed": 0, "interval_inferred": 1, "interval_assumed": 0}


@pytest.mark.parametrize(
    ("value", "hours"),
    [("8h", 8.0), ("4h", 4.0), ("1h", 1.0), ("480m", 8.0), ("1d", 24.0), (8, 8.0), (0.5, 0.5),
     ("28800000", 8.0), ("43200000", 12.0), (None, None), ("", None)],
)  # fmt: skip
def test_parse_interval_hours(value: Any, hours: float | None) -> None:
    assert parse_interval_hours(value) == hours


@pytest.mark.parametrize("value", ["eight hours", "8x", "0h", -1, True, [8]])
def test_parse_interval_hours_rejects(value: Any) -> None:
    with pytest.raises(MalformedRecord):
        parse_interval_hours(value)


def test_funding_interval_string_is_honoured() -> None:
    builder = FundingRateBuilder()
    builder.add(_funding(interval="1h"), exchange="x", recv_ms=RECV)
    assert builder.take().to_pylist()[0]["interval_hours"] == 1.0


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [
        ("BTC/USDT", "spot"),
        ("BTC/USDT:USDT", "swap"),
        ("BTC/USD:BTC", "swap"),
        ("BTC/USDT:USDT-240329", "future"),
        ("BTC/USD:BTC-250627", "future"),
    ],
)
def test_market_type_of_symbol(symbol: str, kind: str) -> None:
    assert market_type_of(symbol) == kind


def test_market_type_prefers_the_market() -> None:
    assert market_type_of("ODD", {"type": "swap"}) == "swap"
    assert market_type_of("BTC/USDT", {"type": "margin"}) == "spot"


GOOD_BOOK = {"symbol": "BTC/USDT", "bids": [[100.0, 1.0]], "asks": [[101.0, 2.0]], "timestamp": 5, "nonce": 9}
GOOD_TICKER = {"symbol": "BTC/USDT", "bid": 100.0, "ask": 101.0, "timestamp": 5}


@pytest.mark.parametrize(
    ("kind", "record", "message"),
    [
        ("order_book", {**GOOD_BOOK, "symbol": None}, "no symbol"),
        ("order_book", {**GOOD_BOOK, "bids": "nope"}, "bids is not a list"),
        ("order_book", {**GOOD_BOOK, "asks": [[101.0]]}, "not [price, size"),
        ("order_book", {**GOOD_BOOK, "bids": [["abc", 1.0]]}, "not a finite number"),
        ("order_book", {**GOOD_BOOK, "timestamp": "yesterday"}, "epoch-ms"),
        ("order_book", [1, 2], "not an object"),
        ("ticker", {**GOOD_TICKER, "bid": "abc"}, "bid is not a finite number"),
        ("ticker", {**GOOD_TICKER, "ask": float("nan")}, "not a finite number"),
        ("ticker", {**GOOD_TICKER, "bid": True}, "not a finite number"),
        ("ticker", {"bid": 1.0}, "no symbol"),
        ("funding_rate", _funding(fundingRate=None), "no fundingRate"),
        ("funding_rate", _funding(interval="soon"), "not a duration"),
        ("ticks", GOOD_TICKER, "unknown record kind"),
    ],
)
def test_malformed_records_raise_clearly(kind: str, record: Any, message: str) -> None:
    builders = MarketBuilders(depth=5)
    with pytest.raises(MalformedRecord, match=re.escape(message)):
        builders.add(kind, record, exchange="binance", recv_ms=RECV)
    assert len(builders) == 0  # nothing half-written


def test_bad_record_is_skipped_and_counted_not_the_batch() -> None:
    builders = MarketBuilders(depth=5)
    assert builders.try_add("order_book", GOOD_BOOK, exchange="binance", recv_ms=RECV)
    assert not builders.try_add("order_book", {**GOOD_BOOK, "bids": None}, exchange="binance", recv_ms=RECV)
    assert builders.try_add("ticker", GOOD_TICKER, exchange="binance", recv_ms=RECV)
    assert not builders.try_add("ticker", {"symbol": ""}, exchange="binance", recv_ms=RECV)
    batch = builders.take_batch(clock_ms=RECV)
    assert batch.clock_ms == RECV
    assert batch.get("order_books").num_rows == 1
    assert batch.get("quotes").num_rows == 1
    assert batch.get("funding_rates").num_rows == 0
    assert "funding_rates" not in batch.tables
    assert builders.stats["order_books.malformed"] == 1
    assert builders.stats["quotes.malformed"] == 1
    assert len(builders) == 0


def test_levels_with_more_than_two_elements_and_numeric_strings() -> None:
    builder = OrderBookBuilder(depth=2)
    book = {
        "symbol": "BTC/USDT:USDT",
        "bids": [["10.5", "3", "0", "1"], [10.4, 1, 0], [10.3, 9]],
        "asks": [[10.6, 2.5, 0, 4]],
        "timestamp": None,
        "nonce": None,
    }
    builder.add(book, exchange="okx", recv_ms=RECV)
    row = builder.take().to_pylist()[0]
    assert row["bid_px"] == [10.5, 10.4] and row["bid_sz"] == [3.0, 1.0]
    assert row["ask_px"] == [10.6] and row["ask_sz"] == [2.5]
    assert row["depth"] == 2
    assert row["market_type"] == "swap"
    assert row["ts"] == datetime.fromtimestamp(RECV / 1000, tz=UTC)


def test_take_empties_and_timestamps_are_utc_ms() -> None:
    builder = QuoteBuilder()
    for i in range(1000):
        ticker = copy.copy(GOOD_TICKER)
        ticker["timestamp"] = 1_700_000_000_000 + i
        builder.add(ticker, exchange="bybit", recv_ms=RECV)
    table = builder.take()
    assert table.num_rows == 1000
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.column("ts")[0].as_py() == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert len(builder) == 0 and builder.take().num_rows == 0


def test_normalise_one_shot_reports_errors() -> None:
    errors: list[int] = []
    table = normalise(
        "ticker",
        [GOOD_TICKER, {"symbol": 3}, GOOD_TICKER],
        exchange="okx",
        recv_ms=RECV,
        on_error=lambda i, exc: errors.append(i),
    )
    assert table.num_rows == 2 and errors == [1]
    with pytest.raises(MalformedRecord):
        normalise("ticker", [{"symbol": 3}], exchange="okx", recv_ms=RECV)
