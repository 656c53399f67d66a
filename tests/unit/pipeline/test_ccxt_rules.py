"""What the live source knows about exchanges: depths, errors, ids, endpoint URLs."""

from __future__ import annotations

import ccxt
import pytest

from core.errors import ConfigError, ExchangeRateLimited, ExchangeUnavailable, SymbolNotListed
from core.settings import Settings
from pipeline.sources.ccxt_rules import (
    StreamRefused,
    book_depth,
    map_ccxt_error,
    rebase_urls,
    validate_exchange_ids,
)
from pipeline.sources.factory import validate_source


@pytest.mark.parametrize(
    ("exchange", "requested", "websocket", "expected"),
    [
        ("bybit", 20, True, 50),  # ccxt.pro refuses 20 on bybit
        ("bybit", 50, True, 50),
        ("bybit", 300, True, 1000),
        ("bybit", 5000, True, 1000),  # above every allowed depth: the largest
        ("okx", 20, True, 400),  # books; 50 would be books50-l2-tbt (VIP keys)
        ("okx", 50, True, 400),
        ("okx", 5, True, 5),
        ("binance", 20, True, 20),
        ("binance", 30, False, 50),  # USDⓈ-M REST takes 5/10/20/50/…
        ("bybit", 20, False, 20),  # REST takes any
        ("kraken", 25, True, 25),  # unknown: as asked
    ],
)
def test_book_depth_is_the_nearest_allowed_at_or_above(
    exchange: str, requested: int, websocket: bool, expected: int
) -> None:
    assert book_depth(exchange, requested, websocket=websocket) == expected


@pytest.mark.parametrize(
    ("error", "mapped", "retryable"),
    [
        (ccxt.BadRequest("bybit limit"), StreamRefused, False),
        (ccxt.AuthenticationError("okx needs keys"), StreamRefused, False),
        (ccxt.PermissionDenied("x"), StreamRefused, False),
        (ccxt.NotSupported("x"), StreamRefused, False),
        (ccxt.BadSymbol("x"), SymbolNotListed, False),  # a BadRequest, but its own class
        (ccxt.InvalidNonce("gap"), ExchangeUnavailable, True),
        (ccxt.ChecksumError("gap"), ExchangeUnavailable, True),
        (ccxt.RateLimitExceeded("429"), ExchangeRateLimited, True),
    ],
)
def test_errors_are_classified_per_stream(error: Exception, mapped: type, retryable: bool) -> None:
    result = map_ccxt_error("bybit", error)
    assert type(result) is mapped and result.retryable is retryable


def test_unknown_exchange_ids_fail_with_the_closest_known() -> None:
    validate_exchange_ids(["binance", "bybit", "okx"])
    with pytest.raises(ConfigError, match=r"'binanse'.*did you mean binance"):
        validate_exchange_ids(["binanse", "okx"])


def test_validate_source_rejects_a_mistyped_exchange_id_before_anything_starts() -> None:
    settings = Settings(market={"exchanges": ["binance", "bybitt"]})
    with pytest.raises(ConfigError, match="bybitt"):
        validate_source(settings, "live")
    validate_source(settings, "sim")  # the simulator takes any names


def test_rebase_urls_keeps_the_host_as_the_first_path_segment() -> None:
    api = {
        "public": "https://api.binance.com/api/v3",
        "ws": {"spot": "wss://stream.binance.com:9443/ws", "linear": "wss://fstream.binance.com/ws"},
        "rest": "https://{hostname}",
        "rateLimits": 50,
    }
    out = rebase_urls(api, "http://127.0.0.1:9/binance", "ws://127.0.0.1:9/binance", "www.okx.com")
    assert out["public"] == "http://127.0.0.1:9/binance/api.binance.com/api/v3"
    assert out["ws"]["spot"] == "ws://127.0.0.1:9/binance/stream.binance.com/ws"
    assert out["ws"]["linear"] == "ws://127.0.0.1:9/binance/fstream.binance.com/ws"
    assert out["rest"] == "http://127.0.0.1:9/binance/www.okx.com"
    assert out["rateLimits"] == 50
    # only REST given: websocket URLs stay as they were
    assert rebase_urls(api, "http://h", None)["ws"]["spot"] == "wss://stream.binance.com:9443/ws"


def test_endpoints_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import load_settings

    monkeypatch.setenv("ARBFLOW_MARKET__ENDPOINTS", '{"okx": {"rest": "http://h/okx", "ws": "ws://h/okx"}}')
    assert load_settings().market.endpoints == {"okx": {"rest": "http://h/okx", "ws": "ws://h/okx"}}
    monkeypatch.setenv("ARBFLOW_MARKET__ENDPOINTS", '{"okx": {"http": "x"}}')
    with pytest.raises(ValueError, match="rest"):
        load_settings()
