"""CcxtMarketSource offline: ccxt's real request + parse path answered by recorded exchange bytes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import ccxt
import pytest

from core.errors import (
    BadExchangeResponse,
    ExchangeRateLimited,
    ExchangeUnavailable,
    SymbolNotListed,
)
from core.ports import MarketSource
from core.settings import MarketSettings
from pipeline.schemas import MarketBatch
from pipeline.sources.live import CcxtMarketSource, map_ccxt_error

Route = tuple[tuple[str, ...], Any]


def router(routes: list[Route]) -> Callable[[str, str], Any]:
    """Answer the first route whose every needle is in the URL; unknown URLs fail the test."""

    def answer(url: str, method: str) -> Any:
        for needles, response in routes:
            if all(n in url for n in needles):
                if isinstance(response, BaseException):
                    raise response
                return response
        raise AssertionError(f"unexpected request {method} {url}")

    return answer


class FakeTime:
    """Monotonic clock advanced by the source's own sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def settings(**overrides: Any) -> MarketSettings:
    values: dict[str, Any] = {"websockets": False, "poll_interval_s": 1.0, "order_book_depth": 20}
    values.update(overrides)
    return MarketSettings(**values)


async def first_batches(source: CcxtMarketSource, n: int = 1) -> list[MarketBatch]:
    out: list[MarketBatch] = []
    try:
        async with asyncio.timeout(20):
            async for batch in source.batches():
                out.append(batch)
                if len(out) >= n:
                    break
    finally:
        await source.close()
    return out


async def test_bybit_rest_poll_books_tickers_funding(recorded: Any) -> None:
    book = recorded.cases("bybit", "fetchOrderBook")[0]
    assert book["input"][0] == "BTC/USDT:USDT"
    tickers = recorded.cases("bybit", "fetchFundingRates")[0]  # a raw /v5/market/tickers response
    ex = recorded.async_exchange(
        "bybit",
        router(
            [
                (("/v5/market/orderbook", "category=linear"), book["httpResponse"]),
                (("/v5/market/tickers", "category=linear"), tickers["httpResponse"]),
            ]
        ),
    )
    fake = FakeTime()
    source = CcxtMarketSource(
        "bybit",
        ["BTC/USDT:USDT", "DOGE/USDT"],
        settings(),
        fees={"bybit": {"spot_taker": 0.002}},
        exchange=ex,
        clock=fake.clock,
        sleep=fake.sleep,
        wall_ms=lambda: 1_730_730_000_000,
    )
    assert isinstance(source, MarketSource)
    (batch,) = await first_batches(source)

    assert source.symbols == ["BTC/USDT:USDT"]  # DOGE/USDT is not listed: dropped, no crash
    assert source.stats["dropped_symbols"] == 1
    assert source.fees["swap"] == 0.0006  # from the recorded market's taker
    assert source.fees["spot"] == 0.002  # Settings.fees override
    assert batch.clock_ms == 1_730_730_000_000

    (ob,) = batch.get("order_books").to_pylist()
    expected = book["parsedResponse"]
    assert ob["symbol"] == "BTC/USDT:USDT" and ob["market_type"] == "swap"
    assert ob["bid_px"] == [lvl[0] for lvl in expected["bids"]]
    assert ob["ask_sz"] == [lvl[1] for lvl in expected["asks"]]
    assert int(ob["ts"].timestamp() * 1000) == expected["timestamp"]
    assert int(ob["recv_ts"].timestamp() * 1000) == 1_730_730_000_000

    raw = tickers["httpResponse"]["result"]["list"][0]
    (quote,) = batch.get("quotes").to_pylist()
    assert (quote["bid"], quote["ask"]) == (float(raw["bid1Price"]), float(raw["ask1Price"]))
    assert quote["bid_size"] == float(raw["bid1Size"])

    (funding,) = batch.get("funding_rates").to_pylist()
    assert funding["funding_rate"] == float(raw["fundingRate"])
    assert funding["interval_hours"] == 8.0
    assert int(funding["next_funding_ts"].timestamp() * 1000) == int(raw["nextFundingTime"])
    assert any("orderbook" in u and "limit=20" in u for u in ex.requested_urls)


