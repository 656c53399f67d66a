"""``ARBFLOW_MARKET__SYMBOLS=top:N`` through the emulators: ranked at start, ranked again on refresh."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pipeline.sources.factory import build_source
from pipeline.sources.live import CcxtMarketSource
from pipeline.sources.universe import discover
from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import SYMBOLS, live_settings

pytestmark = pytest.mark.timeout(120)


async def test_top_n_follows_the_exchanges_tickers_and_refreshes(emulators: Exchanges) -> None:
    settings = live_settings(emulators, symbols=["top:2"], universe_refresh_s=0.5)
    ranked = await discover(settings.market)
    assert len(ranked) == 2 and all(r.key in SYMBOLS for r in ranked)
    assert all(set(r.symbols) == {"binance", "bybit", "okx"} for r in ranked)

    source = build_source(settings, "bybit", "live")
    assert isinstance(source, CcxtMarketSource)
    books: dict[str, int] = {}

    async def pump() -> None:
        async for batch in source.batches():
            for row in batch.get("order_books").to_pylist():
                books[row["symbol"]] = books.get(row["symbol"], 0) + 1

    task = asyncio.ensure_future(pump())
    try:
        await _until(lambda: len(books) == 2, 30, "books of the two ranked symbols")
        first = list(source.symbols)
        assert len(first) == 2 and set(first) <= set(SYMBOLS)
        assert set(books) == set(first)
        # The top symbol leaves binance and okx: listed on bybit alone, it leaves the universe
        # at the next refresh and the next one by volume comes in, streams and all.
        gone = first[0]
        emulators.fault("binance", "delist", gone)
        emulators.fault("okx", "delist", gone)
        await _until(lambda: gone not in source.symbols and len(source.symbols) == 2, 30, "the refresh")
        [new] = [s for s in source.symbols if s not in first]
        await _until(lambda: books.get(new, 0) > 0, 30, f"books of {new}")
        assert source.stats["universe_changes"] >= 1
    finally:
        await source.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(cond: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {within:.0f} s")
