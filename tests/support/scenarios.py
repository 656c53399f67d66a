"""NDJSON replay scenarios (CONTRACT.md "Replay input") with known answers.

A :class:`Scenario` collects replay records (ccxt unified structures: order books,
tickers, funding rates) on a time base and writes them time-ordered as one NDJSON
file. :func:`known_opportunities` builds the reference scenario of the replay tests
(issue 3, "Correctness"): ~20 s of replay time on binance, bybit and okx with

- three KNOWN opportunities whose gross and net bps are computed here by hand,
  with plain float arithmetic from the issue's formula (never by calling arbflow)::

      net = (sell_vwap·(1-f_sell) - buy_vwap·(1+f_buy)) / (buy_vwap·(1+f_buy))

  sized as in ``core/spread.py``: buy ``notional`` USD on the buy book's asks, sell
  that base quantity into the other exchange's bids; and for funding: per-hour
  rates by each side's own interval, long the lower, short the higher, net over the
  default 168 h horizon after four taker fills and the entry basis;
- DECOYS that must never give a pushable opportunity: a spread below the fees, a
  stale leg, a ticker collision, a crossed book, one-sided and empty books, a
  funding spread below its fees and a funding "interval trap";
- noise books on every exchange for every symbol, with spreads far below fees.

Fees are the built-in defaults of ``core/fees.py`` (no ``ARBFLOW_FEES``): spot
taker 0.001 everywhere; swap taker binance 0.0005, bybit 0.00055, okx 0.0005.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Level = list[float]
Levels = list[Level]
Key = tuple[str, str, str, str]
"""``(kind, symbol, buy_exchange, sell_exchange)``: the opportunity engine's dedup key."""

EXCHANGES = ("binance", "bybit", "okx")
SPOT_FEE = {"binance": 0.001, "bybit": 0.001, "okx": 0.001}
SWAP_FEE = {"binance": 0.0005, "bybit": 0.00055, "okx": 0.0005}
HORIZON_H = 168.0
"""Default funding holding horizon (``core.funding.DEFAULT_HORIZON_HOURS``)."""
HOURS_PER_YEAR = 24.0 * 365.0

T0_MS = 1_717_416_005_000
"""2024-06-03T12:00:05Z: the whole scenario stays inside one 1 m bar (no volatility)."""
STEP_MS = 200
DURATION_S = 20.0
HOUR_MS = 3_600_000


def bps(x: float) -> float:
    return x * 10_000.0


def net_fraction(buy_vwap: float, sell_vwap: float, f_buy: float, f_sell: float) -> float:
    """The issue's formula, written out (not imported)."""
    cost = buy_vwap * (1.0 + f_buy)
    return (sell_vwap * (1.0 - f_sell) - cost) / cost


