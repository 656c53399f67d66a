"""``SimMarketSource``: a seeded simulator of several exchanges quoting the same symbols.

It emits ``pipeline.schemas.MarketBatch`` objects (``quotes``, ``order_books`` and
``funding_rates`` tables with exactly the schemas of :mod:`pipeline.schemas`), one
per tick, for the demo, tests and load tests (50,000 quotes/s and more): every tick is
generated with numpy array operations. There is no Python loop per quote. The loops
that remain run per exchange, per book level and per active event.

Coherence without coordination
------------------------------
Every price is a pure function of ``(seed, symbol, time)`` (plus the exchange for its
basis and noise):

* the "fundamental" mid of an underlying is ``base * exp(sum of value-noise octaves)``,
  where each octave interpolates Gaussian knots drawn from a counter-based hash
  (splitmix64) of ``(seed, underlying, octave, knot index)``. It is a random walk
  over time scales from 1 s to 1 h, and it can be computed for any timestamp
  without replaying the path;
* the per-row noise, the row count and the symbol of each row come from a
  ``numpy.random.Generator`` seeded with ``(seed, exchange, absolute tick index)``;
* the injected events are drawn per 60 s block of absolute time from
  ``(seed, block index)``.

So several instances, each with ``exchange=`` set to one exchange (one per
coordinator actor), produce exactly the rows the all-exchanges instance produces
for that exchange, when they share ``seed``, ``exchanges``, ``symbols``, ``rate``,
``tick_s`` and the tick grid. Ticks are aligned to multiples of ``tick_s`` in
absolute time.

Calibration (computed once from ``/work/shared/fixtures/exchanges``, BTC/USDT,
2021-2024 snapshots; the fixtures are not read at run time)
-------------------------------------------------------------------------------
====================================  =========================================  ==================
quantity                              fixture(s)                                 value
====================================  =========================================  ==================
top-of-book spread, binance           ccxt_static/binance.response fetchTicker   0.0014 bps (1 tick
                                      + fetchOrderBook spot; raw/binance/        of 0.01), also
                                      nautilus_spot_bookTicker_BTCUSDT,          0.0016 and 0.0023
                                      nautilus_spot_depth_BTCUSDT_limit10
top-of-book spread, okx / bybit       ccxt_static/okx fetchTicker + books;       0.0136-0.023 bps
                                      ccxt_static/bybit fetchTicker,             (1 tick of 0.1)
                                      fetchFundingRate(s) (bid1/ask1)
price tick BTC/USDT                   the same books                             binance 0.01,
                                                                                 okx/bybit 0.1
level spacing (gap between levels)    raw/binance/nautilus_spot_depth_BTCUSDT_   mean 0.18 bps,
                                      limit10 (18 gaps)                          median 0.10 bps,
                                                                                 many 1-tick gaps
level size (notional per level)       same book (20 levels)                      median $3.9k,
                                                                                 log-sd 1.97
size growth with distance             same book: mean size levels 6-10 / 1-5     x1.64 -> +13 %/lvl
top-of-book size (spot tickers)       binance/okx fetchTicker, binance           geo-mean $21k,
                                      bookTicker, binance/okx 2-level books      log-sd 1.66
top-of-book size (swap)               bybit fetchTicker/fetchFundingRate(s),     geo-mean ~$0.6M:
                                      okx BTC-USDT-SWAP book                     swaps x5 (capped)
24 h quote volume BTC/USDT            binance fetchTicker (5.17e9),              per-exchange
                                      okx fetchTicker (1.52e9),                  scale below
                                      bybit swap fetchTicker (2.35e9)
funding rate per 8 h, BTC perp        bybit fetchFundingRate(s) 0.0001 x2,       typical 0.0001,
                                      -0.00046; raw/okx funding history          spread ~1e-4
                                      0.000152, -0.0000236; okx ws 0.0001/0.0002
funding interval                      bybit fetchFundingRate ``interval: 8h``    8 h default
====================================  =========================================  ==================

Excluded as unrepresentative (testnet-like): ccxt_static binance swap book (53 bps
spread), bybit spot book (37 bps), bybit swap book (0.78 bps). Constants marked
"assumed" below (alt-coin spreads, volatility, latency, basis) are not from the fixtures.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS, QUOTES, MarketBatch

if TYPE_CHECKING:
    from core.settings import MarketSettings

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

__all__ = [
    "SIM_EPOCH_MS",
    "EventRates",
    "SimEvent",
    "SimMarketSource",
    "base_price",
    "funding_interval_hours",
    "market_type",
]

SIM_EPOCH_MS = 1_767_225_600_000
"""Default start of the simulated clock when ``realtime=False`` (2026-01-01T00:00Z)."""

# --- calibration constants (see the module docstring for the fixtures) -----------

BTC_SPREAD_BPS = 0.0015
"""Relative spread before rounding to the tick: 1 tick on binance (0.01), 1 tick on okx/bybit (0.1)."""
BTC_LEVEL_GAP_BPS = 0.18
"""Mean gap between adjacent book levels (binance depth10: mean 0.18, median 0.10 bps)."""
LEVEL_USD_MEDIAN = 3_900.0
"""Median notional of a book level beyond the top (binance depth10)."""
LEVEL_LOG_SD = 1.97
TOP_USD_MEDIAN = 21_000.0
"""Median top-of-book notional of spot tickers (geo-mean of 6 spot snapshots)."""
TOP_LOG_SD = 1.66
LEVEL_GROWTH = 0.13
"""Mean level size grows by 13 % per level away from the top (x1.64 from levels 1-5 to 6-10)."""
SWAP_SIZE_MULT = 5.0
"""Swap books are deeper (bybit swap tops 55-492 BTC); capped at x5 to keep the demo sane."""
FUNDING_8H_TYPICAL = 0.0001
FUNDING_8H_DRIFT = 0.0001
"""Amplitude of the slow drift of the 8 h rate (fixture rates range -0.00046..0.00015)."""

# Tick digits per exchange: tick = 10 ** (floor(log10(base price)) - digits).
# BTC at 90k: binance 0.01 (6 digits), okx/bybit 0.1 (5 digits) as in the fixtures.
_TICK_DIGITS = {"binance": 6, "bybit": 5, "okx": 5}
_TICK_DIGITS_DEFAULT = 5

# 24 h BTC/USDT quote volume per exchange (fixtures), scaled per asset below.
_BTC_VOLUME_USD = {"binance": 5.17e9, "okx": 1.52e9, "bybit": 2.35e9}
_BTC_VOLUME_USD_DEFAULT = 8.0e8  # assumed
_SWAP_VOLUME_MULT = 1.5  # assumed


@dataclass(frozen=True, slots=True)
class _Asset:
    price: float  # reasonable base price in USDT
    vol: float  # annualised volatility (assumed)
    spread_mult: float  # x BTC_SPREAD_BPS (assumed for alts)
    gap_mult: float  # x BTC_LEVEL_GAP_BPS (assumed for alts)
    size_mult: float  # x LEVEL_USD_MEDIAN / TOP_USD_MEDIAN (assumed for alts)
    volume_mult: float  # x BTC 24 h volume (assumed for alts)
    activity: float  # relative quote-update frequency (assumed)


_ASSETS: dict[str, _Asset] = {
    "BTC": _Asset(90_000.0, 0.50, 1.0, 1.0, 1.0, 1.0, 1.0),
    "ETH": _Asset(3_000.0, 0.65, 20.0, 1.5, 0.7, 0.45, 0.9),
    "SOL": _Asset(150.0, 0.90, 400.0, 4.0, 0.35, 0.15, 0.7),
    "XRP": _Asset(0.6, 0.80, 1000.0, 8.0, 0.3, 0.10, 0.6),
    "DOGE": _Asset(0.15, 1.00, 500.0, 6.0, 0.3, 0.08, 0.6),
    "BNB": _Asset(600.0, 0.55, 100.0, 3.0, 0.3, 0.08, 0.5),
    "ADA": _Asset(0.5, 0.85, 1000.0, 8.0, 0.2, 0.04, 0.5),
    "USDC": _Asset(1.0, 0.01, 100.0, 2.0, 2.0, 0.20, 0.3),
}
_UNKNOWN = _Asset(0.0, 1.10, 2000.0, 15.0, 0.1, 0.01, 0.4)

# Value-noise octaves of the fundamental path: periods in ms. Amplitude of each is
# sigma * sqrt(period / 2), so increments over a period match the annual volatility.
_OCTAVES_MS = (1_000.0, 8_000.0, 60_000.0, 480_000.0, 3_600_000.0)
_YEAR_MS = 365.0 * 24 * 3600 * 1000

_ROW_NOISE_BPS = 0.15  # assumed: per-quote jitter of the mid
_BASIS_STATIC_BPS = 1.2  # assumed: persistent per-exchange basis (sd)
_BASIS_DRIFT_BPS = 0.6  # assumed: slow drift of that basis
_SWAP_BASIS_BPS = (1.5, 2.0)  # assumed: swap premium over spot (mean, amplitude)
_LATENCY_MEDIAN_MS = 15.0  # assumed
_HOURLY_FUNDING_EXCHANGES = frozenset({"hyperliquid", "dydx", "paradex", "vertex"})
_BLOCK_MS = 60_000
_MAX_EVENT_MS = 120_000
_STALE_KEEP = 0.2
_MAX_LAG_MS = 1_000

# --- hashing: counter-based, vectorised -----------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SALT2 = np.uint64(0x5851F42D4C957F2D)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _stable_hash(*parts: object) -> int:
    """A 64-bit hash stable across processes (``hash()`` of a str is salted)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(x: U64) -> U64:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic, no warnings)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _u01(h: U64) -> F64:
    return ((h >> _S11).astype(np.float64) + 0.5) * (2.0**-53)


