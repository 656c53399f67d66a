"""The real live source (ccxt + ccxt.pro, unchanged) against the exchange emulators."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pipeline.schemas import MarketBatch
from pipeline.sources.factory import build_source
from pipeline.sources.live import CcxtMarketSource
from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import live_settings

pytestmark = pytest.mark.timeout(120)

DATASETS = ("quotes", "order_books", "funding_rates")


async def collect(source: Any, seconds: float, until: Any = None) -> dict[str, list[dict[str, Any]]]:
    """Rows per dataset the source yields within ``seconds`` (or until ``until(rows)``)."""
    rows: dict[str, list[dict[str, Any]]] = {d: [] for d in DATASETS}

    async def run() -> None:
        batch: MarketBatch
        async for batch in source.batches():
            for dataset in DATASETS:
                rows[dataset] += batch.get(dataset).to_pylist()
            if until is not None and until(rows):
                return

    try:
        await asyncio.wait_for(run(), seconds)
    except TimeoutError:
        pass
    finally:
        await source.close()
    return rows


def every_kind(rows: dict[str, list[dict[str, Any]]]) -> bool:
    return all(rows[d] for d in DATASETS)


@pytest.mark.parametrize("websockets", [True, False], ids=["websockets", "rest"])
async def test_books_tickers_and_funding_arrive_from_all_three(
    emulators: Exchanges, websockets: bool
) -> None:
    settings = live_settings(emulators, websockets=websockets, poll_interval_s=0.5)
    sources = {name: build_source(settings, name, "live") for name in ("binance", "bybit", "okx")}
    assert all(isinstance(s, CcxtMarketSource) for s in sources.values())
    results = await asyncio.gather(*(collect(s, 40, every_kind) for s in sources.values()))
    for name, rows in zip(sources, results, strict=True):
        assert every_kind(rows), (name, {d: len(r) for d, r in rows.items()})
        books = rows["order_books"]
        assert {r["exchange"] for r in books} == {name}
        # (a symbol the sim holds in a stale-feed event may have no book yet: empty is allowed)
        bad = [
            r
            for r in books
            if r["bid_px"] and not (len(r["bid_px"]) <= 20 and r["bid_px"][0] < r["ask_px"][0])
        ]
        assert any(r["bid_px"] for r in books)
        assert not bad, [(r["symbol"], r["bid_px"][:3], r["ask_px"][:3]) for r in bad[:3]]
        assert {r["symbol"] for r in rows["funding_rates"]} <= {"BTC/USDT:USDT", "ETH/USDT:USDT"}
        # binance's futures tickers carry no best bid/ask (as on binance); spot ones do
        priced = [r for r in rows["quotes"] if r["bid"] is not None and r["ask"] is not None]
        assert priced and all(r["bid"] < r["ask"] for r in priced)


async def test_bybit_books_stream_at_the_default_depth(emulators: Exchanges) -> None:
    """bybit refuses a 20-level book stream: the source asks for 50 and keeps 20 (failed on main)."""
    source = build_source(live_settings(emulators, order_book_depth=20), "bybit", "live")
    rows = await collect(source, 20, lambda r: len(r["order_books"]) >= 10)
    assert len(rows["order_books"]) >= 10
    assert max(len(r["bid_px"]) for r in rows["order_books"]) == 20
    assert isinstance(source, CcxtMarketSource) and source.ws_depth == 50 and source.stats["refused"] == 0
    assert source.breaker.times_opened == 0


async def test_okx_books_at_depth_50_without_keys(emulators: Exchanges) -> None:
    """okx's 50-level channel needs VIP keys: the source takes the 400-level one (failed on main)."""
    source = build_source(live_settings(emulators, order_book_depth=50), "okx", "live")
    rows = await collect(source, 20, lambda r: len(r["order_books"]) >= 10)
    assert len(rows["order_books"]) >= 10
    assert max(len(r["bid_px"]) for r in rows["order_books"]) == 50
    assert isinstance(source, CcxtMarketSource) and source.ws_depth == 400


async def test_a_refused_book_stream_falls_back_to_rest_and_spares_the_breaker(emulators: Exchanges) -> None:
    """A stream the exchange refuses goes to REST, said once; tickers and funding go on."""
    source = build_source(live_settings(emulators, poll_interval_s=0.5), "bybit", "live")
    assert isinstance(source, CcxtMarketSource)
    await source.start()
    source.ws_depth = 20  # as main asked: bybit's ccxt.pro raises BadRequest on every call
    started = time.monotonic()
    rows = await collect(source, 30, lambda r: every_kind(r) and len(r["order_books"]) >= 10)
    assert every_kind(rows)
    assert source.rest_books == set(source.symbols)
    assert source.stats["refused"] == len(source.symbols)
    assert source.breaker.times_opened == 0 and source.breaker.consecutive_failures == 0
    assert time.monotonic() - started < 30
