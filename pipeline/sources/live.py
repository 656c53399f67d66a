"""``CcxtMarketSource``: live market data of one exchange through ccxt.

REST polling with ``ccxt.async_support`` every ``poll_interval_s`` (order books,
tickers, funding rates of swap symbols), and ``ccxt.pro`` websockets
(``watch_order_book``, ``watch_tickers``/``watch_ticker``) for books and tickers
when ``settings.websockets`` is on and the exchange has them; funding rates are
always polled. Rows are normalised by ``pipeline.normalise`` and stamped with the
exchange time and the receive time.

Resilience: ccxt errors are translated to ``core.errors``; retryable ones are
retried with exponential backoff and jitter (``core.resilience.BackoffPolicy``,
capped at ``max_backoff_s``) and feed a per-exchange circuit breaker
(``breaker_failures`` consecutive failures open it for ``breaker_reset_s``, then
one probe call is let through). Symbols the exchange does not list are dropped
with one warning. Markets are loaded once at start, with retries.

For offline tests pass ``exchange=`` a pre-built instance (``pipeline.ccxt_offline``)
whose ``fetch`` coroutine answers recorded responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import ccxt

from core.errors import (
    BadExchangeResponse,
    CircuitOpen,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
    SymbolNotListed,
)
from core.resilience import BackoffPolicy, CircuitBreaker
from core.settings import MarketSettings
from pipeline.ccxt_offline import prepare_offline_options, taker_fees
from pipeline.normalise import MarketBuilders, market_type_of, parse_interval_hours
from pipeline.schemas import MarketBatch

log = logging.getLogger(__name__)

WS_FLUSH_S = 0.1
"""With websockets, updates arriving within this window go into one batch."""


def map_ccxt_error(exchange_id: str, exc: BaseException) -> ExchangeError:
    """Translate a ccxt (or parsing) exception into the ``core.errors`` vocabulary."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, ccxt.RateLimitExceeded):
        return ExchangeRateLimited(exchange_id, text)
    if isinstance(exc, ccxt.NetworkError):  # timeouts, DDoS protection, maintenance, nonce
        return ExchangeUnavailable(exchange_id, text)
    if isinstance(exc, ccxt.BadSymbol):
        return SymbolNotListed(exchange_id, text)
    if isinstance(exc, ccxt.BadResponse):
        return BadExchangeResponse(exchange_id, text)
    if isinstance(exc, ccxt.BaseError):
        return ExchangeError(exchange_id, text)
    if isinstance(exc, TimeoutError | ConnectionError):
        return ExchangeUnavailable(exchange_id, text)
    # KeyError/TypeError/ValueError… raised while ccxt parses an unexpected payload.
    return BadExchangeResponse(exchange_id, text)


