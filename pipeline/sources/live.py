"""``CcxtMarketSource``: live market data of one exchange through ccxt.

REST polling with ``ccxt.async_support`` every ``poll_interval_s`` (order books,
tickers, funding rates of swap symbols), and ``ccxt.pro`` websockets
(``watch_order_book``, ``watch_tickers``/``watch_ticker``, ``watch_funding_rate``)
when ``settings.websockets`` is on and the exchange has them; what has no stream
is polled. Rows are normalised by ``pipeline.normalise`` and stamped with the
exchange time and the receive time.

Depth: each exchange is asked for the nearest depth it accepts that is at least
``order_book_depth`` (``ccxt_rules.book_depth``: bybit's websocket takes
1/50/200/1000, okx's keyless channels 1/5/400) and the book is cut locally.

Errors are classified per stream (``ccxt_rules.map_ccxt_error``): transport
failures (network, timeouts, 429/418/503, sequence gaps) are retried with
exponential backoff and jitter (honouring ``Retry-After``) and only they feed the
per-exchange circuit breaker; a refused request (``BadRequest``, auth needed, not
supported) downgrades that stream to REST and says so once; a symbol the exchange
does not list is dropped with one warning.

Supervision: every producer task is restarted with backoff when it fails; a
source whose markets cannot load keeps retrying (``stats["start_failures"]``)
instead of dying; unknown exchange ids fail at construction with a clear error.

Freshness: a websocket book that has not changed is still current while its
stream confirms it (any message, or the connection's keep-alive): every
``freshness_s / 2`` the last book of a quiet stream is re-emitted stamped with the
confirmation time, for up to ``CONFIRM_MAX_QUIET_S``; after that the stream is
restarted. In REST mode a ``poll_interval_s`` at or above ``freshness_s`` is
reported at start (every polled row would be stale).

For offline tests pass ``exchange=`` a pre-built instance (``pipeline.ccxt_offline``)
whose ``fetch`` coroutine answers recorded responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from core.errors import (
    BadExchangeResponse,
    CircuitOpen,
    ConfigError,
    ExchangeError,
    SymbolNotListed,
)
from core.models import TransferStatus
from core.resilience import BackoffPolicy, CircuitBreaker
from core.settings import ExchangeKey, MarketSettings
from pipeline.ccxt_offline import taker_fees
from pipeline.normalise import MarketBuilders, market_type_of, parse_interval_hours
from pipeline.schemas import MarketBatch
from pipeline.sources.ccxt_rules import (
    StreamRefused,
    book_depth,
    ccxt_client,
    map_ccxt_error,
    rebase_urls,
    retry_after_s,
    validate_exchange_ids,
)
from pipeline.sources.ccxt_rules import wall_ms as _wall_ms
from pipeline.sources.live_rest import RestPolling
from pipeline.sources.live_streams import CONFIRM_MAX_QUIET_S, WS_TICKER_PARAMS, WebsocketStreams
from pipeline.sources.live_transfers import TransferChecks
from pipeline.sources.universe import UniverseDiscovery

__all__ = [
    "CONFIRM_MAX_QUIET_S",
    "WS_TICKER_PARAMS",
    "CcxtMarketSource",
    "map_ccxt_error",
    "rebase_urls",
]

log = logging.getLogger(__name__)

WS_FLUSH_S = 0.1
"""With websockets, updates arriving within this window go into one batch."""
REFUSALS_TO_DROP = 3
"""A symbol whose REST calls the exchange refuses this many times (bybit answers a delisted
symbol with a bad-request code, not a bad-symbol one) is dropped."""
FAILURE_DEBOUNCE_S = 1.0
"""Transport failures of several streams within this window count once toward the breaker."""


class CcxtMarketSource(RestPolling, WebsocketStreams, UniverseDiscovery, TransferChecks):
    """Market data of one ccxt exchange as ``MarketBatch``es (``core.ports.MarketSource``).

    ``fees`` is ``Settings.fees`` (overrides of the taker fees); the resulting
    per-market-type taker fees are in ``self.fees`` once markets are loaded.
    ``exchange`` may be a pre-built ccxt async/pro instance, used as configured
    (an instance built here has ``enableRateLimit`` on, the request timeout of the
    settings and the URLs of ``settings.endpoints``); the source closes it in
    ``close()`` unless ``owns_exchange=False``. ``clock`` (monotonic seconds),
    ``wall_ms``, ``sleep`` and ``rng`` are injectable for tests.
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: Iterable[str],
        settings: MarketSettings | None = None,
        fees: Mapping[str, Mapping[str, float]] | None = None,
        *,
        keys: ExchangeKey | None = None,
        exchange: Any = None,
        owns_exchange: bool = True,
        backoff: BackoffPolicy | None = None,
        market_load_attempts: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        recorder: Any = None,
    ) -> None:
        if exchange is None:
            validate_exchange_ids([exchange_id])
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.settings = settings or MarketSettings()
        self.requested_symbols = list(dict.fromkeys(symbols))
        self.symbols: list[str] = []
        self.fee_overrides = fees or {}
        self.fees: dict[str, float] = taker_fees(exchange_id, None, self.fee_overrides)
        self.transfer: dict[str, TransferStatus] = {}
        """Per base asset, what the exchange says about withdrawing and depositing it (by
        network, with fees); an asset missing is unknown. Re-read every
        ``transfer_refresh_s`` (``core.transfers``)."""
        self.transfer_checked = False
        """The exchange was asked at least once (an empty ``transfer`` then means "unknown")."""
        self._keys = keys
        self._keyed: Any = None  # a REST client with the operator's read-only keys
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
        self._failures = 0  # consecutive retryable failures (any call)
        self._last_failure = -1e18  # clock of the last failure the breaker counted
        self._builders = MarketBuilders(self.settings.order_book_depth)
        self.universe: list[Any] = []  # core.universe.Ranked, with symbols=top:N
        self.recorder = recorder  # pipeline.sources.recording.NdjsonRecorder: what is ingested is recorded
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False
        self.use_websockets = False
        self.ws_depth = self.rest_depth = self.settings.order_book_depth
        self.rest_books: set[str] = set()  # websocket mode: symbols whose book stream fell back to REST
        self.rest_tickers = False  # websocket mode: tickers fell back to REST
        self.ws_funding = False
        self._said: set[str] = set()
        self._refusals: dict[str, int] = {}  # symbol -> REST calls for it the exchange refused
        self._last_book: dict[
            str, tuple[dict[str, Any], float]
        ] = {}  # symbol -> (book, clock of its message)
        self.errors_by_class: dict[str, int] = {}
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
            "refused": 0,
            "restarts": 0,
            "start_failures": 0,
            "confirmations": 0,
            "messages": 0,
            "reconnects": 0,
        }
        self._book_seen: dict[str, float] = {}  # symbol -> clock of its last book (or confirmation)
        self._last_reconnect = -1e18
        self.start_error: str | None = None
        self.failing_since: float | None = None  # clock of the first failed start of a failing run

    # --- set-up -------------------------------------------------------------------------------

    def _build_exchange(self) -> Any:
        return ccxt_client(self.exchange_id, self.settings, websockets=self.settings.websockets)

    def _has(self, feature: str) -> bool:
        return bool(self.exchange.has.get(feature))

    def _say_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)

    async def start(self) -> None:
        """Load markets (with retry), drop unlisted symbols, work out fees, depths and modes."""
        if self._started:
            return
        if self.exchange is None:
            self.exchange = self._build_exchange()
        ex = self.exchange
        markets = await self._call("load_markets", ex.load_markets, attempts=self.market_load_attempts)
        if self.settings.universe is not None:  # ARBFLOW_MARKET__SYMBOLS=top:N
            self.requested_symbols = await self._discover_symbols()
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
        wanted = self.settings.order_book_depth
        self.ws_depth = book_depth(self.exchange_id, wanted, websocket=True)
        self.rest_depth = book_depth(self.exchange_id, wanted, websocket=False)
        self.ws_funding = self.use_websockets and self._has("watchFundingRate")
        if not self.use_websockets and self.settings.poll_interval_s >= self.settings.freshness_s:
            log.warning(
                "%s: REST polling every %.1fs cannot keep books fresher than %.1fs "
                "(ARBFLOW_MARKET__FRESHNESS_S): most rows will be judged stale",
                self.exchange_id,
                self.settings.poll_interval_s,
                self.settings.freshness_s,
            )
        await self._load_funding_intervals()
        await self._load_transfer_status()
        self._started = True
        log.info(
            "%s: %d symbols, %s (depth %d asked, %d kept), taker fees %s",
            self.exchange_id,
            len(listed),
            "websockets" if self.use_websockets else "REST polling",
            self.ws_depth if self.use_websockets else self.rest_depth,
            wanted,
            self.fees,
        )

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
        """Call ``fn(*args)`` through the breaker, retrying transport errors with backoff.

        ``attempts`` > 0 bounds the number of tries (then the last error is raised);
        0 retries until success or ``close()``. Other errors are raised as
        ``core.errors`` at once and leave the breaker alone: the exchange did answer.
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
                if not self._started:  # a start that fails is reported at once (and retried)
                    self.start_error = f"{type(error).__name__}: {error}"
                    if self.failing_since is None:
                        self.failing_since = self._clock()
                self.stats["errors"] += 1
                name = type(error).__name__
                self.errors_by_class[name] = self.errors_by_class.get(name, 0) + 1
                if not error.retryable:
                    if isinstance(error, BadExchangeResponse):
                        self.stats["bad_responses"] += 1
                    raise error from exc
                was_open = self.breaker.times_opened
                now = self._clock()
                if what.startswith("watch_") and now - self._last_reconnect >= FAILURE_DEBOUNCE_S:
                    self._last_reconnect = now  # ccxt.pro reconnects on the next watch call
                    self.stats["reconnects"] += 1
                if now - self._last_failure >= FAILURE_DEBOUNCE_S:  # one outage hits every stream at once
                    self._last_failure = now
                    self.breaker.record_failure(now)
                if self.breaker.times_opened > was_open:
                    log.warning(
                        "%s: circuit breaker open for %.0fs after %d consecutive failures (%s)",
                        self.exchange_id,
                        self.breaker.reset_after_s,
                        self.breaker.consecutive_failures,
                        error,
                    )
                if attempts and tries >= attempts:
                    raise error from exc
                delay = self.backoff.delay(min(tries - 1, 64), self._rng.random())
                delay = max(delay, min(retry_after_s(self.exchange), self.settings.max_backoff_s))
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
            self.rest_books.discard(symbol)
            self._last_book.pop(symbol, None)
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
        except StreamRefused as exc:
            if symbol is not None:  # refused for this symbol again and again: drop it
                self._refusals[symbol] = self._refusals.get(symbol, 0) + 1
                if self._refusals[symbol] >= REFUSALS_TO_DROP:
                    self._drop(symbol, exc)
                    return None
            self._say_once(f"skip:{what}", "%s %s refused: %s", self.exchange_id, what, exc)
        except (ExchangeError, CircuitOpen) as exc:
            self._say_once(f"skip:{what}", "%s %s skipped: %s", self.exchange_id, what, exc)
        return None

    # --- ingestion --------------------------------------------------------------------------

    def _ingest(self, kind: str, record: Any, recv_ms: int) -> None:
        self.stats["messages"] += 1
        if kind == "order_book" and isinstance(record, Mapping):
            symbol = record.get("symbol")
            if isinstance(symbol, str):
                self._book_seen[symbol] = self._clock()
        if self.recorder is not None:
            self._record(kind, record, recv_ms)
        if not self._builders.try_add(kind, record, exchange=self.exchange_id, recv_ms=recv_ms):
            self.stats["malformed"] += 1

    def _record(self, kind: str, record: Any, recv_ms: int) -> None:
        from pipeline.sources.recording import recordable

        symbol = record.get("symbol") if isinstance(record, Mapping) else None
        market = self._market(symbol) if isinstance(symbol, str) else None
        hint = self._builders.funding_rates.interval_hints.get((self.exchange_id, symbol or ""))
        data = recordable(
            kind, record, depth=self.settings.order_book_depth, market=market, interval_hours=hint
        )
        self.recorder.write(recv_ms, self.exchange_id, kind, data)

    def _ingest_many(self, kind: str, records: Any, recv_ms: int) -> None:
        if isinstance(records, Mapping):
            records = records.values()
        for record in records or ():
            self._ingest(kind, record, recv_ms)

    # --- the port ---------------------------------------------------------------------------

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a producer, restarting it with backoff whenever it fails."""

        async def supervised() -> None:
            failures = 0
            while not self._closed:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    self.stats["restarts"] += 1
                    delay = self.backoff.delay(min(failures - 1, 64), self._rng.random())
                    log.warning(
                        "%s: %s failed (%s: %s); restarting in %.1fs",
                        self.exchange_id, name, type(exc).__name__, exc, delay,
                    )  # fmt: skip
                    await self._sleep(delay)

        self._tasks.append(asyncio.ensure_future(supervised()))

    def _start_symbol_producers(self, symbols: list[str]) -> None:
        """The websocket streams of ``symbols`` (REST polling covers every symbol by itself)."""
        if not self.use_websockets:
            return
        for symbol in symbols:
            self._spawn(f"book stream {symbol}", lambda s=symbol: self._watch_book(s))  # type: ignore[misc]
        if self._has("watchTickers"):
            groups: dict[str, list[str]] = {}
            for symbol in symbols:
                groups.setdefault(market_type_of(symbol, self._market(symbol)), []).append(symbol)
            for group in groups.values():
                self._spawn("ticker stream", lambda g=group: self._watch_tickers(g))  # type: ignore[misc]
        elif self._has("watchTicker"):
            for symbol in symbols:
                self._spawn(f"ticker stream {symbol}", lambda s=symbol: self._watch_ticker(s))  # type: ignore[misc]
        if self.ws_funding:
            wanted = set(self._swap_symbols())
            for symbol in (s for s in symbols if s in wanted):
                self._spawn(f"funding stream {symbol}", lambda s=symbol: self._watch_funding(s))  # type: ignore[misc]

    def _start_producers(self) -> None:
        self._start_symbol_producers(list(self.symbols))
        if self.use_websockets:
            self._spawn("book confirmation", self._confirm_loop)
        self._spawn("REST polling", self._poll_loop)
        if self._keys is not None or self.transfer:  # refused without keys: asking again won't help
            self._spawn("transfer status", self._transfer_loop)
        if self.settings.universe is not None:
            self._spawn("universe refresh", self._universe_loop)

    def take_batch(self) -> MarketBatch:
        """Everything ingested so far as one batch, clocked by the wall clock."""
        batch = self._builders.take_batch(self._wall_ms())
        self.stats["batches"] += 1
        self.stats["rows"] += batch.rows
        return batch

    async def _start_with_retry(self) -> None:
        """``start()`` until it works: an outage longer than the market retries is waited out."""
        failures = 0
        while not self._closed:
            try:
                await self.start()
                self.start_error, self.failing_since = None, None
                return
            except ConfigError as exc:
                self.start_error = f"{type(exc).__name__}: {exc}"
                raise
            except (ExchangeError, CircuitOpen) as exc:
                if self._closed:  # closed while starting (the client was closed under it)
                    return
                failures += 1
                self.stats["start_failures"] += 1
                self.start_error = f"{type(exc).__name__}: {exc}"
                if self.failing_since is None:
                    self.failing_since = self._clock()
                delay = self.backoff.delay(min(failures, 64), self._rng.random())
                log.error("%s: cannot start (%s); retrying in %.1fs", self.exchange_id, exc, delay)
                await self._sleep(delay)

    async def batches(self) -> AsyncIterator[MarketBatch]:
        await self._start_with_retry()
        if self._closed:
            return
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
        if self._keyed is not None:
            with contextlib.suppress(Exception):
                await self._keyed.close()
            self._keyed = None

    def book_age_p99_s(self) -> float | None:
        """p99 over the symbols of the seconds since each book was last received or confirmed."""
        if not self._book_seen:
            return None
        now = self._clock()
        ages = sorted(now - self._book_seen.get(s, now) for s in self.symbols if s in self._book_seen)
        if not ages:
            return None
        return max(0.0, ages[min(len(ages) - 1, int(0.99 * len(ages)))])

    def metrics(self) -> dict[str, Any]:
        """What the alert monitor exports per exchange (``actors.monitor``) and ``/readyz`` reads."""
        now = self._clock()
        if self._started:
            state = "running"
        elif self.failing_since is not None or self.start_error is not None:
            state = "down"
        else:
            state = "starting"
        return {
            "state": state,
            "start_error": self.start_error,
            "down_s": 0.0 if self.failing_since is None else max(0.0, now - self.failing_since),
            "messages": self.stats["messages"],
            "reconnects": self.stats["reconnects"],
            "restarts": self.stats["restarts"],
            "errors_by_class": dict(self.errors_by_class),
            "breaker": self.breaker.state(now).value,
            "book_age_p99_s": self.book_age_p99_s(),
            "dropped_symbols": self.stats["dropped_symbols"],
            "symbols": len(self.symbols),
        }

    @property
    def builder_stats(self) -> dict[str, int]:
        return self._builders.stats