@dataclass
class Scenario:
    """Replay records on a time base ``t0_ms``; times given to helpers are seconds from it."""

    t0_ms: int = T0_MS
    step_ms: int = STEP_MS
    duration_s: float = DURATION_S
    records: list[dict[str, Any]] = field(default_factory=list)
    expected: list[dict[str, Any]] = field(default_factory=list)
    """Every hand-computed detector row: one per (key, notional) for spot, one per key for funding."""
    decoys: list[dict[str, Any]] = field(default_factory=list)
    """What each decoy is and what must (not) come from it."""

    # -- time ----------------------------------------------------------------
    def ms(self, t_s: float) -> int:
        return self.t0_ms + round(t_s * 1000)

    def ticks(self, start_s: float = 0.0, end_s: float | None = None) -> list[float]:
        """Snapshot times (s) every ``step_ms`` in ``[start_s, end_s)``."""
        end = self.duration_s if end_s is None else end_s
        first = round(start_s * 1000)
        last = round(end * 1000)
        step = self.step_ms
        first = ((first + step - 1) // step) * step
        return [t / 1000 for t in range(first, last, step)]

    # -- records -------------------------------------------------------------
    def _record(self, t_s: float, exchange: str, kind: str, data: dict[str, Any]) -> None:
        self.records.append({"ts": self.ms(t_s), "exchange": exchange, "kind": kind, "data": data})

    def book(self, t_s: float, exchange: str, symbol: str, bids: Levels, asks: Levels) -> None:
        """An order book as ccxt's ``fetch_order_book`` returns it (exchange time = record time)."""
        ts = self.ms(t_s)
        self._record(
            t_s,
            exchange,
            "order_book",
            {
                "symbol": symbol,
                "bids": [list(lv) for lv in bids],
                "asks": [list(lv) for lv in asks],
                "timestamp": ts,
                "datetime": _iso(ts),
                "nonce": ts,
            },
        )

    def ticker(self, t_s: float, exchange: str, symbol: str, bids: Levels, asks: Levels) -> None:
        """A ccxt ticker consistent with the top of a book."""
        ts = self.ms(t_s)
        bid, bid_size = bids[0]
        ask, ask_size = asks[0]
        mid = (bid + ask) / 2.0
        self._record(
            t_s,
            exchange,
            "ticker",
            {
                "symbol": symbol,
                "timestamp": ts,
                "datetime": _iso(ts),
                "bid": bid,
                "bidVolume": bid_size,
                "ask": ask,
                "askVolume": ask_size,
                "last": mid,
                "baseVolume": 1_000.0,
                "quoteVolume": 1_000.0 * mid,
            },
        )

    def funding(
        self,
        t_s: float,
        exchange: str,
        symbol: str,
        *,
        rate: float,
        interval_h: float,
        mark: float,
        index: float | None = None,
    ) -> None:
        """A ccxt funding rate (``fetch_funding_rate``) with its own interval."""
        ts = self.ms(t_s)
        period = interval_h * HOUR_MS
        upcoming = int((ts // period + 1) * period)
        self._record(
            t_s,
            exchange,
            "funding_rate",
            {
                "symbol": symbol,
                "timestamp": ts,
                "datetime": _iso(ts),
                "fundingRate": rate,
                "fundingTimestamp": upcoming,
                "fundingDatetime": _iso(upcoming),
                "nextFundingTimestamp": upcoming + period,
                "nextFundingRate": None,
                "interval": f"{interval_h:g}h",
                "markPrice": mark,
                "indexPrice": mark if index is None else index,
            },
        )

    def books_every(
        self,
        exchange: str,
        symbol: str,
        start_s: float,
        end_s: float,
        levels: Callable[[float], tuple[Levels, Levels]],
        *,
        ticker_every: int = 5,
    ) -> None:
        """A book every ``step_ms`` in ``[start_s, end_s)``; a ticker every ``ticker_every`` books."""
        for t in self.ticks(start_s, end_s):
            bids, asks = levels(t)
            self.book(t, exchange, symbol, bids, asks)
            if ticker_every and round(t * 1000) % (self.step_ms * ticker_every) == 0 and bids and asks:
                self.ticker(t, exchange, symbol, bids, asks)

    # -- output --------------------------------------------------------------
    def sorted_records(self) -> list[dict[str, Any]]:
        return sorted(self.records, key=lambda r: r["ts"])  # stable: insertion order within a ts

    def write(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            for rec in self.sorted_records():
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        return out

    @property
    def symbols(self) -> list[str]:
        return sorted({r["data"]["symbol"] for r in self.records})

    @property
    def exchanges(self) -> list[str]:
        return sorted({r["exchange"] for r in self.records})

    # -- expectations --------------------------------------------------------
    @property
    def known_keys(self) -> set[Key]:
        return {_key(e) for e in self.expected if e["pushable"]}

    def expected_for(self, key: Key) -> list[dict[str, Any]]:
        return [e for e in self.expected if _key(e) == key]

    def engine_expected(self) -> dict[Key, dict[str, Any]]:
        """Per known key, the row the engine keeps: executable (no ``insufficient_depth``), best net."""
        out: dict[Key, dict[str, Any]] = {}
        for key in sorted(self.known_keys):
            rows = self.expected_for(key)
            executable = [r for r in rows if "insufficient_depth" not in r["flags"]] or rows
            out[key] = max(executable, key=lambda r: r["net_bps"])
        return out

    @property
    def tracked_decoy_keys(self) -> set[Key]:
        """Decoy keys the lifecycle may track (net > 0) but must never mark pushable."""
        return {k for d in self.decoys for k in d.get("tracked_keys", ())}


def _key(row: dict[str, Any]) -> Key:
    return (row["kind"], row["symbol"], row["buy_exchange"], row["sell_exchange"])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- noise


def noise_levels(
    rng: random.Random,
    mid: float,
    *,
    half_spread_bps: float = 1.0,
    jitter_bps: float = 1.5,
    step_bps: float = 1.0,
    level_usd: float = 5_000.0,
    depth: int = 10,
) -> tuple[Levels, Levels]:
    """A tight book around ``mid`` (± ``jitter_bps``): cross-exchange spreads stay far below fees."""
    m = mid * (1.0 + rng.uniform(-jitter_bps, jitter_bps) / 10_000.0)
    bids: Levels = []
    asks: Levels = []
    for i in range(depth):
        off = (half_spread_bps + i * step_bps) / 10_000.0
        bid, ask = m * (1.0 - off), m * (1.0 + off)
        bids.append([bid, level_usd / bid])
        asks.append([ask, level_usd / ask])
    return bids, asks


def _fixed(bids: Levels, asks: Levels) -> Callable[[float], tuple[Levels, Levels]]:
    return lambda _t: (bids, asks)


def _noise(
    rng: random.Random, mid: float, jitter_bps: float = 1.5
) -> Callable[[float], tuple[Levels, Levels]]:
    return lambda _t: noise_levels(rng, mid, jitter_bps=jitter_bps)


# --------------------------------------------------------------------------- the scenario

# KNOWN 1: BTC/USDT, buy binance, sell okx (okx bids 60 bps above binance asks).
K1_WINDOW = (2.0, 10.0)
K1_BINANCE = ([[59_990.0, 0.5], [59_980.0, 1.0], [59_970.0, 2.0]],
              [[60_000.0, 0.1], [60_010.0, 1.0], [60_020.0, 2.0], [60_030.0, 3.0]])  # fmt: skip
K1_OKX = ([[60_360.0, 0.1], [60_350.0, 1.0], [60_340.0, 2.0], [60_330.0, 3.0]],
          [[60_370.0, 0.5], [60_380.0, 1.0], [60_390.0, 2.0]])  # fmt: skip
# bybit sits in between with a wide book: binance→bybit and bybit→okx stay below fees
K1_BYBIT = ([[60_100.0, 1.0], [60_090.0, 2.0]], [[60_260.0, 1.0], [60_270.0, 2.0]])

# KNOWN 2: ETH/USDT, buy bybit (only 4,501 USD of asks), sell binance (70 bps above).
K2_WINDOW = (4.0, 14.0)
K2_BYBIT = ([[2_998.0, 2.0], [2_997.0, 3.0]], [[3_000.0, 0.5], [3_001.0, 1.0]])
K2_BINANCE = ([[3_021.0, 5.0], [3_020.0, 5.0], [3_019.0, 5.0]], [[3_023.0, 5.0], [3_024.0, 5.0]])
K2_OKX = ([[3_005.0, 3.0], [3_004.0, 3.0]], [[3_016.0, 3.0], [3_017.0, 3.0]])

# KNOWN 3: BTC/USDT:USDT funding, bybit 0.0001 per 8 h vs okx 0.0004 per 4 h.
K3_BYBIT: dict[str, float] = {"rate": 0.0001, "interval_h": 8, "mark": 60_000.0}
K3_OKX: dict[str, float] = {"rate": 0.0004, "interval_h": 4, "mark": 59_994.0}

# DECOY a: DOGE/USDT, okx bids 10 bps above binance asks (< 20 bps of fees).
DA_WINDOW = (3.0, 15.0)
DA_BINANCE = ([[0.14990, 100_000.0], [0.14985, 100_000.0]], [[0.15000, 100_000.0], [0.15005, 100_000.0]])
DA_OKX = ([[0.15015, 100_000.0], [0.15010, 100_000.0]], [[0.15025, 100_000.0], [0.15030, 100_000.0]])
DA_BYBIT = ([[0.14995, 100_000.0], [0.14990, 100_000.0]], [[0.15020, 100_000.0], [0.15025, 100_000.0]])

# DECOY b: SOL/USDT, okx stops at 8.0 s; binance and bybit move +1% from 10.4 s.
DB_OKX_LAST = 8.0
DB_MOVE = 10.4

# DECOY c: XRP/USDT quoted 20x off on bybit.
DC_MID, DC_FACTOR = 0.52, 20.0

# DECOY d: ADA/USDT crossed on okx (its bid above its ask, and above the others' asks).
DD_WINDOW = (5.0, 12.0)
DD_OKX = ([[0.4520, 50_000.0], [0.4519, 50_000.0]], [[0.4510, 50_000.0], [0.4511, 50_000.0]])

# DECOY e: LINK/USDT one-sided on bybit (asks only, below the others' bids), then empty on okx.
DE_ONE_SIDED = (6.0, 11.0)
DE_BYBIT: tuple[Levels, Levels] = ([], [[14.90, 1_000.0], [14.91, 1_000.0]])
DE_EMPTY = (12.0, 16.0)


def _k1_expected() -> list[dict[str, Any]]:
    f_buy, f_sell = SPOT_FEE["binance"], SPOT_FEE["okx"]
    rows = []
    # 1,000 USD: all on binance's best ask (6,000 USD there), sold on okx's best bid (0.1 BTC there).
    buy_1k, sell_1k = 60_000.0, 60_360.0
    # 10,000 USD: 6,000 USD at 60,000 (0.1 BTC) + 4,000 USD at 60,010; sold 0.1 at 60,360, rest at 60,350.
    q = 0.1 + 4_000.0 / 60_010.0
    buy_10k = 10_000.0 / q
    sell_10k = (0.1 * 60_360.0 + (q - 0.1) * 60_350.0) / q
    for notional, buy, sell, qty in (
        (1_000.0, buy_1k, sell_1k, 1_000.0 / 60_000.0),
        (10_000.0, buy_10k, sell_10k, q),
    ):
        rows.append(
            {
                "kind": "spot_spread",
                "symbol": "BTC/USDT",
                "buy_exchange": "binance",
                "sell_exchange": "okx",
                "notional_usd": notional,
                "buy_vwap": buy,
                "sell_vwap": sell,
                "executable_base": qty,
                "executable_usd": notional,
                "gross_bps": bps((sell - buy) / buy),
                "net_bps": bps(net_fraction(buy, sell, f_buy, f_sell)),
                "flags": "",
                "pushable": True,
                "window_s": K1_WINDOW,
            }
        )
    return rows


def _k2_expected() -> list[dict[str, Any]]:
    f_buy, f_sell = SPOT_FEE["bybit"], SPOT_FEE["binance"]
    # 1,000 USD fits in bybit's best ask (1,500 USD); binance's best bid takes 1/3 ETH easily.
    buy_1k, sell_1k = 3_000.0, 3_021.0
    # 10,000 USD: bybit's whole ask side is 0.5 @ 3,000 + 1.0 @ 3,001 = 4,501 USD for 1.5 ETH,
    # all sold at binance's best bid (5 ETH): insufficient depth, not pushable at this size.
    q = 1.5
    cost = 0.5 * 3_000.0 + 1.0 * 3_001.0
    buy_10k, sell_10k = cost / q, 3_021.0
    out = []
    for notional, buy, sell, qty, usd, flags in (
        (1_000.0, buy_1k, sell_1k, 1_000.0 / 3_000.0, 1_000.0, ""),
        (10_000.0, buy_10k, sell_10k, q, cost, "insufficient_depth"),
    ):
        out.append(
            {
                "kind": "spot_spread",
                "symbol": "ETH/USDT",
                "buy_exchange": "bybit",
                "sell_exchange": "binance",
                "notional_usd": notional,
                "buy_vwap": buy,
                "sell_vwap": sell,
                "executable_base": qty,
                "executable_usd": usd,
                "gross_bps": bps((sell - buy) / buy),
                "net_bps": bps(net_fraction(buy, sell, f_buy, f_sell)),
                "flags": flags,
                "pushable": not flags,
                "window_s": K2_WINDOW,
            }
        )
    return out


def _k3_expected() -> dict[str, Any]:
    long_ph = K3_BYBIT["rate"] / K3_BYBIT["interval_h"]  # 0.0001 / 8 = 1.25e-5 per hour
    short_ph = K3_OKX["rate"] / K3_OKX["interval_h"]  # 0.0004 / 4 = 1e-4 per hour
    spread_ph = short_ph - long_ph  # 8.75e-5 per hour
    fees = 2 * SWAP_FEE["bybit"] + 2 * SWAP_FEE["okx"]  # four taker fills: 0.0021
    entry_basis = (K3_OKX["mark"] - K3_BYBIT["mark"]) / K3_BYBIT["mark"]  # short - long: -1 bp
    basis_cost = max(0.0 - entry_basis, 0.0)  # converging to 0 costs 1 bp
    roundtrip = fees + basis_cost
    gross = spread_ph * HORIZON_H
    net = gross - roundtrip
    return {
        "kind": "funding_rate",
        "symbol": "BTC/USDT:USDT",
        "buy_exchange": "bybit",  # long the lower per-hour rate
        "sell_exchange": "okx",  # short the higher
        "notional_usd": None,  # funding bps do not depend on the notional
        "long_rate_per_hour": long_ph,
        "short_rate_per_hour": short_ph,
        "spread_per_hour": spread_ph,
        "entry_basis": entry_basis,
        "roundtrip_cost": roundtrip,
        "gross_bps": bps(gross),
        "net_bps": bps(net),
        "gross_apr": spread_ph * HOURS_PER_YEAR,
        "net_apr": net * HOURS_PER_YEAR / HORIZON_H,
        "breakeven_hours": roundtrip / spread_ph,
        "flags": "",
        "pushable": True,
        "window_s": (0.0, DURATION_S),
    }


def known_opportunities(seed: int = 7) -> Scenario:
    """The reference replay scenario: three known opportunities, decoys and noise (~20 s)."""
    rng = random.Random(seed)
    sc = Scenario()
    end = sc.duration_s

    def around(window: tuple[float, float], exchange: str, symbol: str, mid: float,
               inside: Callable[[float], tuple[Levels, Levels]]) -> None:  # fmt: skip
        start, stop = window
        sc.books_every(exchange, symbol, 0.0, start, _noise(rng, mid))
        sc.books_every(exchange, symbol, start, stop, inside)
        sc.books_every(exchange, symbol, stop, end, _noise(rng, mid))

    # KNOWN 1 ---------------------------------------------------------------
    around(K1_WINDOW, "binance", "BTC/USDT", 60_000.0, _fixed(*K1_BINANCE))
    around(K1_WINDOW, "okx", "BTC/USDT", 60_000.0, _fixed(*K1_OKX))
    around(K1_WINDOW, "bybit", "BTC/USDT", 60_000.0, _fixed(*K1_BYBIT))
    # KNOWN 2 ---------------------------------------------------------------
    around(K2_WINDOW, "bybit", "ETH/USDT", 3_000.0, _fixed(*K2_BYBIT))
    around(K2_WINDOW, "binance", "ETH/USDT", 3_000.0, _fixed(*K2_BINANCE))
    around(K2_WINDOW, "okx", "ETH/USDT", 3_000.0, _fixed(*K2_OKX))
    # KNOWN 3: funding every second, swap books around the marks ---------------
    for t in sc.ticks(0.0, end):
        if round(t * 1000) % 1000 == 0:
            for ex, leg in (("bybit", K3_BYBIT), ("okx", K3_OKX)):
                sc.funding(
                    t, ex, "BTC/USDT:USDT", rate=leg["rate"], interval_h=leg["interval_h"], mark=leg["mark"]
                )
            # funding decoy: 0.00012 vs 0.0001 per 8 h is 4.2 bps a week, below 21 bps of fees
            sc.funding(t, "bybit", "ETH/USDT:USDT", rate=0.0001, interval_h=8, mark=3_000.0)
            sc.funding(t, "okx", "ETH/USDT:USDT", rate=0.00012, interval_h=8, mark=3_000.0)
            # interval trap: 0.0004 per 8 h and 0.0002 per 4 h are the same per hour
            sc.funding(t, "binance", "SOL/USDT:USDT", rate=0.0004, interval_h=8, mark=150.0)
            sc.funding(t, "okx", "SOL/USDT:USDT", rate=0.0002, interval_h=4, mark=150.0)
    for ex, mid in (("binance", 59_997.0), ("bybit", 60_000.0), ("okx", 59_994.0)):
        sc.books_every(ex, "BTC/USDT:USDT", 0.0, end, _noise(rng, mid))
    for ex in EXCHANGES:
        sc.books_every(ex, "ETH/USDT:USDT", 0.0, end, _noise(rng, 3_000.0))
        sc.books_every(ex, "SOL/USDT:USDT", 0.0, end, _noise(rng, 150.0))

    # DECOY a: spread below fees ---------------------------------------------
    around(DA_WINDOW, "binance", "DOGE/USDT", 0.15, _fixed(*DA_BINANCE))
    around(DA_WINDOW, "okx", "DOGE/USDT", 0.15, _fixed(*DA_OKX))
    around(DA_WINDOW, "bybit", "DOGE/USDT", 0.15, _fixed(*DA_BYBIT))
    # DECOY b: stale leg ------------------------------------------------------
    sc.books_every("okx", "SOL/USDT", 0.0, DB_OKX_LAST + 0.001, _noise(rng, 150.0))
    for ex in ("binance", "bybit"):
        sc.books_every(ex, "SOL/USDT", 0.0, DB_MOVE, _noise(rng, 150.0))
        sc.books_every(ex, "SOL/USDT", DB_MOVE, end, _noise(rng, 151.5))
    # DECOY c: ticker collision -----------------------------------------------
    # (steady books: a 1,900% spread moving with noise would be a material update every tick)
    for ex in ("binance", "okx"):
        sc.books_every(ex, "XRP/USDT", 0.0, end, _noise(rng, DC_MID, jitter_bps=0.0))
    sc.books_every("bybit", "XRP/USDT", 0.0, end, _noise(rng, DC_MID * DC_FACTOR, jitter_bps=0.0))
    # DECOY d: crossed book ---------------------------------------------------
    for ex in ("binance", "bybit"):
        sc.books_every(ex, "ADA/USDT", 0.0, end, _noise(rng, 0.45))
    around(DD_WINDOW, "okx", "ADA/USDT", 0.45, _fixed(*DD_OKX))
    # DECOY e: one-sided, then empty --------------------------------------------
    sc.books_every("binance", "LINK/USDT", 0.0, end, _noise(rng, 15.0))
    around(DE_ONE_SIDED, "bybit", "LINK/USDT", 15.0, _fixed(*DE_BYBIT))
    around(DE_EMPTY, "okx", "LINK/USDT", 15.0, _fixed([], []))

    sc.expected = [*_k1_expected(), *_k2_expected(), _k3_expected()]
    da_net = bps(net_fraction(0.15000, 0.15015, SPOT_FEE["binance"], SPOT_FEE["okx"]))
    sc.decoys = [
        {
            "name": "below_fees",
            "symbol": "DOGE/USDT",
            "window_s": DA_WINDOW,
            "key": ("spot_spread", "DOGE/USDT", "binance", "okx"),
            "gross_bps": bps((0.15015 - 0.15000) / 0.15000),
            "net_bps": da_net,
            "flag": "below_threshold",
        },
        {
            "name": "stale_leg",
            "symbol": "SOL/USDT",
            "exchange": "okx",
            "stale_from_s": DB_OKX_LAST + 2.0,
            "reason": "stale",
        },
        {
            "name": "ticker_collision",
            "symbol": "XRP/USDT",
            "exchange": "bybit",
            "flag": "implausible_spread",
            "tracked_keys": [
                ("spot_spread", "XRP/USDT", "binance", "bybit"),
                ("spot_spread", "XRP/USDT", "okx", "bybit"),
            ],
        },
        {
            "name": "crossed_book",
            "symbol": "ADA/USDT",
            "exchange": "okx",
            "window_s": DD_WINDOW,
            "reason": "crossed_book",
        },
        {
            "name": "one_sided_book",
            "symbol": "LINK/USDT",
            "exchange": "bybit",
            "window_s": DE_ONE_SIDED,
            "reason": "one_sided_book",
        },
        {
            "name": "empty_book",
            "symbol": "LINK/USDT",
            "exchange": "okx",
            "window_s": DE_EMPTY,
            "reason": "empty_book",
        },
        {
            "name": "funding_below_fees",
            "symbol": "ETH/USDT:USDT",
            "key": ("funding_rate", "ETH/USDT:USDT", "bybit", "okx"),
            "flag": "below_threshold",
        },
        {"name": "funding_interval_trap", "symbol": "SOL/USDT:USDT"},
    ]
    return sc


def decoy_symbols(sc: Scenario) -> set[str]:
    return {d["symbol"] for d in sc.decoys}


def expected_table(rows: Iterable[dict[str, Any]]) -> str:
    """The expected values as a Markdown table (for reports)."""
    lines = [
        "| kind | symbol | buy | sell | notional | gross bps | net bps | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notional = "any" if r["notional_usd"] is None else f"{r['notional_usd']:,.0f}"
        lines.append(
            f"| {r['kind']} | {r['symbol']} | {r['buy_exchange']} | {r['sell_exchange']} | {notional} "
            f"| {r['gross_bps']:.4f} | {r['net_bps']:.4f} | {r['flags'] or '-'} |"
        )
    return "\n".join(lines)


WIDEN_AT_S = 5.0
"""When :func:`widening_spread` goes from a thin edge (low confidence) to a wide one."""


def widening_spread(
    *, thin_net_bps: float = 3.0, wide_net_bps: float = 40.0, duration_s: float = 16.0
) -> Scenario:
    """BTC/USDT bought on binance and sold on okx: ``thin_net_bps`` of net edge (an
    opportunity whose edge component keeps its confidence below the 0.7 push bar) until
    :data:`WIDEN_AT_S`, then ``wide_net_bps`` (confidence above it) to the end of the file.
    Deep single-price levels, so both notionals fill at the top of the book."""
    sc = Scenario(duration_s=duration_s)
    ask = 60_000.0
    size = 5.0  # BTC per level: 300k USD, both notionals fill at the top
    fee = SPOT_FEE["binance"]

    def okx_bid(net_bps: float) -> float:  # net_fraction(ask, bid, fee, fee) == net_bps
        return ask * (1.0 + fee) * (1.0 + net_bps / 10_000.0) / (1.0 - SPOT_FEE["okx"])

    def levels(top_bid: float, top_ask: float) -> tuple[Levels, Levels]:
        bids = [[top_bid * (1.0 - i / 10_000.0), size] for i in range(5)]
        asks = [[top_ask * (1.0 + i / 10_000.0), size] for i in range(5)]
        return bids, asks

    thin, wide = okx_bid(thin_net_bps), okx_bid(wide_net_bps)
    sc.books_every("binance", "BTC/USDT", 0.0, duration_s, _fixed(*levels(ask * 0.9999, ask)))
    sc.books_every("okx", "BTC/USDT", 0.0, WIDEN_AT_S, _fixed(*levels(thin, thin * 1.0002)))
    sc.books_every("okx", "BTC/USDT", WIDEN_AT_S, duration_s, _fixed(*levels(wide, wide * 1.0002)))
    return sc
