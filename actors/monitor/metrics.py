"""The alert monitor's Prometheus metrics: the gauges and counters it exports through
:mod:`ray.util.metrics`, with a copy of what was exported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "arbflow_market_data_age_seconds": (
        "Seconds since the exchange's last market-data batch.",
        ("exchange",),
    ),
    "arbflow_ingest_lag_seconds": ("Exchange timestamp to arrival, at the last batch (s).", ("exchange",)),
    "arbflow_queue_pending": ("Pushes queued in the shard.", ("shard",)),
    "arbflow_queue_loop_lag_p99_seconds": (
        "How late the shard's event loop ran ready work, p99 over its last ten minutes (s).",
        ("shard",),
    ),
    "arbflow_delivery_failure_rate": ("Failed / attempted pushes over the alert window.", ()),
    "arbflow_alert_incidents_open": ("Open alert incidents.", ("kind",)),
    "arbflow_actor_up": ("1 when the actor answered the last poll, else 0.", ("actor",)),
    "arbflow_exchange_messages_per_second": (
        "Structures (books, tickers, funding rates) the live source received per second.",
        ("exchange",),
    ),
    "arbflow_exchange_breaker_state": ("Circuit breaker: 0 closed, 0.5 half-open, 1 open.", ("exchange",)),
    "arbflow_exchange_book_age_p99_seconds": (
        "p99 over the symbols of the time since each book was last received or confirmed (s).",
        ("exchange",),
    ),
    "arbflow_exchange_dropped_symbols": (
        "Symbols the live source dropped (not listed, refused).",
        ("exchange",),
    ),
    "arbflow_exchange_source_down_seconds": (
        "Seconds the market source has been failing to start (0: running).",
        ("exchange",),
    ),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "arbflow_deliveries_sent": ("Pushes delivered to Telegram.", ("shard",)),
    "arbflow_deliveries_failed": ("Pushes failed for good (permanent errors, dead letters).", ("shard",)),
    "arbflow_telegram_429": ("Telegram 429 (Too Many Requests) answers.", ("shard",)),
    "arbflow_exchange_messages": ("Structures the live source received.", ("exchange",)),
    "arbflow_exchange_reconnects": ("Websocket reconnections of the live source.", ("exchange",)),
    "arbflow_exchange_errors": ("Errors of the live source's calls, by class.", ("exchange", "error")),
}
BREAKER_VALUES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


def _tag_key(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


class MetricsExporter:
    """Gauges and counters through :mod:`ray.util.metrics` (``use_ray``), with a copy of what
    was exported (``snapshot()``: name → ``"tag=value,…"`` → value; counters as totals)."""

    def __init__(self, *, use_ray: bool = True) -> None:
        self.values: dict[str, dict[str, float]] = {name: {} for name in (*GAUGES, *COUNTERS)}
        self._ray: dict[str, Any] = {}
        if use_ray:
            from ray.util.metrics import Counter, Gauge

            for name, (desc, keys) in GAUGES.items():
                self._ray[name] = Gauge(name, desc, tag_keys=keys)
            for name, (desc, keys) in COUNTERS.items():
                self._ray[name] = Counter(name, desc, tag_keys=keys)

    def set(self, name: str, value: float, **tags: str) -> None:
        if name not in GAUGES:
            raise KeyError(f"not a gauge: {name}")
        self.values[name][_tag_key(tags)] = float(value)
        if name in self._ray:
            self._ray[name].set(float(value), tags=tags or None)

    def inc(self, name: str, value: float, **tags: str) -> None:
        if name not in COUNTERS:
            raise KeyError(f"not a counter: {name}")
        if value <= 0:
            return
        key = _tag_key(tags)
        self.values[name][key] = self.values[name].get(key, 0.0) + float(value)
        if name in self._ray:
            self._ray[name].inc(float(value), tags=tags or None)

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {name: dict(series) for name, series in self.values.items()}
