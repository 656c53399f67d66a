"""Latest-quote fallback order and freshness, and the lake lookup on a real local lake."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from core.errors import StaleData, StoreUnavailable
from core.settings import LakeSettings
from pipeline.ccxt_offline import load_recorded_markets, offline_exchange
from pipeline.lake import Lake
from pipeline.quotes import LatestQuotes, ccxt_lookup, lake_lookup, latest_per_key
from pipeline.schemas import QUOTES
from pipeline.sink import ParquetSink

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def _quotes(rows: list[tuple[int, str, str, float, float]]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in QUOTES.names}
    for ts, ex, sym, bid, ask in rows:
        cols["ts"].append(datetime.fromtimestamp(ts / 1000, UTC))
        cols["recv_ts"].append(datetime.fromtimestamp(ts / 1000, UTC))
        cols["exchange"].append(ex)
        cols["symbol"].append(sym)
        cols["market_type"].append("spot")
        for name, value in (("bid", bid), ("ask", ask), ("bid_size", 1.0), ("ask_size", 2.0), ("last", bid)):
            cols[name].append(value)
        cols["base_volume"].append(None)
        cols["quote_volume"].append(None)
    return pa.Table.from_pydict(cols, schema=QUOTES)


def test_latest_per_key_keeps_the_newest_row_of_each_pair() -> None:
    t = int(NOW * 1000)
    table = _quotes(
        [(t + 5, "okx", "BTC/USDT", 2, 3), (t, "okx", "BTC/USDT", 1, 2), (t, "binance", "BTC/USDT", 7, 8)]
    )
    latest = latest_per_key(table).sort("exchange")
    assert latest.select("exchange", "ts", "bid").rows() == [("binance", t, 7.0), ("okx", t + 5, 2.0)]


class _Dict:
    def __init__(self, data: dict[tuple[str, str], dict[str, Any]], fail: bool = False) -> None:
        self.data, self.fail, self.calls = data, fail, 0

    async def __call__(self, exchange: str, symbol: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.fail:
            raise StoreUnavailable("down")
        return self.data.get((exchange, symbol))


async def test_fallback_order_and_freshness_bound() -> None:
    fresh = {"ts": int(NOW * 1000) - 500, "bid": 1.0, "ask": 2.0}
    old = {"ts": int(NOW * 1000) - 30_000, "bid": 1.0, "ask": 2.0}
    lake, live = _Dict({("okx", "BTC/USDT"): old}), _Dict({("okx", "BTC/USDT"): fresh})
    quotes = LatestQuotes(None, lake, live, clock=lambda: NOW)
    got = await quotes.get("okx", "BTC/USDT", max_age_s=2.0)
    assert got.origin == "live" and got.bid == 1.0 and got.age_s(int(NOW * 1000)) == 0.5
    assert lake.calls == 1  # the lake was asked first, and was too old

    # A Redis outage falls through to the next source instead of failing.
    quotes = LatestQuotes(None, _Dict({}, fail=True), _Dict({("okx", "BTC/USDT"): fresh}), clock=lambda: NOW)
    assert (await quotes.get("okx", "BTC/USDT")).origin == "live"

    with pytest.raises(StaleData, match=r"lake: 30.0 s old; live: none"):
        await LatestQuotes(None, lake, _Dict({}), clock=lambda: NOW).get("okx", "BTC/USDT", max_age_s=2.0)


async def test_lake_lookup_reads_the_newest_quote_of_recent_hours(tmp_path: Path) -> None:
    settings = LakeSettings(url=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    sink = ParquetSink(lake, settings)
    t = int(NOW * 1000)
    sink.add(
        "quotes",
        _quotes([(t - 3_600_000 - 1000, "okx", "BTC/USDT", 10, 11), (t - 900, "okx", "BTC/USDT", 20, 21)]),
    )
    sink.add("quotes", _quotes([(t - 100, "binance", "BTC/USDT", 30, 31)]))
    sink.flush()
    lookup = lake_lookup(lake, clock=lambda: NOW)
    row = await lookup("okx", "BTC/USDT")
    assert row is not None and row["bid"] == 20.0 and row["ts"] == t - 900
    assert await lookup("okx", "ETH/USDT") is None
    got = await LatestQuotes(None, lookup, clock=lambda: NOW).get("okx", "BTC/USDT", max_age_s=2)
    assert got.origin == "lake" and got.ask == 21.0


async def test_ccxt_lookup_parses_a_recorded_binance_ticker(shared_fixtures: Path) -> None:
    static = shared_fixtures / "exchanges" / "ccxt_static"
    markets = load_recorded_markets(static / "binance.markets.subset.json")
    case = json.loads((static / "binance.response.subset.json").read_text())["methods"]["fetchTicker"][0]
    exchange = offline_exchange("binance", markets, flavour="async")

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        return copy.deepcopy(case["httpResponse"])

    exchange.fetch = fetch
    try:
        row = await ccxt_lookup({"binance": exchange})("binance", "BTC/USDT")
    finally:
        await exchange.close()
    assert row is not None
    parsed = case["parsedResponse"]
    assert (row["bid"], row["ask"], row["ts"]) == (parsed["bid"], parsed["ask"], parsed["timestamp"])
    assert await ccxt_lookup({})("kraken", "BTC/USDT") is None
