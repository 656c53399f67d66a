"""``SimMarketSource``: the ticks of the simulated market as ``MarketBatch``es — quotes,
order books and funding rates generated with numpy array operations, one batch per tick
(the model, its calibration and its guarantees: :mod:`pipeline.sources.sim`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS, QUOTES, MarketBatch
from pipeline.sources.sim.events import EventRates, SimEvent, draw_block
from pipeline.sources.sim.market import (
    _BLOCK_MS,
    _BTC_VOLUME_USD,
    _BTC_VOLUME_USD_DEFAULT,
    _LATENCY_MEDIAN_MS,
    _MAX_EVENT_MS,
    _MAX_LAG_MS,
    _ROW_NOISE_BPS,
    _STALE_KEEP,
    _SWAP_VOLUME_MULT,
    _TICK_DIGITS,
    _TICK_DIGITS_DEFAULT,
    BTC_LEVEL_GAP_BPS,
    BTC_SPREAD_BPS,
    FUNDING_8H_DRIFT,
    FUNDING_8H_TYPICAL,
    LEVEL_GROWTH,
    LEVEL_LOG_SD,
    LEVEL_USD_MEDIAN,
    SIM_EPOCH_MS,
    SWAP_SIZE_MULT,
    TOP_LOG_SD,
    TOP_USD_MEDIAN,
    _asset,
    _underlying,
    base_price,
    funding_interval_hours,
    market_type,
)
from pipeline.sources.sim.noise import F64, I64, _keys, _stable_hash, _std_normal
from pipeline.sources.sim.prices import PriceField

if TYPE_CHECKING:
    from core.settings import MarketSettings


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
        self.field = PriceField(seed, exs, syms)
        assets = [_asset(s) for s in syms]
        self._mtype = np.array([market_type(s) for s in syms], dtype=object)
        self._is_swap = np.array([market_type(s) != "spot" for s in syms])
        self._swap_idx = [i for i, s in enumerate(syms) if market_type(s) == "swap"]
        size_mult = np.array([a.size_mult for a in assets]) * np.where(self._is_swap, SWAP_SIZE_MULT, 1.0)
        self._spread_bps = BTC_SPREAD_BPS * np.array([a.spread_mult for a in assets])
        self._gap_bps = BTC_LEVEL_GAP_BPS * np.array([a.gap_mult for a in assets])
        self._level_usd = LEVEL_USD_MEDIAN * size_mult
        self._top_usd = TOP_USD_MEDIAN * size_mult
        activity = np.array([a.activity for a in assets])
        self._weights = activity / activity.sum()
        # tick = 10 ** -decimals, from the base price (stable even when the price drifts)
        prices = np.array([base_price(_underlying(s)) for s in syms])
        digits = np.array([_TICK_DIGITS.get(e, _TICK_DIGITS_DEFAULT) for e in exs])
        self._decimals = (digits[:, None] - np.floor(np.log10(prices))[None, :]).astype(np.int64)
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
            cached = draw_block(self.seed, block, self.exchanges, self.symbols, self.event_rates)
            if len(self._blocks) > 64:
                self._blocks.pop(min(self._blocks))
            self._blocks[block] = cached
        return cached

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
        stale = self.field.stale_mask(events, sym, ts.astype(np.float64))
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
        mid = self.field.mid(ex, sym, tsf) * (1.0 + _ROW_NOISE_BPS * 1e-4 * z_mid)
        top = self._top_usd[sym]
        bid_usd = top * np.exp(TOP_LOG_SD * z_bid)
        ask_usd = top * np.exp(TOP_LOG_SD * z_ask)
        mid, factor, _, _ = self.field.apply_events(ex, sym, tsf, mid, events, (bid_usd, ask_usd))
        mid = mid * factor
        spread = self._spread_bps[sym] * 1e-4 * np.exp(0.7 * z_spread)
        bid_t, ask_t, scale = self._touch(ex, sym, mid, spread)
        bid = bid_t / scale
        ask = ask_t / scale
        last = np.where(u_last < 0.5, bid, ask)
        quote_volume = self._volume_usd[ex, sym] * (
            1.0 + 0.2 * np.tanh(self.field.vn(self._volume_key[ex], ("volume", ex), sym, tsf, 3_600_000.0))
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
        keep = ~self.field.stale_mask(events, sym, ts.astype(np.float64)) | snapshot
        sym, ts, z, u_gap = sym[keep], ts[keep], z[keep], u_gap[keep]
        n = len(sym)
        if n == 0:
            return ORDER_BOOKS.empty_table()
        tsf = ts.astype(np.float64)
        normal_mid = self.field.mid(ex, sym, tsf) * (1.0 + _ROW_NOISE_BPS * 1e-4 * z[:, 0])
        level_usd = self._level_usd[sym, None] * (1.0 + LEVEL_GROWTH * np.arange(depth))[None, :]
        bid_usd = level_usd * np.exp(LEVEL_LOG_SD * z[:, 2 : 2 + depth])
        ask_usd = level_usd * np.exp(LEVEL_LOG_SD * z[:, 2 + depth : 2 + 2 * depth])
        top_bid, top_ask = bid_usd[:, 0].copy(), ask_usd[:, 0].copy()
        mid, factor, cross, n_cross = self.field.apply_events(
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
        keep = ~self.field.stale_mask(events, sym, tsf)
        if snapshot:  # the first answer has every rate, a stale feed's included
            keep |= ts == t0
        ts, sym, tsf = ts[keep], sym[keep], tsf[keep]
        n = len(ts)
        if n == 0:
            return FUNDING_RATES.empty_table()
        lat = np.clip(np.rint(rng.lognormal(math.log(_LATENCY_MEDIAN_MS), 0.6, size=n)), 1, 500)
        vn = self.field.vn
        slow = 0.6 * FUNDING_8H_DRIFT * vn(self._funding_key[ex], ("funding", ex), sym, tsf, 1_800_000.0)
        fast = 0.4 * FUNDING_8H_DRIFT * vn(self._funding_sym_key, ("funding",), sym, tsf, 600_000.0)
        rate_8h = FUNDING_8H_TYPICAL + self._funding_offset[ex, sym] + slow + fast
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
        mark = self.field.mid(ex, sym, tsf) * factor
        index_noise = 1.0 + 0.3e-4 * self.field.vn(self._index_key[ex], ("index", ex), sym, tsf, 30_000.0)
        index = self.field.fundamental(sym, tsf) * index_noise * factor
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