def _gauss(h: U64) -> F64:
    u1 = _u01(_mix(h))
    u2 = _u01(_mix(h ^ _SALT2))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _keys(*parts: object) -> np.uint64:
    return np.uint64(_stable_hash(*parts))


# --- symbols, intervals ------------------------------------------------------------


def market_type(symbol: str) -> str:
    """``spot`` for ``BTC/USDT``, ``swap`` for ``BTC/USDT:USDT``, ``future`` for ``…:USDT-250328``."""
    if ":" not in symbol:
        return "spot"
    return "future" if "-" in symbol.split(":", 1)[1] else "swap"


def _base_asset(symbol: str) -> str:
    return symbol.split("/", 1)[0].upper()


def _underlying(symbol: str) -> str:
    """The spot pair a derivative tracks: ``BTC/USDT:USDT`` -> ``BTC/USDT``."""
    return symbol.split(":", 1)[0].upper()


def _asset(symbol: str) -> _Asset:
    return _ASSETS.get(_base_asset(symbol), _UNKNOWN)


def base_price(symbol: str) -> float:
    """Reference price of a symbol; unknown assets get a deterministic price in [0.01, 1000)."""
    asset = _ASSETS.get(_base_asset(symbol))
    if asset is not None:
        return asset.price
    u = (_stable_hash("price", _base_asset(symbol)) >> 11) * 2.0**-53
    return float(f"{10 ** (-2.0 + 5.0 * u):.4g}")


