"""The market pipeline's real actors on the live source, fed by the exchange emulators."""

from __future__ import annotations

import time
from typing import Any

import pytest
import ray

from core.settings import Settings
from core.transfers import RouteState, route
from pipeline.lake import Lake
from pipeline.query import run_query
from serve.orchestrator import MarketPipeline
from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import SYMBOLS

pytestmark = pytest.mark.timeout(180)


def test_live_pipeline_fills_the_lake_from_the_emulators(
    ray_session: None, base_settings: Settings, emulators_in_thread: Exchanges
) -> None:
    market = base_settings.market.model_copy(
        update={"source": "live", "symbols": SYMBOLS, "endpoints": emulators_in_thread.endpoints}
    )
    settings = base_settings.model_copy(update={"market": market})
    pipeline = MarketPipeline(settings, "live").start()
    deadline = time.monotonic() + 60
    live = pipeline.stats()
    while time.monotonic() < deadline and not all(
        live.rows.get(d) for d in ("quotes", "order_books", "funding_rates")
    ):
        time.sleep(0.5)
        live = pipeline.stats()
    time.sleep(2)
    stats = pipeline.stop()
    assert set(stats.coordinators) == {"binance", "bybit", "okx"}
    lake = Lake.from_settings(settings.lake)
    for dataset in ("order_books", "funding_rates", "quotes"):
        table = run_query(lake, f"SELECT exchange, count(*) AS n FROM {dataset} GROUP BY exchange")
        counts = dict(zip(table.column("exchange").to_pylist(), table.column("n").to_pylist(), strict=True))
        assert set(counts) == {"binance", "bybit", "okx"}, (dataset, counts)


def test_a_venue_closing_withdrawals_reaches_the_detector_within_one_refresh(
    ray_session: None, base_settings: Settings, emulators_in_thread: Exchanges
) -> None:
    """Source → market-data coordinator → detector, through the real actors: the keyed
    currency status arrives, and a withdrawal closing on the emulator follows."""
    market = base_settings.market.model_copy(
        update={
            "source": "live",
            "exchanges": ["binance", "okx"],
            "symbols": SYMBOLS,
            "endpoints": emulators_in_thread.endpoints,
            "transfer_refresh_s": 1.0,
        }
    )
    keys = Settings(
        exchange_keys={n: {"api_key": "k", "secret": "s", "password": "p"} for n in ("binance", "okx")}
    ).exchange_keys
    settings = base_settings.model_copy(update={"market": market, "exchange_keys": keys})
    pipeline = MarketPipeline(settings, "live").start()
    try:

        def btc(exchange: str) -> Any:
            return ray.get(pipeline.detector.transfer.remote()).get(exchange, {}).get("BTC")

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (btc("binance") and btc("okx")):
            time.sleep(0.5)
        assert route(btc("binance"), btc("okx")).state is RouteState.OPEN
        emulators_in_thread.fault("binance", "withdrawals", "BTC")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and btc("binance").withdraw_ok is not False:
            time.sleep(0.5)
        assert route(btc("binance"), btc("okx")).state is RouteState.CLOSED
        assert route(btc("okx"), btc("binance")).state is RouteState.OPEN
    finally:
        pipeline.stop()
