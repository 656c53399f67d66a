"""Normalised Arrow schemas of the market-data datasets (units in docs/lake.md).

Every ``ts`` column is a UTC timestamp in milliseconds. Prices are in the quote
currency, sizes in the base currency (for swaps: base-currency equivalent of the
contracts), rates as plain fractions (0.0001 = 1 bp). Values are float64 here:
vectorised work happens on these columns; the domain converts to ``Decimal`` at
its edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

QUOTES = pa.schema(
    [
        pa.field("ts", TS, nullable=False),  # exchange time of the quote
        pa.field("recv_ts", TS, nullable=False),  # when arbflow received it
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),  # unified ccxt symbol
        pa.field("market_type", pa.string(), nullable=False),  # spot | swap | future
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("bid_size", pa.float64()),
        pa.field("ask_size", pa.float64()),
        pa.field("last", pa.float64()),
        pa.field("base_volume", pa.float64()),  # rolling 24 h, base currency
        pa.field("quote_volume", pa.float64()),  # rolling 24 h, quote currency
    ]
)

ORDER_BOOKS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("recv_ts", TS, nullable=False),
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("market_type", pa.string(), nullable=False),
        pa.field("depth", pa.int32(), nullable=False),  # levels kept per side
        pa.field("bid_px", pa.list_(pa.float64()), nullable=False),  # best first
        pa.field("bid_sz", pa.list_(pa.float64()), nullable=False),
        pa.field("ask_px", pa.list_(pa.float64()), nullable=False),  # best first
        pa.field("ask_sz", pa.list_(pa.float64()), nullable=False),
        pa.field("nonce", pa.int64()),  # exchange sequence/update id when given
    ]
)

FUNDING_RATES = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("recv_ts", TS, nullable=False),
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),  # a perpetual swap, BTC/USDT:USDT
        pa.field("funding_rate", pa.float64(), nullable=False),  # per interval, fraction
        pa.field("interval_hours", pa.float64(), nullable=False),
        pa.field("rate_per_hour", pa.float64(), nullable=False),  # funding_rate / interval_hours
        pa.field("funding_ts", TS),  # the funding time this rate applies to
        pa.field("next_funding_ts", TS),
        pa.field("next_funding_rate", pa.float64()),  # predicted next rate, when given
        pa.field("mark_price", pa.float64()),
        pa.field("index_price", pa.float64()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "quotes": QUOTES,
    "order_books": ORDER_BOOKS,
    "funding_rates": FUNDING_RATES,
}

DATASET_PATHS: dict[str, str] = {
    "quotes": "market-data/quotes",
    "order_books": "market-data/order_books",
    "funding_rates": "market-data/funding_rates",
    "opportunities": "opportunities",
    "deliveries": "analytics/deliveries",
    "engagement": "analytics/engagement",
    "session_events": "analytics/session_events",
    "audit": "audit-logs",
    "payments": "analytics/payments",
    # The validation audit; not under audit-logs/, whose view reads every file below it.
    "validations": "validations",
}
"""Where each dataset (DuckDB view name) lives under the lake root (CONTRACT.md)."""


def empty_table(dataset: str) -> pa.Table:
    return SCHEMAS[dataset].empty_table()


@dataclass(slots=True)
class MarketBatch:
    """Normalised market data handed from a source to its coordinator.

    ``clock_ms`` is the source's clock when the batch was cut: the wall clock for
    ``live`` and ``sim``, the records' ``ts`` for ``replay``.
    """

    clock_ms: int
    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())

    def get(self, dataset: str) -> pa.Table:
        table = self.tables.get(dataset)
        return table if table is not None else empty_table(dataset)
