"""Per-exchange metrics on Ray's Prometheus endpoint, and a source that cannot start (alert, retry).

okx is in maintenance (503 on everything) when the live pipeline starts: its source cannot
load markets, its coordinator says so (what ``/readyz``'s ``market`` check reads), the
monitor opens a ``source_down`` incident; the maintenance ends, the source's own retries
start it and the incident resolves. binance's figures reach the node's metrics endpoint.
"""

from __future__ import annotations

import uuid

import pytest
import ray

from actors.market_data import source_problem
from actors.monitor import get_monitor
from core.alerts import AlertRules
from core.settings import Settings
from serve.orchestrator import MarketPipeline
from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import SYMBOLS
from tests.integration.test_monitor import scrape, series, wait_for

pytestmark = pytest.mark.timeout(240)


def test_exchange_metrics_are_exported_and_a_source_down_at_start_alerts_and_recovers(
    ray_session: None, base_settings: Settings, emulators_in_thread: Exchanges
) -> None:
    ns = f"exm-{uuid.uuid4().hex[:8]}"
    market = base_settings.market.model_copy(
        update={
            "source": "live", "exchanges": ["binance", "okx"], "symbols": SYMBOLS,
            "endpoints": emulators_in_thread.endpoints, "max_backoff_s": 1.0, "breaker_reset_s": 1.0,
        }
    )  # fmt: skip
    settings = base_settings.model_copy(
        update={"market": market, "ray": base_settings.ray.model_copy(update={"namespace": ns})}
    )
    emulators_in_thread.fault("okx", "maintenance", duration_s=600)
    pipeline = MarketPipeline(settings, "live", detect=False).start()
    rules = AlertRules(stale_after_s=120, max_lag_s=120, clear_after_s=1.0, window_s=30)
    monitor = get_monitor(settings, interval_s=0.5, rules=rules, key_prefix=f"{ns}:")
    okx = pipeline.coordinators["okx"]
    try:
        problem = wait_for(lambda: source_problem(ray.get(okx.stats.remote())), 60, "okx reported down")
        assert problem.startswith("cannot start") and "okx" in problem
        wait_for(
            lambda: "source_down:okx" in ray.get(monitor.status.remote())["open"],
            30,
            "the source_down incident",
        )
        emulators_in_thread.clear("okx", "maintenance")
        wait_for(
            lambda: ray.get(okx.stats.remote())["rows"].get("order_books"), 60, "okx retried and running"
        )
        assert source_problem(ray.get(okx.stats.remote())) is None
        wait_for(
            lambda: "source_down:okx" not in ray.get(monitor.status.remote())["open"],
            30,
            "the incident resolved",
        )

        def exported() -> bool:
            body = scrape()
            rate = series(body, "ray_arbflow_exchange_messages_per_second", exchange="binance")
            return bool(
                rate and max(rate) > 0
                and series(body, "ray_arbflow_exchange_messages_total", exchange="okx")
                and series(body, "ray_arbflow_exchange_breaker_state", exchange="binance")
                and series(body, "ray_arbflow_exchange_book_age_p99_seconds", exchange="binance")
                and series(body, "ray_arbflow_exchange_dropped_symbols", exchange="okx")
                and series(body, "ray_arbflow_exchange_source_down_seconds", exchange="okx")
            )  # fmt: skip

        wait_for(exported, 60, "the exchange metrics on the Prometheus endpoint")
        exported_now = ray.get(monitor.metrics.remote())
        assert exported_now["arbflow_exchange_source_down_seconds"]["exchange=okx"] == 0.0
        assert exported_now["arbflow_exchange_book_age_p99_seconds"]["exchange=binance"] < 30
    finally:
        ray.get(monitor.stop.remote())
        ray.kill(monitor)
        pipeline.stop()
