"""ccxt unified structures → Arrow tables of ``pipeline.schemas`` (quotes, order books, funding).

Builders accumulate rows in column lists and ``take()`` one ``pa.Table`` per
batch (``pa.Table.from_pydict(..., schema=...)`` once). ``add`` validates the whole
record before touching the columns, so a :class:`core.errors.MalformedRecord`
never leaves a half-written row; ``try_add`` counts and skips bad records instead.

Conventions (see ``pipeline/schemas.py``):

- ``ts`` is the exchange timestamp (ccxt ``timestamp``); when ccxt gives None the
  receive time is used. ``recv_ts`` is when arbflow received the record.
- ``market_type`` comes from the ccxt market when known, else from the unified
  symbol: ``BASE/QUOTE`` → spot, ``BASE/QUOTE:SETTLE`` → swap,
  ``BASE/QUOTE:SETTLE-YYMMDD`` → future.
- Sizes are in the base currency. ccxt gives derivative sizes in contracts, so
  when a market is known its ``contractSize`` converts them (linear: times the
  size; inverse: times the size over the price). Without a market, a record's own
  ``contractSize`` (and ``inverse``; written by ``arbflow record``) is used; without
  either, sizes pass through unchanged.
- Funding: ``funding_ts`` is ccxt's ``fundingTimestamp`` (the settlement the rate
  applies to). ``next_funding_ts`` is the next settlement at or after ``ts`` among
  ``fundingTimestamp``/``nextFundingTimestamp`` (binance and bybit only give the
  first, OKX both: its ``fundingTime`` is the upcoming one). ``next_funding_rate``
  is ccxt's ``nextFundingRate`` (OKX: the predicted rate of the settlement after).
  ``interval_hours`` comes from ccxt's ``interval`` ("8h", "4h", "480m", a number of
  hours, or milliseconds as OKX's raw fallback gives), else from a per-symbol
  hint, else from ``nextFundingTimestamp - fundingTimestamp``; only when nothing
  says it is 8 h assumed, counted in ``stats["interval_assumed"]`` and logged once
  per symbol.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from core.errors import MalformedRecord
from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS, QUOTES, MarketBatch

log = logging.getLogger(__name__)

KINDS = ("order_book", "ticker", "funding_rate")
"""Record kinds of the replay format, and the builders' ``kind`` names."""

DATASET_OF_KIND = {"ticker": "quotes", "order_book": "order_books", "funding_rate": "funding_rates"}

DEFAULT_FUNDING_INTERVAL_H = 8.0

_EXPIRY = re.compile(r"-\d{6}$")
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS_PER_HOUR = {"": 1.0, "h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0,
                   "m": 60.0, "min": 60.0, "mins": 60.0, "minutes": 60.0, "s": 3600.0,
                   "ms": 3_600_000.0, "d": 1 / 24, "day": 1 / 24, "days": 1 / 24}  # fmt: skip
_MAX_BARE_HOURS = 168.0  # a bare number above a week of hours is read as milliseconds


def market_type_of(symbol: str, market: Mapping[str, Any] | None = None) -> str:
    """``spot`` | ``swap`` | ``future`` from a ccxt market, else from the unified symbol."""
    if market is not None:
        kind = market.get("type")
        if kind in ("spot", "swap", "future"):
            return str(kind)
    _, colon, settle = symbol.partition(":")
    if not colon:
        return "spot"
    return "future" if _EXPIRY.search(settle) else "swap"


