"""The emulators without the recorded responses (a checkout without ``shared/fixtures``):
the built-in listings carry the same markets to the real ccxt / ccxt.pro clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serve.standins.exchanges import start_exchanges
from serve.standins.exchanges.listings import LISTINGS, builtin_listing
from tests.integration.exchanges.conftest import SYMBOLS, pro_client

pytestmark = pytest.mark.timeout(90)

NAMES = ["binance", "bybit", "okx"]


def _market_view(market: dict[str, Any]) -> tuple[Any, ...]:
    """What the detector relies on in a ccxt market: type, linearity, contract size."""
    return (
        market["type"],
        market["spot"],
        market.get("linear"),
        market.get("contractSize"),
        market["active"],
    )


@pytest.mark.parametrize("name", NAMES)
async def test_builtin_listings_give_the_markets_the_recordings_give(
    shared_fixtures: Path, name: str
) -> None:
    views: list[dict[str, tuple[Any, ...]]] = []
    for fixtures in (shared_fixtures / "exchanges", None):
        async with start_exchanges(fixtures, seed=11, exchanges=[name], symbols=SYMBOLS) as ex:
            client = pro_client(ex, name)
            try:
                markets = await client.load_markets()
                assert set(SYMBOLS) <= set(markets)
                views.append({s: _market_view(markets[s]) for s in SYMBOLS})
                book = await asyncio.wait_for(
                    client.watch_order_book("SOL/USDT", 50 if name == "bybit" else 20), 10
                )
                assert book["bids"][0][0] < book["asks"][0][0]
                rest = await client.fetch_order_book("BTC/USDT:USDT", 5)
                assert 10_000 < rest["bids"][0][0] < rest["asks"][0][0]
            finally:
                await client.close()
    recorded, builtin = views
    assert builtin == recorded


def test_a_missing_builtin_listing_is_a_clear_error() -> None:
    assert set(LISTINGS) and all(key.split("/")[0] in NAMES for key in LISTINGS)
    listing = builtin_listing("okx/cryptofeed_v5_instruments_SPOT_20220513.json")
    listing["data"].clear()  # a copy: the next caller gets the listing whole
    assert builtin_listing("okx/cryptofeed_v5_instruments_SPOT_20220513.json")["data"]
    with pytest.raises(FileNotFoundError, match="no built-in listing"):
        builtin_listing("kraken/AssetPairs.json")
