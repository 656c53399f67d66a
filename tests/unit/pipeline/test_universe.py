"""Universe discovery (``top:N``) on recorded ccxt tickers, and the ranking rules themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from core.settings import MarketSettings, Settings
from core.universe import UniverseRules, market_key, rank_universe, universe_size, universe_symbols
from pipeline.sources.factory import validate_source
from pipeline.sources.universe import rules_of, volumes_from_tickers


def recorded_ticker(fixtures: Path, exchange: str) -> dict[str, Any]:
    data = json.loads(
        (fixtures / "exchanges" / "ccxt_static" / f"{exchange}.response.subset.json").read_text()
    )
    return dict(data["methods"]["fetchTicker"][0]["parsedResponse"])


def clone(ticker: dict[str, Any], symbol: str, quote_volume: float | None) -> dict[str, Any]:
    return {**ticker, "symbol": symbol, "quoteVolume": quote_volume}


@pytest.fixture
def recorded(shared_fixtures: Path) -> dict[str, dict[str, Any]]:
    """binance BTC/USDT, bybit BTC/USDT:USDT, okx BTC/USDT: real ccxt tickers (parsed responses)."""
    return {e: recorded_ticker(shared_fixtures, e) for e in ("binance", "bybit", "okx")}


def test_recorded_tickers_rank_only_markets_listed_on_two_exchanges(recorded: dict[str, Any]) -> None:
    volumes = {e: volumes_from_tickers({t["symbol"]: t}) for e, t in recorded.items()}
    assert volumes["binance"]["BTC/USDT"] == pytest.approx(5_167_027_510.687287)
    ranked = rank_universe(volumes, 5)
    # BTC/USDT:USDT is only on bybit here: not a cross-exchange market
    assert [r.key for r in ranked] == ["BTC/USDT"]
    assert ranked[0].quote_volume == pytest.approx(5_167_027_510.687287 + 1_519_926_359.5972667)
    assert dict(ranked[0].symbols) == {"binance": ("BTC/USDT",), "okx": ("BTC/USDT",)}
    assert universe_symbols(ranked, "bybit") == []


def test_top_n_orders_by_summed_quote_volume(recorded: dict[str, Any]) -> None:
    b, y, o = recorded["binance"], recorded["bybit"], recorded["okx"]
    tickers = {
        "binance": [b, clone(b, "ETH/USDT", 9e9), clone(b, "SOL/USDT", 1e6), clone(b, "BTC/USDT:USDT", 1e9)],
        "bybit": [y, clone(y, "ETH/USDT", 1e6), clone(y, "SOL/USDT", 5e9), clone(y, "DOGE/USDT", 9e12)],
        "okx": [o, clone(o, "SOL/USDT", 1e6), clone(o, "BTC/USDT:USDT", None)],
    }
    volumes = {e: volumes_from_tickers({t["symbol"]: t for t in ts}) for e, ts in tickers.items()}
    ranked = rank_universe(volumes, 3)
    assert [r.key for r in ranked] == ["ETH/USDT", "BTC/USDT", "SOL/USDT"]  # DOGE: one exchange only
    assert [r.key for r in rank_universe(volumes, 10)][-1] == "BTC/USDT:USDT"  # unknown volume counts 0
    assert universe_symbols(ranked) == ["ETH/USDT", "BTC/USDT", "SOL/USDT"]


def test_equivalent_quotes_and_multiplier_bases_match_only_when_configured(recorded: dict[str, Any]) -> None:
    b, y, o = recorded["binance"], recorded["bybit"], recorded["okx"]
    tickers = {
        "binance": [clone(b, "ETH/FDUSD", 3e9), clone(b, "PEPE/USDC", 1e9)],
        "bybit": [clone(y, "1000PEPE/USDT:USDT", 2e9)],
        "okx": [clone(o, "ETH/USDT", 1e9), clone(o, "PEPE/USDT:USDT", 1e9)],
    }
    volumes = {e: volumes_from_tickers({t["symbol"]: t for t in ts}) for e, ts in tickers.items()}
    assert rank_universe(volumes, 5) == []  # exact symbols: nothing is on two exchanges

    quotes = UniverseRules(equivalent_quotes=("USDT", "USDC", "FDUSD"))
    ranked = rank_universe(volumes, 5, quotes)
    assert [r.key for r in ranked] == ["ETH/USDT"]
    assert universe_symbols(ranked, "binance") == ["ETH/FDUSD"]

    both = UniverseRules(equivalent_quotes=("USDT", "USDC", "FDUSD"), multiplier_bases=True)
    ranked = rank_universe(volumes, 5, both)
    assert [r.key for r in ranked] == ["ETH/USDT", "PEPE/USDT:USDT"]
    assert universe_symbols(ranked, "bybit") == ["1000PEPE/USDT:USDT"]
    assert universe_symbols(ranked, "okx") == ["ETH/USDT", "PEPE/USDT:USDT"]
    # spot PEPE/USDC and the PEPE swaps stay two markets
    assert "PEPE/USDT" not in [r.key for r in ranked]


def test_market_keys_leave_out_futures_options_and_inverse_swaps() -> None:
    rules = UniverseRules(multiplier_bases=True)
    assert market_key("BTC/USDT", rules) == "BTC/USDT"
    assert market_key("BTC/USDT:USDT", rules) == "BTC/USDT:USDT"
    assert market_key("BTC/USDT:USDT-250328", rules) is None
    assert market_key("BTC/USD:BTC-250328-100000-C", rules) is None
    assert market_key("BTC/USD:BTC", rules) is None
    assert market_key("1000000MOG/USDT", rules) == "MOG/USDT"
    assert market_key("1INCH/USDT", rules) == "1INCH/USDT"  # a digit that is not a multiplier prefix
    assert market_key("1000PEPE/USDT", UniverseRules()) == "1000PEPE/USDT"


def test_inactive_and_inverse_markets_are_not_ranked(recorded: dict[str, Any]) -> None:
    b = recorded["binance"]
    markets = {
        "ETH/USDT": {"type": "spot", "active": False},
        "BTC/USD:BTC": {"type": "swap", "swap": True, "linear": False, "inverse": True},
        "BTC/USDT": {"type": "spot", "active": True},
    }
    tickers = {s: clone(b, s, 1e9) for s in markets}
    assert volumes_from_tickers(tickers, markets) == {"BTC/USDT": 1e9}
    no_quote = {**b, "quoteVolume": None}
    assert volumes_from_tickers({"BTC/USDT": no_quote})["BTC/USDT"] == pytest.approx(
        b["baseVolume"] * b["last"]
    )


def test_the_symbols_setting_takes_top_n() -> None:
    assert universe_size(["top:20"]) == 20
    assert universe_size(["BTC/USDT"]) is None
    market = MarketSettings(symbols="top:3", universe_equivalent_quotes="usdt,usdc")  # type: ignore[arg-type]
    assert market.universe == 3
    assert rules_of(market) == UniverseRules(equivalent_quotes=("USDT", "USDC"))
    for bad in ("top:0", "top:x", "top:3,BTC/USDT"):
        with pytest.raises(ValidationError, match="top:"):
            MarketSettings(symbols=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs the live source"):
        validate_source(Settings(market={"symbols": "top:3"}), "sim")
