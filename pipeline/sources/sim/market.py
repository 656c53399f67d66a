"""The simulated market's calibration and listings: assets, tick sizes, volumes, market
types and funding intervals (the figures and where they come from: ``pipeline.sources.sim``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sources.sim.noise import _stable_hash

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
