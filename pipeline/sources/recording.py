"""Recording what the live source receives, in the replay NDJSON of the CONTRACT.

``NdjsonRecorder`` is handed to ``CcxtMarketSource`` (``recorder=``): every structure
the source ingests (a book, a ticker, a funding rate, a confirmed quiet book) is
written as one line::

    {"ts": <receive time, epoch ms>, "exchange": "<ccxt id>", "kind": "order_book"|"ticker"|"funding_rate",
     "data": <the ccxt unified structure>}

``ts`` is the receive time the live source stamps on its rows (``recv_ts``), which is
the clock the replay source gives its rows, so replaying the file through the same
normalisation gives the same lake rows. To keep that true without the exchange's
markets at replay time, ``data`` is the ccxt structure with three additions, all
fields ccxt itself uses:

- order books are cut to the depth the source keeps (what ``fetch_order_book(symbol,
  depth)`` returns);
- a derivative market's ``contractSize`` (and ``inverse`` when true) rides on its
  books and tickers, whose sizes ccxt gives in contracts (okx swaps: 0.01 BTC); the
  replay source converts them to base units as the live source does with its markets;
- a funding rate without ``interval`` gets the interval the source learned from
  ``fetch_funding_intervals`` (``"8h"``), as ccxt gives it where the exchange says.

Older replay readers ignore the extra keys. ``record_live`` runs the live sources of
the configured exchanges in this process for a while and records them
(``arbflow record``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any

from core.settings import Settings
from pipeline.schemas import MarketBatch

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0
"""The file is flushed at least this often (a killed recorder loses at most this much)."""


def _plain(value: Any) -> Any:
    """JSON fallback for what ccxt structures may hold beyond plain types."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple | set):
        return list(value)
    return str(value)


def _hours_text(hours: float) -> str:
    return f"{hours:g}h"


def recordable(
    kind: str,
    record: Any,
    *,
    depth: int,
    market: Mapping[str, Any] | None = None,
    interval_hours: float | None = None,
) -> Any:
    """The structure as it is written to the file (see the module docstring)."""
    if not isinstance(record, Mapping):
        return record  # malformed: written as is, the replay counts it malformed too
    data = dict(record)
    if kind == "order_book":
        for side in ("bids", "asks"):
            levels = data.get(side)
            if isinstance(levels, list | tuple):
                data[side] = [
                    list(level) if isinstance(level, list | tuple) else level for level in levels[:depth]
                ]
    if kind in ("order_book", "ticker") and market is not None and market.get("contract"):
        size = market.get("contractSize")
        if size is not None and "contractSize" not in data:
            data["contractSize"] = size
            if market.get("inverse"):
                data["inverse"] = True
    if kind == "funding_rate" and data.get("interval") in (None, "") and interval_hours is not None:
        data["interval"] = _hours_text(interval_hours)
    return data


class NdjsonRecorder:
    """Appends replay records to an NDJSON file; one event loop writes it (not thread-safe)."""

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.monotonic, append: bool = False
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("a" if append else "w", encoding="utf-8")
        self._clock = clock
        self._flushed = clock()
        self._last_ts = 0
        self.records = 0
        self.by_kind: dict[str, int] = {}
        self.by_exchange: dict[str, int] = {}
        self.out_of_order = 0

    def write(self, ts: int, exchange: str, kind: str, data: Any) -> None:
        if self._fh is None:
            return
        line = json.dumps(
            {"ts": int(ts), "exchange": exchange, "kind": kind, "data": data},
            default=_plain,
            separators=(",", ":"),
        )
        self._fh.write(line + "\n")
        self.records += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.by_exchange[exchange] = self.by_exchange.get(exchange, 0) + 1
        if ts < self._last_ts:
            self.out_of_order += 1
        self._last_ts = max(self._last_ts, ts)
        if self._clock() - self._flushed >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._flushed = self._clock()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "records": self.records,
            "by_kind": dict(self.by_kind),
            "by_exchange": dict(self.by_exchange),
            "out_of_order": self.out_of_order,
        }


async def record_live(
    settings: Settings,
    out: str | Path,
    duration_s: float,
    *,
    on_batch: Callable[[str, MarketBatch], Any] | None = None,
    on_tick: Callable[[float], Awaitable[Any] | Any] | None = None,
) -> dict[str, Any]:
    """Run the live source of every configured exchange for ``duration_s`` and record it.

    ``on_batch(exchange, batch)`` sees every batch the sources cut (what the live
    pipeline would write to the lake); ``on_tick(elapsed_s)`` is called about once a
    second (progress). Returns the recorder's counts and each source's stats.
    """
    from pipeline.sources.factory import validate_source
    from pipeline.sources.live import CcxtMarketSource

    validate_source(settings, "live")
    recorder = NdjsonRecorder(out)
    market = settings.market
    sources = [
        CcxtMarketSource(exchange, list(market.symbols), market, fees=settings.fees, recorder=recorder)
        for exchange in market.exchanges
    ]

    async def pump(source: CcxtMarketSource) -> None:
        async for batch in source.batches():
            if on_batch is not None:
                on_batch(source.exchange_id, batch)

    tasks = [asyncio.ensure_future(pump(s)) for s in sources]
    started = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration_s or all(t.done() for t in tasks):
                break
            if on_tick is not None:
                result = on_tick(elapsed)
                if isinstance(result, Awaitable):
                    await result
            await asyncio.sleep(min(1.0, max(0.0, duration_s - elapsed)))
    finally:
        for source in sources:
            await source.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for source in sources:  # rows ingested (and recorded) after the last batch was cut
            last = source.take_batch()
            if on_batch is not None and last.rows:
                on_batch(source.exchange_id, last)
        recorder.close()
    failed = {s.exchange_id: repr(t.exception()) for s, t in zip(sources, tasks, strict=True)
              if t.done() and not t.cancelled() and t.exception() is not None}  # fmt: skip
    return {
        **recorder.stats(),
        "duration_s": round(time.monotonic() - started, 3),
        "sources": {s.exchange_id: dict(s.stats) for s in sources},
        "failed": failed,
    }
