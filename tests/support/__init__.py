"""Helpers shared by the tests: a local S3 server (``seaweed``) and small lake tables."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from pipeline.schemas import QUOTES

EXCHANGES = ("binance", "bybit", "okx")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT")


def ms(when: datetime) -> int:
    return int(when.astimezone(UTC).timestamp() * 1000)


def make_quotes(start: datetime, rows: int, step_ms: int = 1000, *, seed: int = 0) -> pa.Table:
    """A QUOTES table of ``rows`` rows, ``ts`` from ``start`` every ``step_ms``."""
    rng = np.random.default_rng(seed)
    ts = ms(start) + np.arange(rows, dtype=np.int64) * step_ms
    mid = 100.0 + rng.random(rows)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "recv_ts": pa.array(ts + 3, pa.timestamp("ms", tz="UTC")),
            "exchange": pa.array([EXCHANGES[i % len(EXCHANGES)] for i in range(rows)]),
            "symbol": pa.array([SYMBOLS[i % len(SYMBOLS)] for i in range(rows)]),
            "market_type": pa.array(["spot"] * rows),
            "bid": mid - 0.01,
            "ask": mid + 0.01,
            "bid_size": rng.random(rows),
            "ask_size": rng.random(rows),
            "last": mid,
            "base_volume": rng.random(rows) * 1e3,
            "quote_volume": rng.random(rows) * 1e5,
        },
        schema=QUOTES,
    )
