"""Universe discovery: which symbols ``ARBFLOW_MARKET__SYMBOLS=top:N`` stands for.

The N markets with the highest 24 h quote volume (summed over the exchanges that
list them) among those listed on at least two configured exchanges. Spot markets and
linear perpetual swaps are ranked together, each on its own (``BTC/USDT`` and
``BTC/USDT:USDT`` are two markets); dated futures and options are left out.

By default a market is the same market on two exchanges only when its unified symbol
is the same. Two settings widen that, each only when configured:

- ``equivalent_quotes`` (e.g. USDT, USDC, FDUSD): quote (and settle) currencies that
  count as one, so ``ETH/FDUSD`` on binance and ``ETH/USDT`` on okx are one market;
- ``multiplier_bases``: a base with a multiplier prefix (``1000PEPE``, ``1000000MOG``,
  ``1MBABYDOGE``) is the same asset as the bare one, so ``1000PEPE/USDT:USDT`` on
  bybit and ``PEPE/USDT:USDT`` on okx are one market.

Every exchange's own symbol of a chosen market is carried (a matched market can be
more than one symbol). Pure: volumes in, a ranking out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TOP_PREFIX = "top:"
MIN_EXCHANGES = 2

_MULTIPLIER = re.compile(r"^(1000000|100000|10000|1000|100|10|1M)(?=[A-Z])")
_EXPIRY = re.compile(r"-\d{6}")


def universe_size(symbols: Iterable[str]) -> int | None:
    """N when the symbols setting is ``top:N`` (alone), else None; raises ValueError when malformed."""
    items = [s.strip() for s in symbols if s.strip()]
    tops = [s for s in items if s.lower().startswith(TOP_PREFIX)]
    if not tops:
        return None
    if len(items) != 1:
        raise ValueError(f"symbols: 'top:N' stands alone (got {', '.join(items)})")
    text = tops[0][len(TOP_PREFIX) :]
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"symbols: {tops[0]!r} is not top:N with N >= 1")
    return int(text)


@dataclass(frozen=True)
class UniverseRules:
    equivalent_quotes: tuple[str, ...] = ()
    """Quote/settle currencies that count as one (the first names the group); empty: exact."""
    multiplier_bases: bool = False
    """Whether ``1000PEPE`` and ``PEPE`` are one base."""
    min_exchanges: int = MIN_EXCHANGES


@dataclass(frozen=True)
class Ranked:
    """One chosen market: its key, summed quote volume and each exchange's symbol(s)."""

    key: str
    quote_volume: float
    symbols: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """exchange -> its symbols of this market."""


def market_key(symbol: str, rules: UniverseRules) -> str | None:
    """The symbol under which exchanges' markets are matched; None for markets not ranked."""
    base, slash, rest = symbol.partition("/")
    if not slash or not base:
        return None
    quote, colon, settle = rest.partition(":")
    if colon and (not settle or _EXPIRY.search(settle)):
        return None  # dated future or option
    if colon and settle != quote:
        return None  # inverse swap (BTC/USD:BTC): another product
    group = rules.equivalent_quotes
    if group and quote in group:
        quote = group[0]
        settle = group[0] if colon else settle
    if rules.multiplier_bases:
        base = _MULTIPLIER.sub("", base) or base
    return f"{base}/{quote}" + (f":{settle}" if colon else "")


def rank_universe(
    volumes: Mapping[str, Mapping[str, float | None]], n: int, rules: UniverseRules | None = None
) -> list[Ranked]:
    """The top ``n`` markets by summed quote volume, listed on ``min_exchanges`` exchanges or more.

    ``volumes``: exchange -> symbol -> 24 h quote volume (None: unknown, counts 0).
    Ties are broken by the key, so the same input always gives the same answer.
    """
    rules = rules or UniverseRules()
    totals: dict[str, float] = {}
    listed: dict[str, dict[str, list[str]]] = {}
    for exchange, by_symbol in volumes.items():
        for symbol, volume in by_symbol.items():
            key = market_key(symbol, rules)
            if key is None:
                continue
            value = float(volume) if volume is not None and volume == volume and volume > 0 else 0.0
            totals[key] = totals.get(key, 0.0) + value
            listed.setdefault(key, {}).setdefault(exchange, []).append(symbol)
    eligible = [k for k, by_ex in listed.items() if len(by_ex) >= rules.min_exchanges]
    eligible.sort(key=lambda k: (-totals[k], k))
    return [
        Ranked(k, totals[k], {ex: tuple(sorted(s)) for ex, s in sorted(listed[k].items())})
        for k in eligible[: max(0, n)]
    ]


def universe_symbols(ranked: Iterable[Ranked], exchange: str | None = None) -> list[str]:
    """The symbols of the chosen markets (of one exchange, or of all), in ranking order."""
    out: list[str] = []
    for item in ranked:
        for ex, symbols in item.symbols.items():
            if exchange is None or ex == exchange:
                out.extend(s for s in symbols if s not in out)
    return out


__all__ = [
    "MIN_EXCHANGES",
    "TOP_PREFIX",
    "Ranked",
    "UniverseRules",
    "market_key",
    "rank_universe",
    "universe_size",
    "universe_symbols",
]
