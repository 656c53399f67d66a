"""The REST producers of ``CcxtMarketSource`` (``fetch_*`` polling).

A mixin: the state it uses belongs to ``pipeline.sources.live.CcxtMarketSource``.
In REST mode everything is polled; in websocket mode only what has no (working)
stream: books whose stream was refused, tickers without a stream, funding rates
where ccxt.pro has no ``watch_funding_rate``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pipeline.sources.live_streams import WebsocketStreams


class RestPolling(WebsocketStreams):
    use_websockets: bool
    rest_depth: int

    def _has(self, feature: str) -> bool:  # pragma: no cover - in live
        raise NotImplementedError

    def _groups(self) -> dict[str, list[str]]:  # pragma: no cover - in live
        raise NotImplementedError

    def _swap_symbols(self) -> list[str]:  # pragma: no cover - in live
        raise NotImplementedError

    # --- REST polling -----------------------------------------------------------------------

    def _rest_book_symbols(self) -> list[str]:
        return [s for s in self.symbols if not self.use_websockets or s in self.rest_books]

    async def _poll_books(self) -> None:
        ex = self.exchange
        depth = self.rest_depth

        async def one(symbol: str) -> None:
            book = await self._guarded(
                f"fetch_order_book {symbol}", symbol, ex.fetch_order_book, symbol, depth
            )
            if book is not None:
                self._ingest("order_book", book, self._wall_ms())

        await asyncio.gather(*(one(s) for s in self._rest_book_symbols()))

    async def _poll_tickers(self) -> None:
        ex = self.exchange
        for group in self._groups().values():
            if self._has("fetchTickers"):
                tickers = await self._guarded("fetch_tickers", None, ex.fetch_tickers, group)
                if tickers is not None:
                    self._ingest_many("ticker", tickers, self._wall_ms())
                continue
            for symbol in group:
                ticker = await self._guarded(f"fetch_ticker {symbol}", symbol, ex.fetch_ticker, symbol)
                if ticker is not None:
                    self._ingest("ticker", ticker, self._wall_ms())

    async def _poll_funding(self) -> None:
        ex = self.exchange
        swaps = self._swap_symbols()
        if not swaps:
            return
        if self._has("fetchFundingRates"):
            rates = await self._guarded("fetch_funding_rates", None, ex.fetch_funding_rates, swaps)
            if rates is not None:
                wanted = set(swaps)
                recv = self._wall_ms()
                values = rates.values() if isinstance(rates, Mapping) else rates
                for rate in values:
                    if not isinstance(rate, Mapping) or rate.get("symbol") in wanted:
                        self._ingest("funding_rate", rate, recv)
        elif self._has("fetchFundingRate"):
            for symbol in swaps:
                rate = await self._guarded(
                    f"fetch_funding_rate {symbol}", symbol, ex.fetch_funding_rate, symbol
                )
                if rate is not None:
                    self._ingest("funding_rate", rate, self._wall_ms())

    async def poll_once(self, *, books: bool = True, tickers: bool = True, funding: bool = True) -> None:
        """One REST round; rows go to the builders (``take_batch`` or ``batches()`` cut them)."""
        if books:
            await self._poll_books()
        if tickers:
            await self._poll_tickers()
        if funding:
            await self._poll_funding()

    def _ws_tickers(self) -> bool:
        return (
            self.use_websockets
            and not self.rest_tickers
            and (self._has("watchTickers") or self._has("watchTicker"))
        )

    async def _poll_loop(self) -> None:
        """REST for whatever has no (working) stream: everything in REST mode."""
        while not self._closed and self.symbols:
            started = self._clock()
            books = bool(self._rest_book_symbols())
            tickers = not self._ws_tickers()
            funding = not self.ws_funding
            if books or tickers or funding:
                await self.poll_once(books=books, tickers=tickers, funding=funding)
                self._wake.set()
            elapsed = self._clock() - started
            await self._sleep(max(0.0, self.settings.poll_interval_s - elapsed))