def funding_interval_hours(exchange: str, symbol: str) -> float:
    """Funding interval of a perpetual on an exchange, deterministic (so tests can check normalisation).

    binance, bybit and okx pay every 8 h on BTC and ETH; okx every 4 h on the other
    perpetuals; bybit every hour on SOL; ``hyperliquid``/``dydx``/``paradex``/``vertex``
    every hour on everything. Other pairs: 4 h for one in four (by a stable hash), else 8 h.
    """
    base = _base_asset(symbol)
    if exchange in _HOURLY_FUNDING_EXCHANGES:
        return 1.0
    if exchange == "bybit" and base == "SOL":
        return 1.0
    if base in ("BTC", "ETH") and exchange in ("binance", "bybit", "okx"):
        return 8.0
    if exchange == "okx":
        return 4.0
    if exchange in ("binance", "bybit") and base in _ASSETS:
        return 8.0
    return 4.0 if _stable_hash("interval", exchange, symbol) % 4 == 0 else 8.0


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Ground truth of one injected event.

    ``kind``: ``arbitrage`` (``exchanges = (buy, sell)``: the buy exchange's ask is
    below the sell exchange's bid by about ``size_bps``; ``shifted`` is the one whose
    book moved; ``depth_usd`` is the crossed notional on the shifted side),
    ``stale`` (``exchanges = (ex,)`` stops updating ``symbol``: most quotes are
    missing, the rest repeat the quote of ``start_ms`` with ``ts = start_ms``),
    ``collision`` (``exchanges = (ex,)`` quotes a different asset under the same
    ticker: prices times ``factor``; ``size_bps = (factor - 1) * 1e4``) or
    ``funding`` (``exchanges = (ex,)``: the funding rate per 8 h jumps by
    ``size_bps`` bps, signed). Active on ``[start_ms, end_ms)`` in exchange time.
    """

    kind: str
    symbol: str
    exchanges: tuple[str, ...]
    start_ms: int
    end_ms: int
    size_bps: float
    depth_usd: float | None = None
    factor: float | None = None
    shifted: str | None = None

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        return self.start_ms < end_ms and start_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class EventRates:
    """Injected events per minute of simulated time, per kind.

    Counts are stratified within each 60 s block, so with 2 or more per minute every
    60 s window sees at least one event of that kind.
    """

    arbitrage: float = 6.0
    stale: float = 2.0
    collision: float = 2.0
    funding: float = 1.0

    @classmethod
    def none(cls) -> EventRates:
        return cls(0.0, 0.0, 0.0, 0.0)


_ARB_DEPTHS_USD = (1_000.0, 3_000.0, 10_000.0, 30_000.0)
_ARB_DEPTH_P = (0.35, 0.2, 0.3, 0.15)


def _arb_levels(ev: SimEvent) -> int:
    """How many book levels carry an arbitrage window's crossed depth (1-3)."""
    return 1 + _stable_hash("levels", ev.start_ms, ev.symbol) % 3


# --- the source --------------------------------------------------------------------


