"""``ReplayMarketSource``: market data from an NDJSON replay file (CONTRACT.md).

One JSON object a line::

    {"ts": <epoch ms>, "exchange": "<ccxt id>", "kind": "order_book"|"ticker"|"funding_rate",
     "data": <ccxt unified structure>}

The file is streamed line by line (never loaded whole). Records are normalised in
file order and cut into ``MarketBatch``es when the replay time moves past the
batch window or the batch holds ``batch_max_records``. The replay clock is the
records' ``ts`` (never moving backwards); ``recv_ts`` of each row is its record's
``ts``. A malformed line (bad JSON, unknown kind, bad structure…) is counted in
``stats`` and logged with its line number; the replay goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from core.errors import ConfigError, MalformedRecord
from pipeline.normalise import KINDS, MarketBuilders
from pipeline.schemas import MarketBatch

log = logging.getLogger(__name__)

MAX_LOGGED_ERRORS = 100
"""Malformed lines logged one by one; beyond that only counted (and summarised at the end)."""


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        yield from enumerate(fh, start=1)


def _parse_line(line: str) -> tuple[int, str, str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise MalformedRecord(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise MalformedRecord(f"not a JSON object but {type(obj).__name__}")
    ts, exchange, kind = obj.get("ts"), obj.get("exchange"), obj.get("kind")
    if isinstance(ts, float) and ts.is_integer():
        ts = int(ts)
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise MalformedRecord(f"ts is not an epoch-ms integer: {ts!r}")
    if not isinstance(exchange, str) or not exchange:
        raise MalformedRecord(f"exchange is not a ccxt id: {exchange!r}")
    if kind not in KINDS:
        raise MalformedRecord(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if "data" not in obj:
        raise MalformedRecord("no data")
    return ts, exchange, kind, obj["data"]


class ReplayMarketSource:
    """Replays an NDJSON file as ``MarketBatch``es (implements ``core.ports.MarketSource``).

    ``speed``: 0 replays as fast as possible; otherwise batches are paced at
    ``speed`` times real time. ``exchanges``: keep only these exchange ids.
    ``markets``: optional ccxt markets per exchange, for market types and contract
    sizes (see ``pipeline.normalise``).
    """

    name = "replay"

    def __init__(
        self,
        path: str | Path,
        speed: float = 0.0,
        exchanges: Iterable[str] | None = None,
        *,
        depth: int = 20,
        batch_window_ms: int = 100,
        batch_max_records: int = 5_000,
        markets: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if speed < 0:
            raise ConfigError(f"replay speed must be >= 0, got {speed}")
        if batch_window_ms < 0 or batch_max_records < 1:
            raise ConfigError("replay batch_window_ms must be >= 0 and batch_max_records >= 1")
        self.path = Path(path)
        self.speed = speed
        self.exchanges = frozenset(exchanges) if exchanges is not None else None
        self.batch_window_ms = batch_window_ms
        self.batch_max_records = batch_max_records
        self._builders = MarketBuilders(depth, markets=markets)
        self._sleep = sleep
        self._monotonic = monotonic
        self._closed = False
        self.clock_ms: int | None = None
        """Replay time: the highest record ``ts`` seen so far."""
        self.errors: list[tuple[int, str]] = []
        """(line number, reason) of the first ``MAX_LOGGED_ERRORS`` malformed lines."""
        self.stats: dict[str, int] = {
            "lines": 0,
            "records": 0,
            "malformed": 0,
            "filtered": 0,
            "blank": 0,
            "out_of_order": 0,
            "batches": 0,
            "rows": 0,
        }

    def _malformed(self, number: int, reason: str) -> None:
        self.stats["malformed"] += 1
        if len(self.errors) < MAX_LOGGED_ERRORS:
            self.errors.append((number, reason))
            log.warning("%s:%d: malformed replay line skipped: %s", self.path, number, reason)

    async def _pace(self, clock_ms: int, origin: tuple[int, float] | None) -> tuple[int, float]:
        loop_time = self._monotonic or asyncio.get_running_loop().time
        if origin is None:
            return clock_ms, loop_time()
        first_ms, started = origin
        due = started + (clock_ms - first_ms) / 1000.0 / self.speed
        delay = due - loop_time()
        if delay > 0:
            await self._sleep(delay)
        return origin

    async def batches(self) -> AsyncIterator[MarketBatch]:
        if not self.path.is_file():
            raise ConfigError(f"replay file {self.path} does not exist (ARBFLOW_MARKET__REPLAY_PATH)")
        builders = self._builders
        stats = self.stats
        window_start: int | None = None
        pending = 0
        origin: tuple[int, float] | None = None
        for number, line in _iter_lines(self.path):
            if self._closed:
                return
            stats["lines"] += 1
            if not line.strip():
                stats["blank"] += 1
                continue
            try:
                ts, exchange, kind, data = _parse_line(line)
            except MalformedRecord as exc:
                self._malformed(number, str(exc))
                continue
            if self.exchanges is not None and exchange not in self.exchanges:
                stats["filtered"] += 1
                continue
            # Cut the pending batch before this record when it moves past the window.
            if pending and window_start is not None and (ts - window_start >= self.batch_window_ms):
                batch = self._cut()
                if self.speed > 0:
                    origin = await self._pace(batch.clock_ms, origin)
                yield batch
                await asyncio.sleep(0)
                pending, window_start = 0, None
            try:
                builders.add(kind, data, exchange=exchange, recv_ms=ts)
            except MalformedRecord as exc:
                self._malformed(number, str(exc))
                continue
            stats["records"] += 1
            if self.clock_ms is not None and ts < self.clock_ms:
                stats["out_of_order"] += 1
            self.clock_ms = ts if self.clock_ms is None else max(self.clock_ms, ts)
            if window_start is None:
                window_start = ts
            pending += 1
            if pending >= self.batch_max_records:
                batch = self._cut()
                if self.speed > 0:
                    origin = await self._pace(batch.clock_ms, origin)
                yield batch
                await asyncio.sleep(0)
                pending, window_start = 0, None
        if pending:
            batch = self._cut()
            if self.speed > 0:
                await self._pace(batch.clock_ms, origin)
            yield batch
        if stats["malformed"]:
            log.warning(
                "%s: replay done, %d malformed line(s) skipped out of %d",
                self.path,
                stats["malformed"],
                stats["lines"],
            )

    def _cut(self) -> MarketBatch:
        assert self.clock_ms is not None
        batch = self._builders.take_batch(self.clock_ms)
        self.stats["batches"] += 1
        self.stats["rows"] += batch.rows
        return batch

    async def close(self) -> None:
        self._closed = True
