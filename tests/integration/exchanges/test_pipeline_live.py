"""The market pipeline's real actors on the live source, fed by the exchange emulators."""

from __future__ import annotations

import time

import pytest

from core.settings import Settings
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
