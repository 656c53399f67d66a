"""The websocket producers of ``CcxtMarketSource`` (ccxt.pro ``watch_*`` loops).

A mixin: the state it uses (``exchange``, ``symbols``, ``settings``, the clocks,
``rest_books``…) belongs to ``pipeline.sources.live.CcxtMarketSource``. Each
stream classifies its errors: a symbol the exchange does not list is dropped; a
refused stream (bad request, keys needed, not supported) falls back to REST,
said once; transport errors are retried inside ``_call``; anything else ends the
producer, which its supervisor restarts with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import ExchangeError, SymbolNotListed
from core.settings import MarketSettings
from pipeline.sources.ccxt_rules import StreamRefused

log = logging.getLogger("pipeline.sources.live")

CONFIRM_MAX_QUIET_S = 30.0
"""A websocket book is re-confirmed by its live connection for at most this long without a message."""
WS_TICKER_PARAMS: dict[str, dict[str, Any]] = {"binance": {"name": "ticker"}}
"""Per exchange, ``watch_tickers`` params: binance's default ``miniTicker`` has no bid/ask."""


class WebsocketStreams:
    exchange_id: str
    exchange: Any
    symbols: list[str]
    settings: MarketSettings
    stats: dict[str, int]
    rest_books: set[str]
    rest_tickers: bool
    ws_funding: bool
    ws_depth: int
    _closed: bool
    _wake: asyncio.Event
    _last_book: dict[str, tuple[dict[str, Any], float]]
    _clock: Callable[[], float]
    _wall_ms: Callable[[], int]
    _sleep: Callable[[float], Awaitable[Any]]

    def _say_once(self, key: str, message: str, *args: Any) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    async def _call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any, attempts: int = 0) -> Any:
        raise NotImplementedError  # pragma: no cover - in live

    async def _guarded(
        self, what: str, symbol: str | None, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - in live

    def _drop(self, symbol: str, error: ExchangeError) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    def _ingest(self, kind: str, record: Any, recv_ms: int) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    def _ingest_many(self, kind: str, records: Any, recv_ms: int) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    # --- websockets -------------------------------------------------------------------------

    def _refused(self, stream: str, error: ExchangeError, fallback: str) -> None:
        self.stats["refused"] += 1
        self._say_once(
            f"refused:{stream}", "%s refuses %s (%s): %s", self.exchange_id, stream, error, fallback
        )

    async def _watch_book(self, symbol: str) -> None:
        ex = self.exchange
        while not self._closed and symbol in self.symbols and symbol not in self.rest_books:
            try:
                book = await self._call(
                    f"watch_order_book {symbol}", ex.watch_order_book, symbol, self.ws_depth
                )
            except SymbolNotListed as exc:
                self._drop(symbol, exc)
                return
            except StreamRefused as exc:  # refused (auth, bad request…): not the transport
                self.rest_books.add(symbol)
                self._refused(f"the book stream of {symbol}", exc, "polling it over REST instead")
                return
            self._last_book[symbol] = (book, self._clock())
            self._ingest("order_book", book, self._wall_ms())
            self._wake.set()

    async def _watch_tickers(self, group: list[str]) -> None:
        ex = self.exchange
        params = WS_TICKER_PARAMS.get(self.exchange_id, {})
        while not self._closed and group and not self.rest_tickers:
            live = [s for s in group if s in self.symbols]
            if not live:
                return
            try:
                extra = [params] if params else []
                tickers = await self._call("watch_tickers", ex.watch_tickers, live, *extra)
            except SymbolNotListed as exc:
                self._say_once("tickers:symbol", "%s watch_tickers: %s", self.exchange_id, exc)
                await self._sleep(self.settings.poll_interval_s)
                continue
            except StreamRefused as exc:
                self.rest_tickers = True
                self._refused("the ticker stream", exc, "polling tickers over REST instead")
                return
            self._ingest_many("ticker", tickers, self._wall_ms())
            self._wake.set()

    async def _watch_ticker(self, symbol: str) -> None:
        ex = self.exchange
        while not self._closed and symbol in self.symbols and not self.rest_tickers:
            ticker = await self._guarded(f"watch_ticker {symbol}", symbol, ex.watch_ticker, symbol)
            if ticker is not None:
                self._ingest("ticker", ticker, self._wall_ms())
                self._wake.set()

    async def _watch_funding(self, symbol: str) -> None:
        ex = self.exchange
        while not self._closed and symbol in self.symbols and self.ws_funding:
            try:
                rate = await self._call(f"watch_funding_rate {symbol}", ex.watch_funding_rate, symbol)
            except SymbolNotListed as exc:
                self._drop(symbol, exc)
                return
            except StreamRefused as exc:
                self.ws_funding = False
                self._refused("the funding stream", exc, "polling funding rates over REST instead")
                return
            self._ingest("funding_rate", rate, self._wall_ms())
            self._wake.set()

    def _stream_alive(self) -> bool:
        """Whether a websocket of the exchange is open (ccxt closes one whose keep-alive fails)."""
        clients = getattr(self.exchange, "clients", None) or {}
        for client in list(clients.values()):
            try:
                if client.connection is not None and not client.closed():
                    return True
            except Exception:
                continue
        return False

    async def _confirm_loop(self) -> None:
        """Re-emit quiet books that their live stream still vouches for (see the module docstring)."""
        period = max(0.05, self.settings.freshness_s / 2)
        while not self._closed:
            await self._sleep(period)
            if not self._stream_alive():
                continue
            now, recv = self._clock(), self._wall_ms()
            confirmed = 0
            for symbol, (book, seen) in list(self._last_book.items()):
                quiet = now - seen
                if quiet < period or symbol in self.rest_books or symbol not in self.symbols:
                    continue
                if quiet > CONFIRM_MAX_QUIET_S:
                    self._say_once(
                        f"quiet:{symbol}", "%s: the book stream of %s is silent", self.exchange_id, symbol
                    )
                    continue
                self._ingest("order_book", {**book, "timestamp": recv}, recv)
                confirmed += 1
            if confirmed:
                self.stats["confirmations"] += confirmed
                self._wake.set()