async def test_okx_spot_and_swap_with_contract_sizes(recorded: Any) -> None:
    books = {c["input"][0]: c for c in recorded.cases("okx", "fetchOrderBook")}
    ticker = recorded.cases("okx", "fetchTicker")[0]
    funding_push = recorded.load_json(recorded.raw_dir / "okx" / "nautilus_v5_ws_funding_rate.json")
    funding_rest = {"code": "0", "msg": "", "data": funding_push["data"]}  # same fields as REST
    ex = recorded.async_exchange(
        "okx",
        router(
            [
                (("/market/books", "instId=BTC-USDT-SWAP"), books["BTC/USDT:USDT"]["httpResponse"]),
                (("/market/books", "instId=BTC-USDT"), books["BTC/USDT"]["httpResponse"]),
                (("/market/tickers", "instType=SPOT"), ticker["httpResponse"]),
                (("/market/tickers", "instType=SWAP"), {"code": "0", "msg": "", "data": []}),
                (("/public/funding-rate",), funding_rest),
            ]
        ),
    )
    fake = FakeTime()
    source = CcxtMarketSource(
        "okx", ["BTC/USDT", "BTC/USDT:USDT"], settings(), exchange=ex, clock=fake.clock, sleep=fake.sleep
    )
    (batch,) = await first_batches(source)
    books_rows = {r["symbol"]: r for r in batch.get("order_books").to_pylist()}
    # 13807 contracts of 0.01 BTC
    assert books_rows["BTC/USDT:USDT"]["bid_sz"][0] == pytest.approx(138.07)
    assert books_rows["BTC/USDT"]["bid_sz"][0] == 0.05
    (quote,) = batch.get("quotes").to_pylist()
    assert quote["symbol"] == "BTC/USDT" and quote["bid"] == 73384.7
    (funding,) = batch.get("funding_rates").to_pylist()
    assert funding["symbol"] == "BTC/USDT:USDT"
    assert funding["next_funding_rate"] == 0.0002
    assert funding["interval_hours"] == 8.0


async def test_binance_spot_and_usdm_with_funding(recorded: Any) -> None:
    books = {c["input"][0]: c for c in recorded.cases("binance", "fetchOrderBook")}
    ticker = recorded.cases("binance", "fetchTicker")[0]
    raw = recorded.raw_dir / "binance"
    premium = recorded.load_json(raw / "nautilus_usdm_premiumIndex_BTCUSDT_docs.json")
    usdm_ticker = recorded.load_json(raw / "nautilus_usdm_ticker24hr_docs.json")
    ex = recorded.async_exchange(
        "binance",
        router(
            [
                (("/fapi/v1/depth",), books["BTC/USDT:USDT"]["httpResponse"]),
                (("/api/v3/depth",), books["BTC/USDT"]["httpResponse"]),
                (("/api/v3/ticker/24hr",), [ticker["httpResponse"]]),
                (("/fapi/v1/ticker/24hr",), [usdm_ticker]),
                (("/fapi/v1/premiumIndex",), [premium]),
                (("/fapi/v1/fundingInfo",), []),
            ]
        ),
    )
    fake = FakeTime()
    source = CcxtMarketSource(
        "binance", ["BTC/USDT", "BTC/USDT:USDT"], settings(), exchange=ex, clock=fake.clock, sleep=fake.sleep
    )
    (batch,) = await first_batches(source)
    assert {r["symbol"] for r in batch.get("order_books").to_pylist()} == {"BTC/USDT", "BTC/USDT:USDT"}
    quotes = {r["symbol"]: r for r in batch.get("quotes").to_pylist()}
    assert quotes["BTC/USDT"]["bid"] == 73369.83
    assert quotes["BTC/USDT:USDT"]["last"] == 4.000002  # docs example values
    (funding,) = batch.get("funding_rates").to_pylist()
    assert funding["funding_rate"] == 0.00038246
    assert source.builder_stats["funding_rates.interval_assumed"] == 1
    assert source.fees == {"spot": 0.001, "swap": 0.0004, "future": 0.0004}