class SimMarketSource:
    """Seeded multi-exchange simulator implementing ``core.ports.MarketSource``.

    ``rate`` is quote updates per second per exchange, spread over the symbols by their
    activity; ``book_every`` cuts an order-book snapshot of each symbol every N ticks;
    ``funding_every_s`` emits the funding rate of each perpetual at that period.
    ``snapshot_first=True`` makes the first tick a full snapshot: a quote and a book of
    every symbol and the funding rate of every perpetual, stale feeds included (an
    exchange answers for every listed market from its first request; the exchange
    emulators serve from it).
    ``realtime=True`` paces ``batches()`` on the wall clock and stamps times from it;
    ``realtime=False`` runs as fast as possible on a simulated clock starting at
    ``start_ms`` (default :data:`SIM_EPOCH_MS`; ignored in real time).
    """

    def __init__(
        self,
        exchanges: list[str],
        symbols: list[str],
        *,
        exchange: str | None = None,
        seed: int = 7,
        rate: float = 2000.0,
        tick_s: float = 0.1,
        depth: int = 20,
        start_ms: int | None = None,
        realtime: bool = True,
        book_every: int = 1,
        funding_every_s: float = 5.0,
        event_rates: EventRates | None = None,
        snapshot_first: bool = False,
    ) -> None:
        if not exchanges or not symbols:
            raise ValueError("the simulator needs at least one exchange and one symbol")
        if len(set(exchanges)) != len(exchanges) or len(set(symbols)) != len(symbols):
            raise ValueError("exchanges and symbols must not repeat")
        if exchange is not None and exchange not in exchanges:
            raise ValueError(f"exchange {exchange!r} is not one of {exchanges}")
        if rate < 0 or tick_s <= 0 or depth < 1 or book_every < 1 or funding_every_s <= 0:
            raise ValueError("rate >= 0, tick_s > 0, depth >= 1, book_every >= 1, funding_every_s > 0")
        self.exchanges = list(exchanges)
        self.symbols = list(symbols)
        self.exchange = exchange
        self.name = "sim" if exchange is None else f"sim:{exchange}"
        self.seed = int(seed)
        self.rate = float(rate)
        self.tick_ms = max(1, round(tick_s * 1000))
        self.depth = int(depth)
        self.realtime = realtime
        self.book_every = int(book_every)
        self.funding_every_ms = max(1, round(funding_every_s * 1000))
        self.snapshot_first = snapshot_first
        self.event_rates = event_rates if event_rates is not None else EventRates()
        self._emit_ex = [self.exchanges.index(exchange)] if exchange else list(range(len(self.exchanges)))
        start = _wall_ms() if realtime else (SIM_EPOCH_MS if start_ms is None else int(start_ms))
        self._tick = start // self.tick_ms
        self._first_ms: int | None = None
        self._last_ms: int | None = None
        self._closed = False
        self._blocks: dict[int, list[SimEvent]] = {}
        self._knot_cache: dict[tuple[object, ...], F64] = {}
        self._build_static()

    @classmethod
    def from_settings(
        cls, market: MarketSettings, *, exchange: str | None = None, realtime: bool = True
    ) -> SimMarketSource:
        return cls(
            list(market.exchanges),
            list(market.symbols),
            exchange=exchange,
            seed=market.sim_seed,
            rate=market.sim_rate,
            tick_s=market.sim_tick_s,
            depth=market.order_book_depth,
            realtime=realtime,
        )

    # -- static per-symbol / per-(exchange, symbol) arrays ---------------------------

    def _build_static(self) -> None:
        seed, syms, exs = self.seed, self.symbols, self.exchanges
        assets = [_asset(s) for s in syms]
        self._mtype = np.array([market_type(s) for s in syms], dtype=object)
        self._is_swap = np.array([market_type(s) != "spot" for s in syms])
        self._swap_idx = [i for i, s in enumerate(syms) if market_type(s) == "swap"]
        prices = np.array([base_price(_underlying(s)) for s in syms])
        self._log_base = np.log(prices)
        sigma = np.array([a.vol for a in assets]) / math.sqrt(_YEAR_MS)
        self._amp = np.stack([sigma * math.sqrt(p / 2.0) for p in _OCTAVES_MS], axis=1)
        self._path_key = np.array(
            [[_keys(seed, "path", _underlying(s), o) for o in range(len(_OCTAVES_MS))] for s in syms],
            dtype=np.uint64,
        )
        self._swap_key = np.array([_keys(seed, "swapbasis", s) for s in syms], dtype=np.uint64)
        size_mult = np.array([a.size_mult for a in assets]) * np.where(self._is_swap, SWAP_SIZE_MULT, 1.0)
        self._spread_bps = BTC_SPREAD_BPS * np.array([a.spread_mult for a in assets])
        self._gap_bps = BTC_LEVEL_GAP_BPS * np.array([a.gap_mult for a in assets])
        self._level_usd = LEVEL_USD_MEDIAN * size_mult
        self._top_usd = TOP_USD_MEDIAN * size_mult
        activity = np.array([a.activity for a in assets])
        self._weights = activity / activity.sum()
        # tick = 10 ** -decimals, from the base price (stable even when the price drifts)
        digits = np.array([_TICK_DIGITS.get(e, _TICK_DIGITS_DEFAULT) for e in exs])
        self._decimals = (digits[:, None] - np.floor(np.log10(prices))[None, :]).astype(np.int64)
        self._basis_bps = np.array(
            [[_BASIS_STATIC_BPS * _std_normal(seed, "basis", e, s) for s in syms] for e in exs]
        )
        self._basis_key = np.array([[_keys(seed, "basisdrift", e, s) for s in syms] for e in exs], np.uint64)
        self._index_key = np.array([[_keys(seed, "index", e, s) for s in syms] for e in exs], np.uint64)
        vol_ex = np.array([_BTC_VOLUME_USD.get(e, _BTC_VOLUME_USD_DEFAULT) for e in exs])
        vol_sym = np.array([a.volume_mult for a in assets]) * np.where(self._is_swap, _SWAP_VOLUME_MULT, 1.0)
        self._volume_usd = vol_ex[:, None] * vol_sym[None, :]
        self._volume_key = np.array([[_keys(seed, "volume", e, s) for s in syms] for e in exs], np.uint64)
        self._funding_key = np.array([[_keys(seed, "funding", e, s) for s in syms] for e in exs], np.uint64)
        self._funding_sym_key = np.array([_keys(seed, "funding", s) for s in syms], np.uint64)
        self._funding_offset = np.array(
            [[2e-5 * _std_normal(seed, "fundoff", e, s) for s in syms] for e in exs]
        )
        self._interval_h = np.array(
            [[funding_interval_hours(e, s) for s in syms] for e in exs], dtype=np.float64
        )
        self._ex_key = [_stable_hash("ex", e) for e in exs]
        self._book_phase = np.array([_stable_hash("phase", s) % self.book_every for s in syms])

    # -- MarketSource --------------------------------------------------------------

    async def batches(self) -> AsyncIterator[MarketBatch]:
        """One batch per tick until :meth:`close`."""
        while not self._closed:
            if not self.realtime:
                yield self.step()
                await asyncio.sleep(0)
                continue
            end_ms = (self._tick + 1) * self.tick_ms
            delay = end_ms - _wall_ms()
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
            if self._closed:
                break
            now = _wall_ms()
            if now - end_ms > _MAX_LAG_MS:  # the consumer fell behind: skip to the present
                self._tick = now // self.tick_ms - 1
            yield self._emit(self._tick, clock_ms=now)
            self._tick += 1

    async def close(self) -> None:
        self._closed = True

    def step(self) -> MarketBatch:
        """Generate the next tick synchronously (the vectorised core; no sleeping)."""
        tick = self._tick
        self._tick += 1
        end_ms = (tick + 1) * self.tick_ms
        clock = max(_wall_ms(), end_ms) if self.realtime else end_ms
        return self._emit(tick, clock_ms=clock)

    # -- ground truth --------------------------------------------------------------

    @property
    def events(self) -> list[SimEvent]:
        """Events that overlapped the ticks emitted so far, by start time."""
        if self._first_ms is None or self._last_ms is None:
            return []
        return self.events_between(self._first_ms, self._last_ms)

    def events_between(self, start_ms: int, end_ms: int) -> list[SimEvent]:
        """The scheduled events overlapping ``[start_ms, end_ms)`` (any window, past or future)."""
        first = (start_ms - _MAX_EVENT_MS) // _BLOCK_MS
        last = end_ms // _BLOCK_MS
        out = [
            ev
            for b in range(first, last + 1)
            for ev in self._block_events(b)
            if ev.overlaps(start_ms, end_ms)
        ]
        return sorted(out, key=lambda ev: (ev.start_ms, ev.kind, ev.symbol))

    def _block_events(self, block: int) -> list[SimEvent]:
        cached = self._blocks.get(block)
        if cached is None:
            cached = self._draw_block(block)
            if len(self._blocks) > 64:
                self._blocks.pop(min(self._blocks))
            self._blocks[block] = cached
        return cached

    def _draw_block(self, block: int) -> list[SimEvent]:
        """The events starting in one 60 s block: a pure function of (seed, block, config)."""
        rng = np.random.default_rng([self.seed, 0xE7E27, block])
        rates = self.event_rates
        exs, syms = self.exchanges, self.symbols
        t_block = block * _BLOCK_MS
        placed: dict[str, list[tuple[int, int, int]]] = {"price": [], "funding": []}
        events: list[SimEvent] = []

        def starts(per_min: float) -> list[int]:
            n_float = per_min * _BLOCK_MS / 60_000.0
            n = int(n_float) + int(rng.random() < n_float - int(n_float))
            return [t_block + int((i + rng.random()) * _BLOCK_MS / n) for i in range(n)]

        def pick(candidates: Sequence[int], start: int, end: int, group: str) -> int:
            # the symbol with the fewest events of this block overlapping [start, end),
            # then the least used, then at random: events rarely pile up on one symbol
            score = rng.random(len(candidates)) * 0.5
            for i, c in enumerate(candidates):
                for s, t0, t1 in placed[group]:
                    if s == c:
                        score[i] += 1.0 + 100.0 * (t0 < end + 1_000 and start < t1 + 1_000)
            chosen = int(candidates[int(np.argmin(score))])
            placed[group].append((chosen, start, end))
            return chosen

        all_syms = list(range(len(syms)))
        for t in starts(rates.collision):
            life = int(rng.uniform(5_000, 30_000))
            s = pick(all_syms, t, t + life, "price")
            e = int(rng.integers(len(exs)))
            factor = float(np.exp(rng.uniform(math.log(3.0), math.log(50.0))))
            if rng.random() < 0.3:
                factor = 1.0 / factor
            factor = float(f"{factor:.4g}")
            events.append(
                SimEvent(
                    "collision", syms[s], (exs[e],), t, t + life,
                    round((factor - 1.0) * 1e4, 1), factor=factor,
                )
            )  # fmt: skip
        for t in starts(rates.stale):
            life = int(rng.uniform(3_000, 12_000))
            s = pick(all_syms, t, t + life, "price")
            e = int(rng.integers(len(exs)))
            events.append(SimEvent("stale", syms[s], (exs[e],), t, t + life, 0.0))
        for t in starts(rates.arbitrage if len(exs) >= 2 else 0.0):
            life = int(rng.uniform(1_000, 30_000))
            s = pick(all_syms, t, t + life, "price")
            buy, sell = (int(x) for x in rng.choice(len(exs), size=2, replace=False))
            size = float(np.exp(rng.uniform(math.log(15.0), math.log(150.0))))
            depth = float(rng.choice(_ARB_DEPTHS_USD, p=_ARB_DEPTH_P))
            shifted = exs[sell] if rng.random() < 0.5 else exs[buy]
            events.append(
                SimEvent(
                    "arbitrage", syms[s], (exs[buy], exs[sell]), t, t + life,
                    round(size, 2), depth_usd=depth, shifted=shifted,
                )
            )  # fmt: skip
        swaps = self._swap_idx
        for t in starts(rates.funding if swaps else 0.0):
            life = int(rng.uniform(30_000, _MAX_EVENT_MS))
            s = pick(swaps, t, t + life, "funding")
            e = int(rng.integers(len(exs)))
            jump = float(rng.uniform(5.0, 30.0)) * (1.0 if rng.random() < 0.6 else -1.0)
            events.append(SimEvent("funding", syms[s], (exs[e],), t, t + life, round(jump, 2)))
        return events

    # -- generation ----------------------------------------------------------------

    def _emit(self, tick: int, *, clock_ms: int) -> MarketBatch:
        t0 = tick * self.tick_ms
        t1 = t0 + self.tick_ms
        if self._first_ms is None:
            self._first_ms = t0
        self._last_ms = t1
        # events can act on rows whose exchange ts lies up to 1 s before the tick
        active = self.events_between(t0 - 1_000, t1)
        stale_from = min((ev.start_ms for ev in active if ev.kind == "stale"), default=t0)
        if stale_from < t0 - 1_000:  # frozen quotes replay the state at the stale start
            active = self.events_between(stale_from, t1)
        quotes, books, funding = [], [], []
        for ex in self._emit_ex:
            rng = np.random.default_rng([self.seed, self._ex_key[ex], tick])
            mine = [ev for ev in active if self.exchanges[ex] in ev.exchanges]
            quotes.append(self._quotes(ex, t0, t1, rng, mine))
            books.append(self._books(ex, tick, t1, rng, mine))
            funding.append(self._funding(ex, t0, t1, rng, mine))
        return MarketBatch(
            clock_ms=int(clock_ms),
            tables={
                "quotes": _concat(quotes, QUOTES),
                "order_books": _concat(books, ORDER_BOOKS),
                "funding_rates": _concat(funding, FUNDING_RATES),
            },
        )

    def _vn(self, keys: U64, name: tuple[object, ...], sym: I64, t_ms: F64, period_ms: float) -> F64:
        """Value noise: piecewise-linear interpolation of N(0,1) knots ``period_ms`` apart.

        Knot ``k`` of series ``keys[s]`` is a hash of ``(keys[s], k)``: any instance
        computes the same value at the same time. Knots are cached (one vector over
        ``keys`` per knot), so the hashing cost does not grow with the row count.
        """
        if len(t_ms) == 0:
            return np.zeros(0)
        x = t_ms / period_ms
        knot = np.floor(x)
        frac = x - knot
        k = knot.astype(np.int64)
        lo, hi = int(k.min()), int(k.max()) + 1
        table = np.stack([self._knots(keys, name, period_ms, j) for j in range(lo, hi + 1)], axis=1)
        col = k - lo
        a = table[sym, col]
        return a + (table[sym, col + 1] - a) * frac

    def _knots(self, keys: U64, name: tuple[object, ...], period_ms: float, knot: int) -> F64:
        cache_key = (*name, period_ms, knot)
        values = self._knot_cache.get(cache_key)
        if values is None:
            if len(self._knot_cache) > 20_000:
                self._knot_cache.clear()
            values = _gauss(keys ^ _mix(np.array([knot], dtype=np.int64).astype(np.uint64)))
            self._knot_cache[cache_key] = values
        return values

    def _fundamental(self, sym: I64, t_ms: F64) -> F64:
        """Spot mid of each row's underlying at ``t_ms``: depends only on (seed, underlying, time)."""
        log_mid = self._log_base[sym].copy()
        for o, period in enumerate(_OCTAVES_MS):
            log_mid += self._amp[sym, o] * self._vn(self._path_key[:, o], ("path", o), sym, t_ms, period)
        return np.exp(log_mid)

    def _swap_factor(self, sym: I64, t_ms: F64) -> F64:
        mean, amp = _SWAP_BASIS_BPS
        premium = (mean + amp * self._vn(self._swap_key, ("swap",), sym, t_ms, 900_000.0)) * 1e-4
        return 1.0 + np.where(self._is_swap[sym], premium, 0.0)

    def _basis(self, ex: int, sym: I64, t_ms: F64) -> F64:
        drift = _BASIS_DRIFT_BPS * self._vn(self._basis_key[ex], ("basis", ex), sym, t_ms, 120_000.0)
        return (self._basis_bps[ex, sym] + drift) * 1e-4

    def _mid(self, ex: int, sym: I64, t_ms: F64) -> F64:
        """Noise-free mid of an exchange (fundamental x swap premium x exchange basis)."""
        return (
            self._fundamental(sym, t_ms) * self._swap_factor(sym, t_ms) * (1.0 + self._basis(ex, sym, t_ms))
        )

    def _apply_events(
        self,
        ex: int,
        sym: I64,
        ts: F64,
        mid: F64,
        events: list[SimEvent],
        side_usd: tuple[F64, F64] | None = None,
    ) -> tuple[F64, F64, npt.NDArray[np.int8], I64]:
        """Shift mids for arbitrage windows and collisions.

        Returns the mid to quote around, the price factor (collisions), the crossing
        side per row (+1: bids crossed, -1: asks crossed, 0: none) and the number of
        crossing levels per row. Overrides ``side_usd`` (bid, ask notional) in place.
        """
        name = self.exchanges[ex]
        factor = np.ones_like(mid)
        cross = np.zeros(len(mid), dtype=np.int8)
        n_cross = np.zeros(len(mid), dtype=np.int64)
        for ev in events:
            if ev.kind not in ("arbitrage", "collision"):
                continue
            s = self.symbols.index(ev.symbol)
            m = (sym == s) & (ts >= ev.start_ms) & (ts < ev.end_ms)
            if not m.any():
                continue
            if ev.kind == "collision":
                assert ev.factor is not None
                factor[m] *= ev.factor
                continue
            if ev.shifted != name:
                continue
            buy, sell = ev.exchanges
            other = self.exchanges.index(sell if name == buy else buy)
            direction = 1 if name == sell else -1
            idx = np.flatnonzero(m)
            t_m = ts[idx]
            s_arr = sym[idx]
            base = self._fundamental(s_arr, t_m) * self._swap_factor(s_arr, t_m)
            other_mid = base * (1.0 + self._basis(other, s_arr, t_m))
            mid[idx] = other_mid * (1.0 + direction * ev.size_bps * 1e-4)
            cross[idx] = direction
            levels = _arb_levels(ev)
            n_cross[idx] = levels
            if side_usd is not None and ev.depth_usd is not None:
                side_usd[0 if direction > 0 else 1][idx] = ev.depth_usd / levels
        return mid, factor, cross, n_cross

    def _stale_mask(self, ex_events: list[SimEvent], sym: I64, ts: F64) -> npt.NDArray[np.bool_]:
        mask = np.zeros(len(sym), dtype=bool)
        for ev in ex_events:
            if ev.kind == "stale":
                s = self.symbols.index(ev.symbol)
                mask |= (sym == s) & (ts >= ev.start_ms) & (ts < ev.end_ms)
        return mask

    def _quotes(
        self, ex: int, t0: int, t1: int, rng: np.random.Generator, events: list[SimEvent]
    ) -> pa.Table:
        want = self.rate * self.tick_ms / 1000.0
        n = int(want) + int(rng.random() < want - int(want))
        sym = rng.choice(len(self.symbols), size=n, p=self._weights).astype(np.int64)
        snapshot = self.snapshot_first and t0 == self._first_ms
        if snapshot:  # one quote of every symbol first
            sym = np.concatenate([np.arange(len(self.symbols), dtype=np.int64), sym])
            n = len(sym)
        recv = (t0 + 1 + rng.integers(0, self.tick_ms, size=n)).astype(np.int64)
        lat = np.clip(np.rint(rng.lognormal(math.log(_LATENCY_MEDIAN_MS), 0.6, size=n)), 1, 500)
        ts = recv - lat.astype(np.int64)
        z_mid, z_spread, z_bid, z_ask = rng.standard_normal((4, n))
        u_keep, u_last = rng.random((2, n))
        # stale feeds: most rows vanish, the rest repeat the quote of the event start
        stale = self._stale_mask(events, sym, ts.astype(np.float64))
        if snapshot:
            stale[: len(self.symbols)] = False
        if stale.any():
            for ev in events:
                if ev.kind == "stale":
                    s = self.symbols.index(ev.symbol)
                    m = stale & (sym == s) & (ts >= ev.start_ms) & (ts < ev.end_ms)
                    ts[m] = ev.start_ms
            for z in (z_mid, z_spread, z_bid, z_ask):
                z[stale] = 0.0
            u_last[stale] = 0.0
            keep = ~stale | (u_keep < _STALE_KEEP)
            sym, recv, ts, z_mid, z_spread, z_bid, z_ask, u_last = (
                a[keep] for a in (sym, recv, ts, z_mid, z_spread, z_bid, z_ask, u_last)
            )
        order = np.argsort(recv, kind="stable")
        sym, recv, ts, z_mid, z_spread, z_bid, z_ask, u_last = (
            a[order] for a in (sym, recv, ts, z_mid, z_spread, z_bid, z_ask, u_last)
        )
        tsf = ts.astype(np.float64)
        mid = self._mid(ex, sym, tsf) * (1.0 + _ROW_NOISE_BPS * 1e-4 * z_mid)
        top = self._top_usd[sym]
        bid_usd = top * np.exp(TOP_LOG_SD * z_bid)
        ask_usd = top * np.exp(TOP_LOG_SD * z_ask)
        mid, factor, _, _ = self._apply_events(ex, sym, tsf, mid, events, (bid_usd, ask_usd))
        mid = mid * factor
        spread = self._spread_bps[sym] * 1e-4 * np.exp(0.7 * z_spread)
        bid_t, ask_t, scale = self._touch(ex, sym, mid, spread)
        bid = bid_t / scale
        ask = ask_t / scale
        last = np.where(u_last < 0.5, bid, ask)
        quote_volume = self._volume_usd[ex, sym] * (
            1.0 + 0.2 * np.tanh(self._vn(self._volume_key[ex], ("volume", ex), sym, tsf, 3_600_000.0))
        )
        n_out = len(sym)
        names = np.array(self.symbols, dtype=object)[sym]
        return pa.Table.from_arrays(
            [
                _ts_array(ts),
                _ts_array(recv),
                pa.array(np.full(n_out, self.exchanges[ex], dtype=object), pa.string()),
                pa.array(names, pa.string()),
                pa.array(self._mtype[sym], pa.string()),
                pa.array(bid),
                pa.array(ask),
                pa.array(_round_size(bid_usd / bid)),
                pa.array(_round_size(ask_usd / ask)),
                pa.array(last),
                pa.array(_round_size(quote_volume / mid)),
                pa.array(np.round(quote_volume, 2)),
            ],
            schema=QUOTES,
        )

    def _touch(self, ex: int, sym: I64, mid: F64, spread: F64) -> tuple[F64, F64, F64]:
        """Best bid and ask in integer ticks (float64), and the ticks-per-unit scale."""
        scale = 10.0 ** self._decimals[ex, sym].astype(np.float64)
        mid_t = mid * scale
        spread_t = np.maximum(np.rint(mid_t * spread), 1.0)
        bid_t = np.rint(mid_t - spread_t / 2.0)
        return bid_t, bid_t + spread_t, scale

    def _books(
        self, ex: int, tick: int, t1: int, rng: np.random.Generator, events: list[SimEvent]
    ) -> pa.Table:
        n_sym, depth = len(self.symbols), self.depth
        snapshot = self.snapshot_first and t1 - self.tick_ms == self._first_ms
        if snapshot:  # every symbol's book, stale or not
            sym = np.arange(n_sym, dtype=np.int64)
        else:
            sym = np.flatnonzero((tick + self._book_phase) % self.book_every == 0).astype(np.int64)
        lat = np.clip(np.rint(rng.lognormal(math.log(_LATENCY_MEDIAN_MS), 0.6, size=n_sym)), 1, 500)
        z = rng.standard_normal((n_sym, 2 + 2 * depth))
        u_gap = rng.random((n_sym, 2 * depth))
        ts = (t1 - lat[sym]).astype(np.int64)
        z, u_gap = z[sym], u_gap[sym]
        keep = ~self._stale_mask(events, sym, ts.astype(np.float64)) | snapshot
        sym, ts, z, u_gap = sym[keep], ts[keep], z[keep], u_gap[keep]
        n = len(sym)
        if n == 0:
            return ORDER_BOOKS.empty_table()
        tsf = ts.astype(np.float64)
        normal_mid = self._mid(ex, sym, tsf) * (1.0 + _ROW_NOISE_BPS * 1e-4 * z[:, 0])
        level_usd = self._level_usd[sym, None] * (1.0 + LEVEL_GROWTH * np.arange(depth))[None, :]
        bid_usd = level_usd * np.exp(LEVEL_LOG_SD * z[:, 2 : 2 + depth])
        ask_usd = level_usd * np.exp(LEVEL_LOG_SD * z[:, 2 + depth : 2 + 2 * depth])
        top_bid, top_ask = bid_usd[:, 0].copy(), ask_usd[:, 0].copy()
        mid, factor, cross, n_cross = self._apply_events(
            ex, sym, tsf, normal_mid.copy(), events, (top_bid, top_ask)
        )
        spread = self._spread_bps[sym] * 1e-4 * np.exp(0.7 * z[:, 1])
        bid0, ask0, scale = self._touch(ex, sym, mid * factor, spread)
        # gaps in ticks: 1 + exponential with the calibrated mean spacing
        mean_gap = np.maximum(self._gap_bps[sym] * 1e-4 * mid * factor * scale, 1.0)
        gaps = 1.0 + np.floor(-np.log1p(-u_gap) * mean_gap[:, None])
        zeros = np.zeros((n, 1))
        bid_t = bid0[:, None] - np.concatenate([zeros, np.cumsum(gaps[:, : depth - 1], axis=1)], axis=1)
        ask_t = ask0[:, None] + np.concatenate([zeros, np.cumsum(gaps[:, depth:-1], axis=1)], axis=1)
        crossed = np.flatnonzero(cross != 0)
        if len(crossed):
            # arbitrage: only the top n_cross levels of the crossing side sit at the
            # shifted price (holding depth_usd); below them the book's usual ladder
            nb0, na0, _ = self._touch(
                ex, sym[crossed], normal_mid[crossed] * factor[crossed], spread[crossed]
            )
            for j, row in enumerate(crossed):
                k = int(n_cross[row])
                if cross[row] > 0:
                    bid_t[row, :k] = bid0[row] - np.arange(k)  # a tight cluster of aggressive orders
                    bid_usd[row, :k] = top_bid[row]
                    ladder = nb0[j] - np.concatenate([[0.0], np.cumsum(gaps[row, : depth - 1])])
                    bid_t[row, k:] = np.minimum(ladder[: depth - k], bid_t[row, k - 1] - 1.0)
                else:
                    ask_t[row, :k] = ask0[row] + np.arange(k)
                    ask_usd[row, :k] = top_ask[row]
                    ladder = na0[j] + np.concatenate([[0.0], np.cumsum(gaps[row, depth:-1])])
                    ask_t[row, k:] = np.maximum(ladder[: depth - k], ask_t[row, k - 1] + 1.0)
        # strictly monotone ladders (safety net; a no-op for the ladders built above)
        for j in range(1, depth):
            bid_t[:, j] = np.minimum(bid_t[:, j], bid_t[:, j - 1] - 1.0)
            ask_t[:, j] = np.maximum(ask_t[:, j], ask_t[:, j - 1] + 1.0)
        bid_t = np.where(bid_t < 1.0, np.nan, bid_t)  # never a non-positive price: drop such levels
        scale2 = scale[:, None]
        bid_px, ask_px = bid_t / scale2, ask_t / scale2
        bid_sz = _round_size(bid_usd / bid_px)
        ask_sz = _round_size(ask_usd / ask_px)
        bid_px_l, bid_sz_l = _list_array(bid_px, bid_sz)
        ask_px_l, ask_sz_l = _list_array(ask_px, ask_sz)
        names = np.array(self.symbols, dtype=object)[sym]
        return pa.Table.from_arrays(
            [
                _ts_array(ts),
                _ts_array(np.full(n, t1, dtype=np.int64)),
                pa.array(np.full(n, self.exchanges[ex], dtype=object), pa.string()),
                pa.array(names, pa.string()),
                pa.array(self._mtype[sym], pa.string()),
                pa.array(np.full(n, depth, dtype=np.int32)),
                bid_px_l,
                bid_sz_l,
                ask_px_l,
                ask_sz_l,
                pa.array(np.full(n, tick, dtype=np.int64)),
            ],
            schema=ORDER_BOOKS,
        )

    def _funding(
        self, ex: int, t0: int, t1: int, rng: np.random.Generator, events: list[SimEvent]
    ) -> pa.Table:
        period = self.funding_every_ms
        stamps = np.arange((t0 // period + 1) * period, t1 + 1, period, dtype=np.int64)
        snapshot = self.snapshot_first and t0 == self._first_ms
        if snapshot:
            stamps = np.unique(np.concatenate([np.array([t0], dtype=np.int64), stamps]))
        swaps = np.asarray(self._swap_idx, dtype=np.int64)
        if len(stamps) == 0 or len(swaps) == 0:
            return FUNDING_RATES.empty_table()
        ts = np.repeat(stamps, len(swaps))
        sym = np.tile(swaps, len(stamps))
        tsf = ts.astype(np.float64)
        keep = ~self._stale_mask(events, sym, tsf)
        if snapshot:  # the first answer has every rate, a stale feed's included
            keep |= ts == t0
        ts, sym, tsf = ts[keep], sym[keep], tsf[keep]
        n = len(ts)
        if n == 0:
            return FUNDING_RATES.empty_table()
        lat = np.clip(np.rint(rng.lognormal(math.log(_LATENCY_MEDIAN_MS), 0.6, size=n)), 1, 500)
        rate_8h = (
            FUNDING_8H_TYPICAL
            + self._funding_offset[ex, sym]
            + 0.6 * FUNDING_8H_DRIFT * self._vn(self._funding_key[ex], ("funding", ex), sym, tsf, 1_800_000.0)
            + 0.4 * FUNDING_8H_DRIFT * self._vn(self._funding_sym_key, ("funding",), sym, tsf, 600_000.0)
        )
        factor = np.ones(n)
        for ev in events:
            s = self.symbols.index(ev.symbol)
            m = (sym == s) & (ts >= ev.start_ms) & (ts < ev.end_ms)
            if ev.kind == "funding":
                rate_8h = np.where(m, rate_8h + ev.size_bps * 1e-4, rate_8h)
            elif ev.kind == "collision" and ev.factor is not None:
                factor[m] *= ev.factor
        interval_h = self._interval_h[ex, sym]
        funding_rate = np.round(rate_8h * interval_h / 8.0, 8)
        interval_ms = (interval_h * 3_600_000).astype(np.int64)
        next_ts = (ts // interval_ms + 1) * interval_ms
        mark = self._mid(ex, sym, tsf) * factor
        index_noise = 1.0 + 0.3e-4 * self._vn(self._index_key[ex], ("index", ex), sym, tsf, 30_000.0)
        index = self._fundamental(sym, tsf) * index_noise * factor
        names = np.array(self.symbols, dtype=object)[sym]
        return pa.Table.from_arrays(
            [
                _ts_array(ts),
                _ts_array(ts + lat.astype(np.int64)),
                pa.array(np.full(n, self.exchanges[ex], dtype=object), pa.string()),
                pa.array(names, pa.string()),
                pa.array(funding_rate),
                pa.array(interval_h),
                pa.array(funding_rate / interval_h),
                _ts_array(next_ts),
                _ts_array(next_ts),
                pa.nulls(n, pa.float64()),
                pa.array(np.round(mark, 8)),
                pa.array(np.round(index, 8)),
            ],
            schema=FUNDING_RATES,
        )


# --- helpers -----------------------------------------------------------------------


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _std_normal(*parts: object) -> float:
    return float(_gauss(np.array([_stable_hash(*parts)], dtype=np.uint64))[0])


def _round_size(x: F64) -> F64:
    """Sizes to 8 significant-ish decimals, never zero."""
    return np.maximum(np.round(x, 8), 1e-8)


def _ts_array(ms: I64) -> pa.Array:
    return pa.array(ms.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC"))


def _list_array(px: F64, sz: F64) -> tuple[pa.Array, pa.Array]:
    """Row-wise lists of levels, dropping NaN levels (a side shorter than ``depth``)."""
    valid = ~np.isnan(px)
    lengths = valid.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    off = pa.array(offsets, pa.int32())
    prices = pa.ListArray.from_arrays(off, pa.array(px[valid], pa.float64()))
    sizes = pa.ListArray.from_arrays(off, pa.array(sz[valid], pa.float64()))
    return prices, sizes


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables)
