"""The sim's prices as a field over (exchange, symbol, time): a fundamental random walk per
underlying (value-noise octaves from 1 s to 1 h), a swap premium, a per-exchange basis, and
the injected events on top. Pure functions of ``(seed, symbol, time)``: any instance, in any
process, quotes the same mid at the same time."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pipeline.sources.sim.events import SimEvent, _arb_levels
from pipeline.sources.sim.market import (
    _BASIS_DRIFT_BPS,
    _BASIS_STATIC_BPS,
    _OCTAVES_MS,
    _SWAP_BASIS_BPS,
    _YEAR_MS,
    _asset,
    _underlying,
    base_price,
    market_type,
)
from pipeline.sources.sim.noise import F64, I64, U64, _gauss, _keys, _mix, _std_normal


class PriceField:
    """Mids of every (exchange, symbol) at any time, and the events' shifts of them."""

    def __init__(self, seed: int, exchanges: Sequence[str], symbols: Sequence[str]) -> None:
        self.exchanges = exs = list(exchanges)
        self.symbols = syms = list(symbols)
        assets = [_asset(s) for s in syms]
        self._is_swap = np.array([market_type(s) != "spot" for s in syms])
        prices = np.array([base_price(_underlying(s)) for s in syms])
        self._log_base = np.log(prices)
        sigma = np.array([a.vol for a in assets]) / math.sqrt(_YEAR_MS)
        self._amp = np.stack([sigma * math.sqrt(p / 2.0) for p in _OCTAVES_MS], axis=1)
        self._path_key = np.array(
            [[_keys(seed, "path", _underlying(s), o) for o in range(len(_OCTAVES_MS))] for s in syms],
            dtype=np.uint64,
        )
        self._swap_key = np.array([_keys(seed, "swapbasis", s) for s in syms], dtype=np.uint64)
        self._basis_bps = np.array(
            [[_BASIS_STATIC_BPS * _std_normal(seed, "basis", e, s) for s in syms] for e in exs]
        )
        self._basis_key = np.array([[_keys(seed, "basisdrift", e, s) for s in syms] for e in exs], np.uint64)
        self._knot_cache: dict[tuple[object, ...], F64] = {}

    def vn(self, keys: U64, name: tuple[object, ...], sym: I64, t_ms: F64, period_ms: float) -> F64:
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

    def fundamental(self, sym: I64, t_ms: F64) -> F64:
        """Spot mid of each row's underlying at ``t_ms``: depends only on (seed, underlying, time)."""
        log_mid = self._log_base[sym].copy()
        for o, period in enumerate(_OCTAVES_MS):
            log_mid += self._amp[sym, o] * self.vn(self._path_key[:, o], ("path", o), sym, t_ms, period)
        return np.exp(log_mid)

    def swap_factor(self, sym: I64, t_ms: F64) -> F64:
        mean, amp = _SWAP_BASIS_BPS
        premium = (mean + amp * self.vn(self._swap_key, ("swap",), sym, t_ms, 900_000.0)) * 1e-4
        return 1.0 + np.where(self._is_swap[sym], premium, 0.0)

    def basis(self, ex: int, sym: I64, t_ms: F64) -> F64:
        drift = _BASIS_DRIFT_BPS * self.vn(self._basis_key[ex], ("basis", ex), sym, t_ms, 120_000.0)
        return (self._basis_bps[ex, sym] + drift) * 1e-4

    def mid(self, ex: int, sym: I64, t_ms: F64) -> F64:
        """Noise-free mid of an exchange (fundamental x swap premium x exchange basis)."""
        return self.fundamental(sym, t_ms) * self.swap_factor(sym, t_ms) * (1.0 + self.basis(ex, sym, t_ms))

    def apply_events(
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
            base = self.fundamental(s_arr, t_m) * self.swap_factor(s_arr, t_m)
            other_mid = base * (1.0 + self.basis(other, s_arr, t_m))
            mid[idx] = other_mid * (1.0 + direction * ev.size_bps * 1e-4)
            cross[idx] = direction
            levels = _arb_levels(ev)
            n_cross[idx] = levels
            if side_usd is not None and ev.depth_usd is not None:
                side_usd[0 if direction > 0 else 1][idx] = ev.depth_usd / levels
        return mid, factor, cross, n_cross

    def stale_mask(self, ex_events: list[SimEvent], sym: I64, ts: F64) -> npt.NDArray[np.bool_]:
        mask = np.zeros(len(sym), dtype=bool)
        for ev in ex_events:
            if ev.kind == "stale":
                s = self.symbols.index(ev.symbol)
                mask |= (sym == s) & (ts >= ev.start_ms) & (ts < ev.end_ms)
        return mask