def parse_interval_hours(value: Any) -> float | None:
    """A funding interval in hours from ``"8h"``, ``"480m"``, ``"1d"``, ``8``, ``"28800000"``.

    Returns None when ``value`` is None or empty; raises ``MalformedRecord`` when it
    is given but unreadable or not positive.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedRecord(f"funding interval {value!r} is not a duration")
    if isinstance(value, int | float):
        amount, unit = float(value), ""
    elif isinstance(value, str):
        match = _INTERVAL.match(value)
        if match is None or match.group(2).lower() not in _UNITS_PER_HOUR:
            raise MalformedRecord(f"funding interval {value!r} is not a duration like '8h'")
        amount, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise MalformedRecord(f"funding interval {value!r} is not a duration")
    if unit == "" and amount > _MAX_BARE_HOURS:
        unit = "ms"
    hours = amount / _UNITS_PER_HOUR[unit]
    if not math.isfinite(hours) or hours <= 0:
        raise MalformedRecord(f"funding interval {value!r} is not a positive duration")
    return hours


# --- scalar validation -------------------------------------------------------------------------


def _num(record: Mapping[str, Any], key: str, what: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    return _as_float(value, f"{what} {key}")


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise MalformedRecord(f"{what} is not a finite number: {value!r}")


def _ts(record: Mapping[str, Any], key: str, what: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedRecord(f"{what} {key} is not an epoch-ms timestamp: {value!r}")


def _symbol(record: Any, what: str) -> str:
    if not isinstance(record, Mapping):
        raise MalformedRecord(f"{what} is not an object: {type(record).__name__}")
    symbol = record.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedRecord(f"{what} has no symbol: {symbol!r}")
    return symbol


def _size_scale(market: Mapping[str, Any] | None) -> tuple[float, bool]:
    """(contract size, inverse) of a market; (1.0, False) for spot or unknown markets."""
    if market is None or not market.get("contract"):
        return 1.0, False
    size = market.get("contractSize")
    if size is None:
        return 1.0, False
    return float(size), bool(market.get("inverse"))


def _to_base(size: float | None, price: float | None, scale: float, inverse: bool) -> float | None:
    if size is None or (scale == 1.0 and not inverse):
        return size
    if inverse:
        return size * scale / price if price else None
    return size * scale


# --- builders ----------------------------------------------------------------------------------


class _Builder:
    """Column lists for one dataset; ``take()`` turns them into one Arrow table."""

    schema: pa.Schema
    kind: str

    def __init__(self) -> None:
        self._names: list[str] = self.schema.names
        self._cols: dict[str, list[Any]] = {name: [] for name in self._names}
        self.stats: dict[str, int] = {"rows": 0, "malformed": 0}

    def __len__(self) -> int:
        return len(self._cols[self._names[0]])

    def _append(self, row: tuple[Any, ...]) -> None:
        for name, value in zip(self._names, row, strict=True):
            self._cols[name].append(value)
        self.stats["rows"] += 1

    def take(self) -> pa.Table:
        """The rows added since the last ``take`` as one table; the builder is emptied."""
        cols = self._cols
        self._cols = {name: [] for name in self._names}
        return pa.Table.from_pydict(cols, schema=self.schema)

    def try_add(self, *args: Any, **kwargs: Any) -> bool:
        """``add`` that counts and logs a malformed record instead of raising."""
        try:
            self.add(*args, **kwargs)
        except MalformedRecord as exc:
            self.stats["malformed"] += 1
            log.debug("skipped malformed %s: %s", self.kind, exc)
            return False
        return True

    def add(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class QuoteBuilder(_Builder):
    """Rows of ``QUOTES`` from ccxt tickers (``fetch_ticker``/``watch_ticker``)."""

    schema = QUOTES
    kind = "ticker"

    def add(
        self,
        ticker: Mapping[str, Any],
        *,
        exchange: str,
        recv_ms: int,
        market: Mapping[str, Any] | None = None,
    ) -> None:
        symbol = _symbol(ticker, "ticker")
        what = f"ticker {exchange} {symbol}"
        ts = _ts(ticker, "timestamp", what)
        bid = _num(ticker, "bid", what)
        ask = _num(ticker, "ask", what)
        bid_size = _num(ticker, "bidVolume", what)
        ask_size = _num(ticker, "askVolume", what)
        last = _num(ticker, "last", what)
        base_volume = _num(ticker, "baseVolume", what)
        quote_volume = _num(ticker, "quoteVolume", what)
        scale, inverse = _size_scale(market)
        if scale != 1.0 or inverse:
            bid_size = _to_base(bid_size, bid, scale, inverse)
            ask_size = _to_base(ask_size, ask, scale, inverse)
            base_volume = _to_base(base_volume, last, scale, inverse)
        self._append(
            (
                recv_ms if ts is None else ts,
                recv_ms,
                exchange,
                symbol,
                market_type_of(symbol, market),
                bid,
                ask,
                bid_size,
                ask_size,
                last,
                base_volume,
                quote_volume,
            )
        )


def _levels(
    book: Mapping[str, Any], side: str, depth: int, what: str, scale: float, inverse: bool
) -> tuple[list[float], list[float]]:
    levels = book.get(side)
    if not isinstance(levels, list | tuple):
        raise MalformedRecord(f"{what} {side} is not a list: {type(levels).__name__}")
    prices: list[float] = []
    sizes: list[float] = []
    for level in levels[:depth]:
        if not isinstance(level, list | tuple) or len(level) < 2:
            raise MalformedRecord(f"{what} {side} level is not [price, size, ...]: {level!r}")
        price = _as_float(level[0], f"{what} {side} price")
        size = _as_float(level[1], f"{what} {side} size")
        prices.append(price)
        if inverse:
            size = size * scale / price if price else 0.0
        elif scale != 1.0:
            size *= scale
        sizes.append(size)
    return prices, sizes


class OrderBookBuilder(_Builder):
    """Rows of ``ORDER_BOOKS`` (top ``depth`` levels per side) from ccxt order books."""

    schema = ORDER_BOOKS
    kind = "order_book"

    def __init__(self, depth: int = 20) -> None:
        if depth < 1:
            raise ValueError("order book depth must be >= 1")
        super().__init__()
        self.depth = depth

    def add(
        self,
        book: Mapping[str, Any],
        *,
        exchange: str,
        recv_ms: int,
        market: Mapping[str, Any] | None = None,
    ) -> None:
        symbol = _symbol(book, "order book")
        what = f"order book {exchange} {symbol}"
        ts = _ts(book, "timestamp", what)
        nonce = _ts(book, "nonce", what)
        scale, inverse = _size_scale(market)
        bid_px, bid_sz = _levels(book, "bids", self.depth, what, scale, inverse)
        ask_px, ask_sz = _levels(book, "asks", self.depth, what, scale, inverse)
        self._append(
            (
                recv_ms if ts is None else ts,
                recv_ms,
                exchange,
                symbol,
                market_type_of(symbol, market),
                max(len(bid_px), len(ask_px)),
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
                nonce,
            )
        )


class FundingRateBuilder(_Builder):
    """Rows of ``FUNDING_RATES`` from ccxt funding rates (``fetch_funding_rate(s)``).

    ``interval_hints`` maps ``(exchange, symbol)`` to a known interval in hours (e.g.
    from ``fetch_funding_intervals``), used when the record has no ``interval``.
    """

    schema = FUNDING_RATES
    kind = "funding_rate"

    def __init__(self, interval_hints: Mapping[tuple[str, str], float] | None = None) -> None:
        super().__init__()
        self.interval_hints: dict[tuple[str, str], float] = dict(interval_hints or {})
        self.stats.update(interval_inferred=0, interval_assumed=0)
        self._assumed_logged: set[tuple[str, str]] = set()

    def add(
        self,
        funding: Mapping[str, Any],
        *,
        exchange: str,
        recv_ms: int,
        market: Mapping[str, Any] | None = None,
    ) -> None:
        symbol = _symbol(funding, "funding rate")
        what = f"funding rate {exchange} {symbol}"
        rate = _num(funding, "fundingRate", what)
        if rate is None:
            raise MalformedRecord(f"{what} has no fundingRate")
        ts = _ts(funding, "timestamp", what)
        ts = recv_ms if ts is None else ts
        funding_ts = _ts(funding, "fundingTimestamp", what)
        next_ts = _ts(funding, "nextFundingTimestamp", what)
        next_rate = _num(funding, "nextFundingRate", what)
        mark = _num(funding, "markPrice", what)
        index = _num(funding, "indexPrice", what)
        hours = parse_interval_hours(funding.get("interval"))
        inferred = assumed = False
        if hours is None:
            hours = self.interval_hints.get((exchange, symbol))
        if hours is None and funding_ts is not None and next_ts is not None and next_ts > funding_ts:
            hours = (next_ts - funding_ts) / 3_600_000
            inferred = True
        if hours is None:
            hours = DEFAULT_FUNDING_INTERVAL_H
            assumed = True
        upcoming = [t for t in (funding_ts, next_ts) if t is not None]
        later = [t for t in upcoming if t >= ts]
        next_funding_ts = min(later) if later else (max(upcoming) if upcoming else None)
        self._append(
            (
                ts,
                recv_ms,
                exchange,
                symbol,
                rate,
                hours,
                rate / hours,
                funding_ts,
                next_funding_ts,
                next_rate,
                mark,
                index,
            )
        )
        if inferred:
            self.stats["interval_inferred"] += 1
        if assumed:
            self.stats["interval_assumed"] += 1
            if (exchange, symbol) not in self._assumed_logged:
                self._assumed_logged.add((exchange, symbol))
                log.warning(
                    "%s gives no funding interval; assuming %sh (counted in interval_assumed)",
                    what,
                    DEFAULT_FUNDING_INTERVAL_H,
                )


class MarketBuilders:
    """The three builders together, keyed by record kind, cutting ``MarketBatch``es.

    ``markets`` maps exchange id → ccxt markets (symbol → market) and supplies
    market types and contract sizes; missing entries fall back to the symbol form.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        markets: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        interval_hints: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self.quotes = QuoteBuilder()
        self.order_books = OrderBookBuilder(depth)
        self.funding_rates = FundingRateBuilder(interval_hints)
        self.markets: dict[str, Mapping[str, Mapping[str, Any]]] = dict(markets or {})
        self._by_kind: dict[str, _Builder] = {
            "ticker": self.quotes,
            "order_book": self.order_books,
            "funding_rate": self.funding_rates,
        }
        self._datasets: dict[str, _Builder] = {
            "quotes": self.quotes,
            "order_books": self.order_books,
            "funding_rates": self.funding_rates,
        }

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_kind.values())

    def _market(self, exchange: str, record: Any) -> Mapping[str, Any] | None:
        if not isinstance(record, Mapping):
            return None
        markets = self.markets.get(exchange)
        symbol = record.get("symbol")
        market = markets.get(symbol) if markets and isinstance(symbol, str) else None
        if market is None and record.get("contractSize") is not None and isinstance(symbol, str):
            # a recorded structure carries its market's contract size (pipeline.sources.recording)
            return {
                "contract": True,
                "contractSize": _as_float(record["contractSize"], f"{symbol} contractSize"),
                "inverse": bool(record.get("inverse")),
                "type": market_type_of(symbol),
            }
        return market

    def add(self, kind: str, record: Any, *, exchange: str, recv_ms: int) -> None:
        """Add one ccxt structure of ``kind``; raises ``MalformedRecord`` when it is bad."""
        builder = self._by_kind.get(kind)
        if builder is None:
            raise MalformedRecord(f"unknown record kind {kind!r} (expected one of {', '.join(KINDS)})")
        builder.add(record, exchange=exchange, recv_ms=recv_ms, market=self._market(exchange, record))

    def try_add(self, kind: str, record: Any, *, exchange: str, recv_ms: int) -> bool:
        try:
            self.add(kind, record, exchange=exchange, recv_ms=recv_ms)
        except MalformedRecord as exc:
            builder = self._by_kind.get(kind)
            if builder is not None:
                builder.stats["malformed"] += 1
            log.debug("skipped malformed %s record from %s: %s", kind, exchange, exc)
            return False
        return True

    def take_batch(self, clock_ms: int) -> MarketBatch:
        """A batch of every non-empty dataset; the builders are emptied."""
        tables = {name: b.take() for name, b in self._datasets.items() if len(b)}
        return MarketBatch(clock_ms=clock_ms, tables=tables)

    @property
    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, builder in self._datasets.items():
            for key, value in builder.stats.items():
                out[f"{name}.{key}"] = value
        return out


def normalise(
    kind: str,
    records: list[Any],
    *,
    exchange: str,
    recv_ms: int,
    depth: int = 20,
    markets: Mapping[str, Mapping[str, Any]] | None = None,
    on_error: Callable[[int, MalformedRecord], None] | None = None,
) -> pa.Table:
    """One-shot: a list of ccxt structures of one kind → one table.

    Without ``on_error`` the first malformed record raises; with it, bad records
    are reported as ``on_error(index, error)`` and skipped.
    """
    builders = MarketBuilders(depth, markets={exchange: markets} if markets else None)
    builder = builders._by_kind.get(kind)
    if builder is None:
        raise MalformedRecord(f"unknown record kind {kind!r} (expected one of {', '.join(KINDS)})")
    for i, record in enumerate(records):
        try:
            builders.add(kind, record, exchange=exchange, recv_ms=recv_ms)
        except MalformedRecord as exc:
            if on_error is None:
                raise
            on_error(i, exc)
    return builder.take()
