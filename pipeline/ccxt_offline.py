"""ccxt exchanges without the network, and taker fees from ccxt markets.

``offline_exchange`` builds a ccxt exchange (sync, ``async_support`` or ``pro``)
whose markets come from recorded ccxt market structures (``set_markets``), so
``parse_ticker``, ``parse_order_book``, ``parse_funding_rate`` and the unified
``fetch_*`` methods (with ``fetch`` routed to recorded responses) work offline.

``taker_fee`` answers the taker fee for an exchange and market type with this
precedence: ``Settings.fees`` override → the ccxt markets' ``taker`` → the one
built-in table of :mod:`core.fees` (``DEFAULT_FEES``, then ``UNKNOWN_FEES``).
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ccxt

from core.fees import FeeSchedule

MARKET_TYPES = ("spot", "swap", "future")


def load_recorded_markets(path: str | Path) -> list[dict[str, Any]]:
    """Read recorded ccxt markets: a JSON dict ``symbol -> market`` or a list of markets."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict):
        return list(data.values())
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a dict or a list of ccxt markets, got {type(data).__name__}")


def _exchange_class(exchange_id: str, flavour: str) -> type[Any]:
    module: Any
    if flavour == "sync":
        module = ccxt
    elif flavour == "async":
        module = importlib.import_module("ccxt.async_support")
    elif flavour == "pro":
        module = importlib.import_module("ccxt.pro")
    else:
        raise ValueError(f"flavour must be 'sync', 'async' or 'pro', not {flavour!r}")
    cls = getattr(module, exchange_id, None)
    if not isinstance(cls, type):
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r} ({flavour})")
    return cls


def prepare_offline_options(exchange: Any) -> None:
    """Options some exchanges need so ``set_markets``/parsing never reach for the network."""
    # binance fetches margin pair lists while building markets; empty lists keep it offline.
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []


def offline_exchange(
    exchange_id: str,
    markets: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | str | Path,
    *,
    flavour: str = "sync",
    config: Mapping[str, Any] | None = None,
) -> Any:
    """A ccxt exchange with markets set from recorded structures, no network needed.

    ``markets`` is a list of ccxt markets, a dict ``symbol -> market``, or a path to
    a JSON file of either. ``flavour`` picks ``ccxt`` ("sync"), ``ccxt.async_support``
    ("async") or ``ccxt.pro`` ("pro"). Async instances must be closed by the caller
    (``await exchange.close()``).
    """
    if isinstance(markets, str | Path):
        market_list: list[Any] = load_recorded_markets(markets)
    elif isinstance(markets, Mapping):
        market_list = list(markets.values())
    else:
        market_list = list(markets)
    cls = _exchange_class(exchange_id, flavour)
    exchange = cls({"enableRateLimit": True, **(config or {})})
    prepare_offline_options(exchange)
    exchange.set_markets(market_list)
    return exchange


def _market_type(market: Mapping[str, Any]) -> str | None:
    kind = market.get("type")
    if kind in MARKET_TYPES:
        return str(kind)
    if market.get("swap"):
        return "swap"
    if market.get("future"):
        return "future"
    if market.get("spot"):
        return "spot"
    return None


def _markets_of(markets_or_exchange: Any) -> Mapping[str, Mapping[str, Any]] | None:
    if markets_or_exchange is None:
        return None
    if isinstance(markets_or_exchange, Mapping):
        return markets_or_exchange
    markets = getattr(markets_or_exchange, "markets", None)
    return markets if isinstance(markets, Mapping) else None


def taker_fee(
    exchange_id: str,
    market_type: str,
    markets_or_exchange: Any = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    *,
    symbol: str | None = None,
) -> float:
    """Taker fee (a fraction, 0.001 = 10 bp) for ``exchange_id`` and ``market_type``.

    ``markets_or_exchange`` is a ccxt markets dict or an exchange with loaded
    markets (or None). With ``symbol`` the fee of that market is used when known;
    otherwise the most common ``taker`` among the markets of that type.
    ``overrides`` is ``Settings.fees``: ``{"binance": {"spot_taker": 0.001}}``
    (a plain ``"taker"`` key applies to every market type).
    """
    if market_type not in MARKET_TYPES:
        raise ValueError(f"market_type must be one of {MARKET_TYPES}, not {market_type!r}")
    schedule = FeeSchedule.build(overrides)
    overridden = schedule.override(exchange_id, market_type)
    if overridden is not None:
        return float(overridden)
    markets = _markets_of(markets_or_exchange)
    if markets:
        if symbol is not None:
            market = markets.get(symbol)
            if market is not None and market.get("taker") is not None:
                return float(market["taker"])
        takers = Counter(
            float(m["taker"])
            for m in markets.values()
            if m.get("taker") is not None and _market_type(m) == market_type
        )
        if takers:
            # most_common is stable on ties (first seen); take the highest among ties
            # so the estimate stays conservative.
            top = takers.most_common(1)[0][1]
            return max(fee for fee, count in takers.items() if count == top)
        if market_type == "future":  # no dated futures loaded: they cost what swaps cost
            return taker_fee(exchange_id, "swap", markets, overrides)
    return float(schedule.taker(exchange_id, market_type))


def taker_fees(
    exchange_id: str,
    markets_or_exchange: Any = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """``{"spot": fee, "swap": fee, "future": fee}`` for one exchange (see ``taker_fee``)."""
    return {kind: taker_fee(exchange_id, kind, markets_or_exchange, overrides) for kind in MARKET_TYPES}
