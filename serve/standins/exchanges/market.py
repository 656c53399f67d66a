"""The emulated venues' market: state per exchange fed by a ``MarketSource``.

The prices are not made here. A ``MarketSource`` (the seeded ``SimMarketSource``
of ``pipeline.sources.sim`` or a ``ReplayMarketSource``) yields ``MarketBatch``es;
:class:`MarketFeed` turns their rows into what an exchange keeps: a full order
book per symbol with an update id that moves on every change (and the level diff
of each change), the latest ticker and the latest funding rate. Each exchange's
protocol module (``binance``, ``bybit``, ``okx``) reads that state for its REST
answers and formats the :class:`VenueEvent`s it publishes for its websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

EMULATOR_DEPTH = 50
"""Levels per side the emulated books carry (bybit's and binance's usual subscriptions fit)."""
QUEUE_MAX = 20_000
"""Events buffered per websocket connection; a slower reader is disconnected, as exchanges do."""


class BatchSource(Protocol):
    name: str

    def batches(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Book:
    """A full book of one symbol on one venue; ``update_id`` moves with every change."""

    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    update_id: int = 0
    ts: int = 0

    def levels(self, side: str, limit: int | None = None) -> list[tuple[float, float]]:
        book = self.bids if side == "bids" else self.asks
        ordered = sorted(book.items(), key=lambda kv: -kv[0] if side == "bids" else kv[0])
        return ordered if limit is None else ordered[:limit]

    def replace(
        self, bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts: int
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Set the book to these levels; returns the changed levels per side (size 0: removed)."""
        changes: list[list[tuple[float, float]]] = []
        for side, new in (("bids", bids), ("asks", asks)):
            old = self.bids if side == "bids" else self.asks
            fresh = dict(new)
            diff = [(px, sz) for px, sz in fresh.items() if old.get(px) != sz]
            diff += [(px, 0.0) for px in old if px not in fresh]
            changes.append(diff)
            if side == "bids":
                self.bids = fresh
            else:
                self.asks = fresh
        self.ts = ts
        return changes[0], changes[1]


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """One change on a venue: ``kind`` is ``book``, ``ticker`` or ``funding``."""

    kind: str
    symbol: str
    ts: int
    data: Any = None
    first_id: int = 0  # books: first update id of this change
    last_id: int = 0  # books: last update id (the book's update_id after it)
    prev_id: int = 0  # books: last update id of the previous change


class Venue:
    """One emulated exchange's market state and its event bus."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.books: dict[str, Book] = {}
        self.tickers: dict[str, dict[str, Any]] = {}
        self.funding: dict[str, dict[str, Any]] = {}
        self.listed: set[str] = set()
        self._queues: set[asyncio.Queue[VenueEvent | None]] = set()
        self.updates = 0
        self.gap: Callable[[str], int] = lambda symbol: 0
        """Update ids the next change of a symbol skips (the emulator's sequence-gap fault)."""

    def listen(self) -> asyncio.Queue[VenueEvent | None]:
        queue: asyncio.Queue[VenueEvent | None] = asyncio.Queue(QUEUE_MAX)
        self._queues.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[VenueEvent | None]) -> None:
        self._queues.discard(queue)

    def disconnect_all(self) -> None:
        """Tell every websocket connection to drop (a ``None`` in its queue)."""
        for queue in list(self._queues):
            self._push(queue, None)

    def publish(self, event: VenueEvent) -> None:
        self.updates += 1
        for queue in list(self._queues):
            self._push(queue, event)

    def _push(self, queue: asyncio.Queue[VenueEvent | None], event: VenueEvent | None) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            self._queues.discard(queue)
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    # --- state changes from the source rows ----------------------------------------

    def apply_book(
        self, symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts: int
    ) -> None:
        book = self.books.setdefault(symbol, Book(update_id=1_000_000 + len(self.books) * 1_000))
        bid_diff, ask_diff = book.replace(bids, asks, ts)
        if not bid_diff and not ask_diff:
            return
        book.update_id += self.gap(symbol)  # a lost message: the client sees a hole in the ids
        prev = book.update_id
        book.update_id += max(1, len(bid_diff) + len(ask_diff))
        self.publish(
            VenueEvent(
                "book",
                symbol,
                ts,
                (bid_diff, ask_diff),
                first_id=prev + 1,
                last_id=book.update_id,
                prev_id=prev,
            )
        )

    def apply_ticker(self, symbol: str, ticker: dict[str, Any]) -> None:
        self.tickers[symbol] = ticker
        self.publish(VenueEvent("ticker", symbol, int(ticker["ts"]), ticker))

    def apply_funding(self, symbol: str, rate: dict[str, Any]) -> None:
        self.funding[symbol] = rate
        self.publish(VenueEvent("funding", symbol, int(rate["ts"]), rate))


def _ms(value: Any) -> int:
    if value is None:
        return 0
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return int(value)


class MarketFeed:
    """Pumps a source's batches into one :class:`Venue` per exchange.

    Every venue carries every symbol of the source; an emulator lists a subset.
    """

    def __init__(self, source: BatchSource, exchanges: list[str], symbols: list[str]) -> None:
        self.source = source
        self.symbols = list(symbols)
        self.venues = {name: Venue(name) for name in exchanges}
        for venue in self.venues.values():
            venue.listed = set(symbols)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.perps = {s for s in self.symbols if ":" in s}
        self.ready = asyncio.Event()
        """Set once every venue has a book and a ticker of every symbol and a funding rate of
        every perpetual (the sim source's first tick is such a snapshot)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="exchange-emulator-feed")

    async def stop(self) -> None:
        await self.source.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _pump(self) -> None:
        try:
            async for batch in self.source.batches():
                self.apply(batch)
                self.batches += 1
                if all(self._complete(v) for v in self.venues.values()):
                    self.ready.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # the emulator keeps serving its last state
            log.exception("exchange emulator: the market source failed")

    def _complete(self, venue: Venue) -> bool:
        symbols = set(self.symbols)
        return (
            symbols <= venue.books.keys()
            and symbols <= venue.tickers.keys()
            and self.perps <= venue.funding.keys()
        )

    def apply(self, batch: Any) -> None:
        """Fold one ``MarketBatch`` into the venues (books, then tickers, then funding)."""
        books = batch.get("order_books").to_pylist()
        for row in books:
            venue = self.venues.get(row["exchange"])
            if venue is None:
                continue
            bids = list(zip(row["bid_px"], row["bid_sz"], strict=False))
            asks = list(zip(row["ask_px"], row["ask_sz"], strict=False))
            venue.apply_book(row["symbol"], bids, asks, _ms(row["ts"]))
        quotes = batch.get("quotes")
        if quotes.num_rows:
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for row in quotes.to_pylist():  # the last quote per symbol of this batch
                latest[(row["exchange"], row["symbol"])] = row
            for (exchange, symbol), row in latest.items():
                venue = self.venues.get(exchange)
                if venue is None or row["bid"] is None or row["ask"] is None:
                    continue
                row["ts"] = _ms(row["ts"])
                row.pop("recv_ts", None)
                venue.apply_ticker(symbol, row)
        for row in batch.get("funding_rates").to_pylist():
            venue = self.venues.get(row["exchange"])
            if venue is None:
                continue
            for key in ("ts", "funding_ts", "next_funding_ts"):
                row[key] = _ms(row[key]) if row[key] is not None else None
            row.pop("recv_ts", None)
            venue.apply_funding(row["symbol"], row)