async def test_network_errors_back_off_open_the_breaker_and_recover(recorded: Any) -> None:
    book = recorded.cases("bybit", "fetchOrderBook")[0]
    tickers = recorded.cases("bybit", "fetchFundingRates")[0]
    failures = {"left": 6}
    healthy = router(
        [
            (("/v5/market/orderbook",), book["httpResponse"]),
            (("/v5/market/tickers",), tickers["httpResponse"]),
        ]
    )

    def flaky(url: str, method: str) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ccxt.NetworkError("bybit GET " + url + " Connection reset by peer")
        return healthy(url, method)

    ex = recorded.async_exchange("bybit", flaky)
    fake = FakeTime()
    source = CcxtMarketSource(
        "bybit",
        ["BTC/USDT:USDT"],
        settings(breaker_failures=3, breaker_reset_s=30.0, max_backoff_s=8.0),
        exchange=ex,
        clock=fake.clock,
        sleep=fake.sleep,
        rng=random.Random(1),
    )
    batches = await first_batches(source, n=2)

    assert all(b.get("order_books").num_rows == 1 for b in batches)  # resumed after recovery
    assert source.stats["errors"] == 6
    assert source.breaker.times_opened >= 1
    assert source.stats["breaker_waits"] >= 1
    # backoff delays grow (0.5, 1, 2 … before jitter) and waits for the breaker's reset window
    backoffs = fake.sleeps[:3]
    assert 0.25 <= backoffs[0] <= 0.5 and 0.5 <= backoffs[1] <= 1.0 and 1.0 <= backoffs[2] <= 2.0
    assert sum(fake.sleeps) >= 30.0  # the breaker's reset window was waited out
    assert source.breaker.consecutive_failures == 0


