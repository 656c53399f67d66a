"""Injected events — arbitrage windows, stale feeds, ticker collisions, funding jumps — the
ground truth of the sim, drawn per 60 s block of absolute time from ``(seed, block)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.sources.sim.market import _BLOCK_MS, _MAX_EVENT_MS, market_type
from pipeline.sources.sim.noise import _stable_hash


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


def draw_block(
    seed: int, block: int, exchanges: Sequence[str], symbols: Sequence[str], rates: EventRates
) -> list[SimEvent]:
    """The events starting in one 60 s block: a pure function of (seed, block, config)."""
    rng = np.random.default_rng([seed, 0xE7E27, block])
    exs, syms = list(exchanges), list(symbols)
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
    swaps = [i for i, s in enumerate(syms) if market_type(s) == "swap"]
    for t in starts(rates.funding if swaps else 0.0):
        life = int(rng.uniform(30_000, _MAX_EVENT_MS))
        s = pick(swaps, t, t + life, "funding")
        e = int(rng.integers(len(exs)))
        jump = float(rng.uniform(5.0, 30.0)) * (1.0 if rng.random() < 0.6 else -1.0)
        events.append(SimEvent("funding", syms[s], (exs[e],), t, t + life, round(jump, 2)))
    return events