def transfer_status_from_currencies(
    currencies: Mapping[str, Any], assets: set[str]
) -> dict[str, tuple[bool, bool]]:
    """``asset -> (deposit_ok, withdraw_ok)`` from ccxt currency structures.

    ccxt gives ``deposit``/``withdraw`` as True, False or None (unknown); only an
    explicit False (or ``active`` False) closes a direction.
    """
    out: dict[str, tuple[bool, bool]] = {}
    for asset in assets:
        cur = currencies.get(asset)
        if not isinstance(cur, Mapping):
            continue
        active = cur.get("active") is not False
        out[asset] = (active and cur.get("deposit") is not False, active and cur.get("withdraw") is not False)
    return out


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class CcxtMarketSource:
    """Market data of one ccxt exchange as ``MarketBatch``es (``core.ports.MarketSource``).

    ``fees`` is ``Settings.fees`` (overrides of the taker fees); the resulting
    per-market-type taker fees are in ``self.fees`` once markets are loaded.
    ``exchange`` may be a pre-built ccxt async/pro instance, used as configured
    (an instance built here has ``enableRateLimit`` on and the request timeout of
    the settings); the source closes it in ``close()`` unless ``owns_exchange=False``.
    ``clock`` (monotonic seconds), ``wall_ms``, ``sleep`` and ``rng`` are injectable
    for tests.
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: Iterable[str],
        settings: MarketSettings | None = None,
        fees: Mapping[str, Mapping[str, float]] | None = None,
        *,
        exchange: Any = None,
        owns_exchange: bool = True,
        backoff: BackoffPolicy | None = None,
        market_load_attempts: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.settings = settings or MarketSettings()
        self.requested_symbols = list(dict.fromkeys(symbols))
        self.symbols: list[str] = []
        self.fee_overrides = fees or {}
        self.fees: dict[str, float] = taker_fees(exchange_id, None, self.fee_overrides)
        self.transfer: dict[str, tuple[bool, bool]] = {}
        self.exchange = exchange
        self._owns_exchange = owns_exchange
        self.backoff = backoff or BackoffPolicy(
            base_s=min(0.5, self.settings.max_backoff_s), cap_s=self.settings.max_backoff_s
        )
        self.breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_s)
        self.market_load_attempts = market_load_attempts
        self._clock = clock
        self._wall_ms = wall_ms
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._failures = 0  # consecutive retryable failures, drives the backoff
        self._builders = MarketBuilders(self.settings.order_book_depth)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._task_error: BaseException | None = None
        self._started = False
        self._closed = False
        self.use_websockets = False
        self.stats: dict[str, int] = {
            "requests": 0,
            "errors": 0,
            "retries": 0,
            "breaker_waits": 0,
            "bad_responses": 0,
            "dropped_symbols": 0,
            "malformed": 0,
            "batches": 0,
            "rows": 0,
        }

    # --- set-up -------------------------------------------------------------------------------

    def _build_exchange(self) -> Any:
        wanted_pro = self.settings.websockets
        module: Any = importlib.import_module("ccxt.pro" if wanted_pro else "ccxt.async_support")
        cls = getattr(module, self.exchange_id, None)
        if cls is None and wanted_pro:
            module = importlib.import_module("ccxt.async_support")
            cls = getattr(module, self.exchange_id, None)
        if cls is None:
            raise ExchangeError(self.exchange_id, "not a ccxt exchange id")
        exchange = cls({"enableRateLimit": True, "timeout": self.settings.request_timeout_ms})
        if self.exchange_id == "binance":
            # margin pair lists are not needed for market data and cost extra requests
            prepare_offline_options(exchange)
        return exchange

    def _has(self, feature: str) -> bool:
        return bool(self.exchange.has.get(feature))

    async def start(self) -> None:
        """Load markets (with retry), drop unlisted symbols, work out fees and modes."""
        if self._started:
            return
        if self.exchange is None:
            self.exchange = self._build_exchange()
        ex = self.exchange
        markets = await self._call("load_markets", ex.load_markets, attempts=self.market_load_attempts)
        listed = [s for s in self.requested_symbols if s in markets]
        missing = [s for s in self.requested_symbols if s not in markets]
        if missing:
            self.stats["dropped_symbols"] += len(missing)
            log.warning("%s does not list %s; dropped", self.exchange_id, ", ".join(missing))
        self.symbols = listed
        self._builders.markets[self.exchange_id] = markets
        self.fees = taker_fees(self.exchange_id, markets, self.fee_overrides)
        self.use_websockets = bool(
            self.settings.websockets and self._has("ws") and self._has("watchOrderBook")
        )
        await self._load_funding_intervals()
        await self._load_transfer_status()
        self._started = True
        log.info(
            "%s: %d symbols, %s, taker fees %s",
            self.exchange_id,
            len(listed),
            "websockets" if self.use_websockets else "REST polling",
            self.fees,
        )

    async def _load_transfer_status(self) -> None:
        """Deposit/withdraw status of the symbols' base assets, where the exchange tells."""
        if not self._has("fetchCurrencies"):
            return
        try:
            currencies = await self.exchange.fetch_currencies()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # often private (needs keys): unknown status counts as open
            log.info("%s: currency status unavailable (%s)", self.exchange_id, exc)
            return
        assets = {s.split("/")[0] for s in self.symbols}
        self.transfer = transfer_status_from_currencies(currencies or {}, assets)

    async def _load_funding_intervals(self) -> None:
        swaps = self._swap_symbols()
        if not swaps or not self._has("fetchFundingIntervals"):
            return
        try:
            intervals = await self.exchange.fetch_funding_intervals(swaps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # optional information: the rates still come without it
            log.info("%s: funding intervals unavailable (%s)", self.exchange_id, exc)
            return
        hints = self._builders.funding_rates.interval_hints
        for symbol, info in (intervals or {}).items():
            try:
                hours = parse_interval_hours(info.get("interval")) if isinstance(info, Mapping) else None
            except Exception:
                hours = None
            if hours is not None:
                hints[(self.exchange_id, symbol)] = hours

    def _market(self, symbol: str) -> Mapping[str, Any] | None:
        markets = self.exchange.markets if self.exchange is not None else None
        return markets.get(symbol) if markets else None

    def _swap_symbols(self) -> list[str]:
        return [s for s in self.symbols if market_type_of(s, self._market(s)) == "swap"]

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for symbol in self.symbols:
            groups.setdefault(market_type_of(symbol, self._market(symbol)), []).append(symbol)
        return groups

    # --- calling with resilience -------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any, attempts: int = 0) -> Any:
        """Call ``fn(*args)`` through the breaker, retrying retryable errors with backoff.

        ``attempts`` > 0 bounds the number of tries (then the last error is raised);
        0 retries until success or ``close()``. Non-retryable errors are raised as
        ``core.errors`` at once.
        """
        tries = 0
        while True:
            if self._closed:
                raise asyncio.CancelledError
            now = self._clock()
            if not self.breaker.allow(now):
                self.stats["breaker_waits"] += 1
                await self._sleep(max(self.breaker.retry_in(now), 0.05))
                continue
            tries += 1
            self.stats["requests"] += 1
            try:
                result = await fn(*args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = map_ccxt_error(self.exchange_id, exc)
                self.stats["errors"] += 1
                if isinstance(error, SymbolNotListed):
                    self.breaker.record_success(self._clock())  # the exchange did answer
                    raise error from exc
                was_open = self.breaker.times_opened
                self.breaker.record_failure(self._clock())
                if self.breaker.times_opened > was_open:
                    log.warning(
                        "%s: circuit breaker open for %.0fs after %d consecutive failures (%s)",
                        self.exchange_id,
                        self.breaker.reset_after_s,
                        self.breaker.consecutive_failures,
                        error,
                    )
                if not error.retryable:
                    if isinstance(error, BadExchangeResponse):
                        self.stats["bad_responses"] += 1
                    raise error from exc
                if attempts and tries >= attempts:
                    raise error from exc
                delay = self.backoff.delay(min(self._failures, 64), self._rng.random())
                self._failures += 1
                self.stats["retries"] += 1
                log.info("%s %s failed (%s); retrying in %.2fs", self.exchange_id, what, error, delay)
                await self._sleep(delay)
                continue
            self._failures = 0
            self.breaker.record_success(self._clock())
            return result

    def _drop(self, symbol: str, error: ExchangeError) -> None:
        if symbol in self.symbols:
            self.symbols.remove(symbol)
            self.stats["dropped_symbols"] += 1
            log.warning("%s: dropping %s: %s", self.exchange_id, symbol, error)

    async def _guarded(
        self, what: str, symbol: str | None, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        """``_call`` for one poll item: a symbol error drops it, other non-retryable errors skip it."""
        try:
            return await self._call(what, fn, *args)
        except SymbolNotListed as exc:
            if symbol is not None:
                self._drop(symbol, exc)
            else:
                log.warning("%s %s: %s", self.exchange_id, what, exc)
        except (ExchangeError, CircuitOpen) as exc:
            log.warning("%s %s skipped: %s", self.exchange_id, what, exc)
        return None

    # --- ingestion --------------------------------------------------------------------------

    def _ingest(self, kind: str, record: Any, recv_ms: int) -> None:
        if not self._builders.try_add(kind, record, exchange=self.exchange_id, recv_ms=recv_ms):
            self.stats["malformed"] += 1

    def _ingest_many(self, kind: str, records: Any, recv_ms: int) -> None:
        if isinstance(records, Mapping):
            records = records.values()
        for record in records or ():
            self._ingest(kind, record, recv_ms)

    # --- REST polling -----------------------------------------------------------------------

    async def _poll_books(self) -> None:
        ex = self.exchange
        depth = self.settings.order_book_depth

        async def one(symbol: str) -> None:
            book = await self._guarded(
                f"fetch_order_book {symbol}", symbol, ex.fetch_order_book, symbol, depth
            )
            if book is not None:
                self._ingest("order_book", book, self._wall_ms())

        await asyncio.gather(*(one(s) for s in list(self.symbols)))

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

    async def _poll_loop(self, *, books: bool, tickers: bool, funding: bool) -> None:
        while not self._closed and self.symbols:
            started = self._clock()
            await self.poll_once(books=books, tickers=tickers, funding=funding)
            self._wake.set()
            elapsed = self._clock() - started
            await self._sleep(max(0.0, self.settings.poll_interval_s - elapsed))

    # --- websockets -------------------------------------------------------------------------

    async def _watch_book(self, symbol: str) -> None:
        ex = self.exchange
        depth = self.settings.order_book_depth
        while not self._closed and symbol in self.symbols:
            book = await self._guarded(
                f"watch_order_book {symbol}", symbol, ex.watch_order_book, symbol, depth
            )
            if book is not None:
                self._ingest("order_book", book, self._wall_ms())
                self._wake.set()

    async def _watch_tickers(self, group: list[str]) -> None:
        ex = self.exchange
        while not self._closed and group:
            tickers = await self._guarded("watch_tickers", None, ex.watch_tickers, group)
            if tickers is not None:
                self._ingest_many("ticker", tickers, self._wall_ms())
                self._wake.set()

    async def _watch_ticker(self, symbol: str) -> None:
        ex = self.exchange
        while not self._closed and symbol in self.symbols:
            ticker = await self._guarded(f"watch_ticker {symbol}", symbol, ex.watch_ticker, symbol)
            if ticker is not None:
                self._ingest("ticker", ticker, self._wall_ms())
                self._wake.set()

    # --- the port ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None and self._task_error is None:
                self._task_error = t.exception()
                self._wake.set()

        task.add_done_callback(done)
        self._tasks.append(task)

    def _start_producers(self) -> None:
        if self.use_websockets:
            for symbol in self.symbols:
                self._spawn(self._watch_book(symbol))
            if self._has("watchTickers"):
                for group in self._groups().values():
                    self._spawn(self._watch_tickers(group))
            elif self._has("watchTicker"):
                for symbol in self.symbols:
                    self._spawn(self._watch_ticker(symbol))
            ws_tickers = self._has("watchTickers") or self._has("watchTicker")
            self._spawn(self._poll_loop(books=False, tickers=not ws_tickers, funding=True))
        else:
            self._spawn(self._poll_loop(books=True, tickers=True, funding=True))

    def take_batch(self) -> MarketBatch:
        """Everything ingested so far as one batch, clocked by the wall clock."""
        batch = self._builders.take_batch(self._wall_ms())
        self.stats["batches"] += 1
        self.stats["rows"] += batch.rows
        return batch

    async def batches(self) -> AsyncIterator[MarketBatch]:
        await self.start()
        if not self.symbols:
            log.warning("%s: no listed symbols to watch", self.exchange_id)
            return
        self._start_producers()
        try:
            while not self._closed:
                await self._wake.wait()
                if self.use_websockets and not self._closed:
                    await self._sleep(WS_FLUSH_S)  # coalesce a burst of updates
                self._wake.clear()
                if self._task_error is not None:
                    raise self._task_error
                if len(self._builders):
                    yield self.take_batch()
                if not self.symbols:
                    log.warning("%s: every symbol was dropped; the source ends", self.exchange_id)
                    return
        finally:
            await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self._stop_tasks()
        if self.exchange is not None and self._owns_exchange:
            with contextlib.suppress(Exception):
                await self.exchange.close()

    @property
    def builder_stats(self) -> dict[str, int]:
        return self._builders.stats