async def test_bad_symbol_at_runtime_drops_the_symbol(recorded: Any) -> None:
    book = recorded.cases("bybit", "fetchOrderBook")[0]
    tickers = recorded.cases("bybit", "fetchFundingRates")[0]
    ex = recorded.async_exchange(
        "bybit",
        router(
            [
                (("/v5/market/orderbook", "symbol=ETHUSDT"), ccxt.BadSymbol("bybit symbol delisted")),
                (("/v5/market/orderbook", "symbol=BTCUSDT"), book["httpResponse"]),
                (("/v5/market/tickers",), tickers["httpResponse"]),
            ]
        ),
    )
    fake = FakeTime()
    source = CcxtMarketSource(
        "bybit",
        ["BTC/USDT:USDT", "ETH/USDT:USDT"],
        settings(),
        exchange=ex,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    (batch,) = await first_batches(source)
    assert source.symbols == ["BTC/USDT:USDT"]
    assert source.stats["dropped_symbols"] == 1
    assert [r["symbol"] for r in batch.get("order_books").to_pylist()] == ["BTC/USDT:USDT"]
    assert batch.get("quotes").num_rows == 1


async def test_source_ends_when_every_symbol_is_dropped(recorded: Any) -> None:
    ex = recorded.async_exchange("bybit", router([(("/v5/market/",), ccxt.BadSymbol("bybit gone"))]))
    fake = FakeTime()
    source = CcxtMarketSource(
        "bybit", ["BTC/USDT:USDT", "NOPE/USDT"], settings(), exchange=ex, clock=fake.clock, sleep=fake.sleep
    )
    assert await first_batches(source, n=5) == []
    assert source.symbols == []
    assert source.stats["dropped_symbols"] == 2


async def test_websocket_loop_ingests_watched_structures(recorded: Any) -> None:
    """The watch loops of the source, fed the recorded parsed structures a pro exchange returns."""
    from pipeline.ccxt_offline import offline_exchange

    ex = offline_exchange("bybit", recorded.markets_path("bybit"), flavour="pro")
    book = recorded.cases("bybit", "fetchOrderBook")[0]["parsedResponse"]
    ticker = recorded.cases("bybit", "fetchTicker")[0]["parsedResponse"]
    tickers_raw = recorded.cases("bybit", "fetchFundingRates")[0]["httpResponse"]

    async def watch_order_book(symbol: str, limit: int | None = None) -> Any:
        await asyncio.sleep(0.01)
        return book

    async def watch_tickers(symbols: list[str]) -> Any:
        await asyncio.sleep(0.01)
        return {ticker["symbol"]: ticker}

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        return tickers_raw

    ex.watch_order_book = watch_order_book
    ex.watch_tickers = watch_tickers
    ex.fetch = fetch
    source = CcxtMarketSource("bybit", ["BTC/USDT:USDT"], settings(websockets=True), exchange=ex)
    batches = await first_batches(source, n=3)
    assert source.use_websockets
    assert sum(b.get("order_books").num_rows for b in batches) >= 1
    assert sum(b.get("quotes").num_rows for b in batches) >= 1
    assert sum(b.get("funding_rates").num_rows for b in batches) >= 1


@pytest.mark.parametrize(
    ("error", "mapped", "retryable"),
    [
        (ccxt.NetworkError("x"), ExchangeUnavailable, True),
        (ccxt.RequestTimeout("x"), ExchangeUnavailable, True),
        (ccxt.ExchangeNotAvailable("x"), ExchangeUnavailable, True),
        (ccxt.OnMaintenance("x"), ExchangeUnavailable, True),
        (ccxt.DDoSProtection("x"), ExchangeUnavailable, True),
        (ccxt.RateLimitExceeded("x"), ExchangeRateLimited, True),
        (ccxt.BadSymbol("x"), SymbolNotListed, False),
        (ccxt.BadResponse("x"), BadExchangeResponse, False),
        (ccxt.NullResponse("x"), BadExchangeResponse, False),
        (KeyError("bids"), BadExchangeResponse, False),
    ],
)
def test_ccxt_errors_map_to_core_errors(error: Exception, mapped: type, retryable: bool) -> None:
    result = map_ccxt_error("okx", error)
    assert type(result) is mapped
    assert result.retryable is retryable
    assert result.exchange == "okx"


async def test_a_failing_producer_is_restarted_not_fatal(recorded: Any) -> None:
    """A producer that raises something unexpected is restarted with backoff (main: the source died)."""
    from pipeline.ccxt_offline import offline_exchange

    ex = offline_exchange("bybit", recorded.markets_path("bybit"), flavour="pro")
    book = recorded.cases("bybit", "fetchOrderBook")[0]["parsedResponse"]
    tickers_raw = recorded.cases("bybit", "fetchFundingRates")[0]["httpResponse"]
    calls = {"n": 0}

    async def watch_order_book(symbol: str, limit: int | None = None) -> Any:
        calls["n"] += 1
        await asyncio.sleep(0.01)
        if calls["n"] == 2:
            raise RuntimeError("a bug in a parser")  # not a ccxt error: escapes _call
        return book

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        return tickers_raw

    ex.watch_order_book = watch_order_book
    ex.fetch = fetch
    ex.has["watchTickers"] = ex.has["watchTicker"] = False
    source = CcxtMarketSource("bybit", ["BTC/USDT:USDT"], settings(websockets=True), exchange=ex)
    batches = await first_batches(source, n=4)
    assert sum(b.get("order_books").num_rows for b in batches) >= 2  # books before and after
    assert source.stats["restarts"] == 1 and calls["n"] >= 3


async def test_a_source_that_cannot_start_keeps_retrying(recorded: Any) -> None:
    """Markets failing longer than the load retries: the source waits it out (main: it raised)."""
    book = recorded.cases("bybit", "fetchOrderBook")[0]
    tickers = recorded.cases("bybit", "fetchFundingRates")[0]
    down = {"left": 7}
    healthy = router(
        [
            (("/v5/market/orderbook",), book["httpResponse"]),
            (("/v5/market/tickers",), tickers["httpResponse"]),
        ]
    )

    ex = recorded.async_exchange("bybit", healthy)
    saved = ex.markets

    async def load_markets(reload: bool = False, params: Any = None) -> Any:
        if down["left"] > 0:
            down["left"] -= 1
            raise ccxt.ExchangeNotAvailable("bybit 503 maintenance")
        return saved

    ex.load_markets = load_markets
    fake = FakeTime()
    source = CcxtMarketSource(
        "bybit", ["BTC/USDT:USDT"], settings(), exchange=ex, clock=fake.clock, sleep=fake.sleep,
        market_load_attempts=2,
    )  # fmt: skip
    (batch,) = await first_batches(source)
    assert batch.get("order_books").num_rows == 1
    assert source.stats["start_failures"] >= 2
