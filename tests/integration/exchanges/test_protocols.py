"""Real ccxt / ccxt.pro clients against the emulated binance, bybit and okx protocols."""

from __future__ import annotations

import asyncio

import pytest

from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import SYMBOLS, pro_client

pytestmark = pytest.mark.timeout(90)

WATCH_S = 20.0
"""Longer than the sim's stale feeds (at most 12 s), when a venue sends no book update."""

BOOK_LIMIT = {"binance": 20, "bybit": 50, "okx": 400}
"""A depth each exchange's websocket accepts without keys (ccxt.pro's own rules)."""


@pytest.mark.parametrize(
    "name",
    ["binance", "bybit", "okx"],
)
async def test_rest_markets_books_tickers_funding(emulators: Exchanges, name: str) -> None:
    client = pro_client(emulators, name)
    try:
        markets = await client.load_markets()
        assert set(SYMBOLS) <= set(markets)
        for symbol in ("BTC/USDT", "BTC/USDT:USDT"):
            book = await client.fetch_order_book(symbol, 20)
            assert 0 < len(book["bids"]) <= 20 and book["bids"][0][0] < book["asks"][0][0]
            tickers = await client.fetch_tickers([symbol])
            assert symbol in tickers
        spot = (await client.fetch_tickers(["ETH/USDT"]))["ETH/USDT"]
        assert spot["bid"] is not None and spot["bid"] < spot["ask"]
        rates = await client.fetch_funding_rates(["BTC/USDT:USDT", "ETH/USDT:USDT"])
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(rates)
        assert all(abs(r["fundingRate"]) < 0.01 for r in rates.values())
    finally:
        await client.close()


@pytest.mark.parametrize("name", ["binance", "bybit", "okx"])
async def test_websocket_books_follow_the_sequence_rules(emulators: Exchanges, name: str) -> None:
    client = pro_client(emulators, name)
    try:
        for symbol in ("BTC/USDT", "BTC/USDT:USDT"):
            nonces = []
            for _ in range(8):  # ccxt.pro raises on a hole in the update ids (binance, okx)
                book = await asyncio.wait_for(client.watch_order_book(symbol, BOOK_LIMIT[name]), WATCH_S)
                assert book["bids"][0][0] < book["asks"][0][0]
                nonces.append(book["nonce"])
            if name != "bybit":
                assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
            # the streamed book is the exchange's book: the top matches a REST snapshot closely
            # (the stream's top just before or just after it: the sim's collisions move a
            # venue's price tenfold at their start and end, never twice within a second)
            before = book["bids"][0][0]
            rest = (await client.fetch_order_book(symbol, 5))["bids"][0][0]
            after = (await asyncio.wait_for(client.watch_order_book(symbol, BOOK_LIMIT[name]), WATCH_S))[
                "bids"
            ][0][0]
            assert min(abs(rest / before - 1), abs(rest / after - 1)) < 0.01, (before, rest, after)
    finally:
        await client.close()


@pytest.mark.parametrize("name", ["binance", "bybit", "okx"])
async def test_websocket_tickers(emulators: Exchanges, name: str) -> None:
    client = pro_client(emulators, name)
    try:
        for symbol in ("ETH/USDT", "ETH/USDT:USDT"):
            tickers = await asyncio.wait_for(client.watch_tickers([symbol]), WATCH_S)
            assert symbol in tickers and tickers[symbol]["last"] is not None
    finally:
        await client.close()


async def test_okx_funding_rate_stream(emulators: Exchanges) -> None:
    client = pro_client(emulators, "okx")
    try:
        rate = await asyncio.wait_for(client.watch_funding_rate("BTC/USDT:USDT"), WATCH_S)
        assert rate["symbol"] == "BTC/USDT:USDT" and rate["interval"] == "8h"
    finally:
        await client.close()


async def test_depths_the_exchanges_refuse(emulators: Exchanges) -> None:
    """What the live source must work around: bybit refuses depth 20, okx's 50 needs keys."""
    import ccxt

    bybit, okx = pro_client(emulators, "bybit"), pro_client(emulators, "okx")
    try:
        with pytest.raises(ccxt.BadRequest):
            await bybit.watch_order_book("BTC/USDT", 20)
        with pytest.raises(ccxt.AuthenticationError):
            await okx.watch_order_book("BTC/USDT", 50)
    finally:
        await bybit.close()
        await okx.close()


async def test_the_venues_carry_the_sim_markets_prices(emulators: Exchanges) -> None:
    """All three quote one market: BTC mids agree within the sim's basis and windows.

    The sim also injects ticker collisions (one venue quotes another asset under the symbol,
    3-50x the price, 2 a minute for 5-30 s on a random symbol and venue): one venue may be
    in one now, so two of the three agreeing with their median is what "one market" means."""
    mids = {}
    for name in ("binance", "bybit", "okx"):
        client = pro_client(emulators, name)
        try:
            book = await client.fetch_order_book("BTC/USDT:USDT", 5)
            mids[name] = (book["bids"][0][0] + book["asks"][0][0]) / 2
        finally:
            await client.close()
    median = sorted(mids.values())[1]
    agreeing = [name for name, mid in mids.items() if abs(mid / median - 1) < 0.05]
    assert len(agreeing) >= 2, mids
