"""Technical signals: bars, indicators against hand-computed values, signals, hit rates, scores."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.scoring import ScoreInputs, score
from pipeline.bars import Z_CAP, add_indicators, build_bar_sets, build_bars, duration_ms
from pipeline.technical import (
    NO_HISTORY,
    TECHNICAL_SCORING,
    UNCONFIRMED_VOLUME,
    attach_hit_rates,
    detect_signals,
    hit_rates,
    score_signals,
    technical_opportunities,
)

T0 = int(datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
TS = pl.Datetime("ms", "UTC")


def make_bars(
    closes: Sequence[float],
    *,
    volumes: Sequence[float] | None = None,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
    exchange: str = "binance",
    symbol: str = "BTC/USDT",
    every: str = "1m",
    start_ms: int = T0,
) -> pl.DataFrame:
    n = len(closes)
    step = duration_ms(every)
    return pl.DataFrame(
        {
            "exchange": [exchange] * n,
            "symbol": [symbol] * n,
            "timeframe": [every] * n,
            "bar_ts": [start_ms + i * step for i in range(n)],
            "bar_end": [start_ms + (i + 1) * step for i in range(n)],
            "open": list(closes),
            "high": list(highs if highs is not None else closes),
            "low": list(lows if lows is not None else closes),
            "close": list(closes),
            "volume": [float(v) for v in (volumes if volumes is not None else [10.0] * n)],
        }
    ).with_columns(pl.col("bar_ts", "bar_end").cast(TS))


def bar_end_ms(i: int, every_ms: int = MIN) -> int:
    return T0 + (i + 1) * every_ms


def baseline_volumes(n: int) -> list[float]:
    """Alternating 10/12: mean 11, population std 1 over any even window."""
    return [10.0 if i % 2 == 0 else 12.0 for i in range(n)]


# --------------------------------------------------------------------------- references


def ref_ewm(values: Sequence[float], alpha: float) -> list[float]:
    out = [values[0]]
    for x in values[1:]:
        out.append((1 - alpha) * out[-1] + alpha * x)
    return out


def ref_rsi(closes: Sequence[float], period: int = 14) -> list[float | None]:
    deltas = [b - a for a, b in pairwise(closes)]
    gain = ref_ewm([max(d, 0.0) for d in deltas], 1 / period)
    loss = ref_ewm([max(-d, 0.0) for d in deltas], 1 / period)
    out: list[float | None] = [None]
    for g, lo in zip(gain, loss, strict=True):
        out.append(100 - 100 / (1 + g / lo) if lo > 0 else (100.0 if g > 0 else 50.0))
    return [v if i >= period else None for i, v in enumerate(out)]


def ref_macd(closes: Sequence[float]) -> tuple[list[float], list[float]]:
    fast = ref_ewm(closes, 2 / 13)
    slow = ref_ewm(closes, 2 / 27)
    macd = [f - s for f, s in zip(fast, slow, strict=True)]
    signal = ref_ewm(macd, 2 / 10)
    return macd, [m - s for m, s in zip(macd, signal, strict=True)]


# --------------------------------------------------------------------------- bars


def synthetic_quotes() -> pl.DataFrame:
    """2 exchanges x 2 symbols, a quote every 10 s from 10:58:30 to 11:01:20 (across 11:00)."""
    start = int(datetime(2026, 1, 5, 10, 58, 30, tzinfo=UTC).timestamp() * 1000)
    rows = []
    for e_i, exchange in enumerate(("binance", "okx")):
        for s_i, symbol in enumerate(("BTC/USDT", "ETH/USDT")):
            base = 100.0 * (1 + s_i) + e_i
            for k in range(18):
                mid = base + k  # strictly rising mid: open/close/high/low known per minute
                rows.append(
                    {
                        "ts": start + k * 10_000,
                        "exchange": exchange,
                        "symbol": symbol,
                        "bid": mid - 0.5,
                        "ask": mid + 0.5,
                        "base_volume": 1000.0 + 3.0 * k,
                    }
                )
    rows.append(  # a one-sided quote is ignored
        {"ts": start, "exchange": "okx", "symbol": "BTC/USDT", "bid": None, "ask": 1.0, "base_volume": None}
    )
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS)).sample(fraction=1.0, shuffle=True, seed=3)


def test_bars_across_an_hour_boundary_for_all_series_at_once() -> None:
    bars = build_bars(synthetic_quotes().lazy(), "1m")
    assert bars.height == 4 * 4  # 10:58, 10:59, 11:00, 11:01 per series
    assert bars.schema["bar_ts"] == TS and bars.schema["bar_end"] == TS
    one = bars.filter((pl.col("exchange") == "okx") & (pl.col("symbol") == "ETH/USDT"))
    hours = one.select(h=pl.col("bar_ts").dt.hour(), m=pl.col("bar_ts").dt.minute()).rows()
    assert hours == [(10, 58), (10, 59), (11, 0), (11, 1)]
    # base 201: quotes k=0..2 in 10:58, 3..8 in 10:59, 9..14 in 11:00, 15..17 in 11:01
    assert one.get_column("open").to_list() == [201.0, 204.0, 210.0, 216.0]
    assert one.get_column("close").to_list() == [203.0, 209.0, 215.0, 218.0]
    assert one.get_column("high").to_list() == one.get_column("close").to_list()
    assert one.get_column("low").to_list() == one.get_column("open").to_list()
    assert one.get_column("updates").to_list() == [3, 6, 6, 3]
    assert one.get_column("volume").to_list() == [3.0, 6.0, 6.0, 3.0]
    assert one.get_column("base_volume_change").to_list() == [6.0, 15.0, 15.0, 6.0]
    ends = one.select((pl.col("bar_end") - pl.col("bar_ts")).dt.total_milliseconds()).to_series()
    assert ends.to_list() == [MIN] * 4
    # the one-sided okx BTC quote did not enter the bar
    okx_btc = bars.filter((pl.col("exchange") == "okx") & (pl.col("symbol") == "BTC/USDT"))
    assert okx_btc.get_column("updates").to_list() == [3, 6, 6, 3]
    assert okx_btc.get_column("low").min() == 101.0


def test_five_minute_bars_and_stacked_timeframes() -> None:
    quotes = synthetic_quotes()
    five = build_bars(quotes, "5m")
    assert five.height == 4 * 2  # 10:55 and 11:00 windows
    one = five.filter((pl.col("exchange") == "binance") & (pl.col("symbol") == "BTC/USDT"))
    assert one.get_column("updates").to_list() == [9, 9]
    assert one.get_column("open").to_list() == [100.0, 109.0]
    assert one.get_column("close").to_list() == [108.0, 117.0]
    both = build_bar_sets(quotes)
    assert both.group_by("timeframe").len().sort("timeframe").rows() == [("1m", 16), ("5m", 8)]


def test_base_volume_as_the_volume_proxy() -> None:
    bars = build_bars(synthetic_quotes(), "1m", volume="base_volume")
    assert bars.get_column("volume").to_list() == bars.get_column("base_volume_change").to_list()


def test_empty_quotes_give_no_bars() -> None:
    empty = synthetic_quotes().clear()
    assert build_bars(empty).height == 0


# --------------------------------------------------------------------------- indicators


def test_rsi_of_monotone_series() -> None:
    rise = add_indicators(make_bars([100.0 + i for i in range(30)]))
    rsi = rise.get_column("rsi").to_list()
    assert rsi[:14] == [None] * 14
    assert rsi[14:] == [100.0] * 16
    fall = add_indicators(make_bars([100.0 - i for i in range(30)]))
    assert fall.get_column("rsi").to_list()[14:] == [0.0] * 16
    flat = add_indicators(make_bars([100.0] * 30))
    assert flat.get_column("rsi").to_list()[14:] == [50.0] * 16


def test_rsi_of_alternating_equal_moves_is_fifty_on_average() -> None:
    closes = [100.0 + (i % 2) for i in range(400)]  # +1, -1, +1, ...
    rsi = add_indicators(make_bars(closes)).get_column("rsi").to_list()
    alpha = 1 / 14
    # Steady state of Wilder's smoothing: 100/(2-a) after an up move, 100(1-a)/(2-a) after a down move.
    assert rsi[-1] == pytest.approx(100 / (2 - alpha), abs=1e-9)  # last move: up (to 101)
    assert rsi[-2] == pytest.approx(100 * (1 - alpha) / (2 - alpha), abs=1e-9)
    assert (rsi[-1] + rsi[-2]) / 2 == pytest.approx(50.0, abs=1e-9)


def test_indicators_match_a_reference_loop() -> None:
    rng = np.random.default_rng(7)
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.003, 120))))
    ind = add_indicators(make_bars(closes))
    got = ind.get_column("rsi").to_list()
    for g, r in zip(got, ref_rsi(closes), strict=True):
        assert (g is None and r is None) or g == pytest.approx(r, abs=1e-9)
    macd, hist = ref_macd(closes)
    assert ind.get_column("macd").to_list()[:25] == [None] * 25
    assert ind.get_column("macd").to_list()[25:] == pytest.approx(macd[25:], abs=1e-9)
    assert ind.get_column("macd_hist").to_list()[:33] == [None] * 33
    assert ind.get_column("macd_hist").to_list()[33:] == pytest.approx(hist[33:], abs=1e-9)
    window = closes[-20:]
    mid, sd = float(np.mean(window)), float(np.std(window))
    last = ind.row(-1, named=True)
    assert last["bb_mid"] == pytest.approx(mid)
    assert last["bb_upper"] == pytest.approx(mid + 2 * sd)
    assert last["bb_lower"] == pytest.approx(mid - 2 * sd)


def test_volume_z_is_against_the_previous_twenty_bars() -> None:
    vols = [*baseline_volumes(30), 14.0]
    ind = add_indicators(make_bars([100.0] * 31, volumes=vols))
    assert ind.get_column("volume_z").to_list()[:20] == [None] * 20
    last = ind.row(-1, named=True)
    assert last["volume_mean"] == pytest.approx(11.0)
    assert last["volume_z"] == pytest.approx(3.0)  # (14 - 11) / 1
    flat = add_indicators(make_bars([100.0] * 25, volumes=[5.0] * 24 + [6.0]))
    assert flat.get_column("volume_z").to_list()[-2:] == [0.0, Z_CAP]


def test_series_are_computed_independently_and_in_any_input_order() -> None:
    rng = np.random.default_rng(1)
    frames = [
        make_bars(list(100 * np.exp(np.cumsum(rng.normal(0, 0.004, 80)))), exchange=e, symbol=s)
        for e in ("binance", "okx")
        for s in ("BTC/USDT", "ETH/USDT")
    ]
    together = add_indicators(pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=5))
    for frame in frames:
        alone = add_indicators(frame)
        key = frame.row(0, named=True)
        part = together.filter((pl.col("exchange") == key["exchange"]) & (pl.col("symbol") == key["symbol"]))
        for col in ("rsi", "macd_hist", "bb_upper", "volume_z"):
            assert part.get_column(col).to_list() == alone.get_column(col).to_list()


# --------------------------------------------------------------------------- signals


def macd_cross_bars(jump_volume: float = 30.0) -> pl.DataFrame:
    """Flat at 100 for 40 bars (histogram exactly 0), then a jump: the cross is bar 40."""
    closes = [100.0] * 40 + [101.0, 101.0]
    vols = [*baseline_volumes(40), jump_volume, 11.0]
    return make_bars(closes, volumes=vols)


def test_macd_cross_up_at_the_known_bar() -> None:
    ind = add_indicators(macd_cross_bars())
    crosses = ind.filter((pl.col("macd_hist_prev") <= 0) & (pl.col("macd_hist") > 0))
    assert crosses.get_column("bar_ts").to_list() == [ind.get_column("bar_ts")[40]]

    sig = detect_signals(macd_cross_bars(), bar_end_ms(40))
    row = sig.filter(pl.col("signal") == "macd_cross_up").row(0, named=True)
    assert row["kind"] == "technical" and row["direction"] == "long"
    assert row["buy_exchange"] == "binance" and row["sell_exchange"] is None
    assert row["volume_confirmed"] and row["flags"] == "" and row["pushable"]
    assert row["macd_hist_prev"] == 0.0 and row["macd_hist"] > 0
    assert row["strength"] == pytest.approx(min(row["macd_hist"] / row["bb_std"], 1.0))
    assert row["bar_ts"] == datetime.fromtimestamp((T0 + 40 * MIN) / 1000, tz=UTC)
    assert row["detected_at"] == datetime.fromtimestamp(bar_end_ms(40) / 1000, tz=UTC)
    # the bar that is still open at now does not count; one bar later there is no cross
    assert "macd_cross_up" not in detect_signals(macd_cross_bars(), bar_end_ms(40) - 1)["signal"].to_list()
    assert "macd_cross_up" not in detect_signals(macd_cross_bars(), bar_end_ms(41))["signal"].to_list()


def test_macd_cross_down_is_a_short() -> None:
    closes = [100.0] * 40 + [99.0]
    sig = detect_signals(make_bars(closes, volumes=[*baseline_volumes(40), 30.0]), bar_end_ms(40))
    row = sig.filter(pl.col("signal") == "macd_cross_down").row(0, named=True)
    assert row["direction"] == "short"
    assert row["sell_exchange"] == "binance" and row["buy_exchange"] is None


BREAKOUT = 112.0


def breakout_bars(spike: float) -> pl.DataFrame:
    """Alternating 100/101 for 30 bars, then a close of 112 (above the upper band, RSI > 70)."""
    closes = [100.0 + (i % 2) for i in range(30)] + [BREAKOUT]
    return make_bars(closes, volumes=[*baseline_volumes(30), spike])


def test_bollinger_breakout_with_volume_confirmation() -> None:
    sig = detect_signals(breakout_bars(spike=14.0), bar_end_ms(30))
    row = sig.filter(pl.col("signal") == "bb_break_upper").row(0, named=True)
    window = [100.0 + (i % 2) for i in range(11, 30)] + [BREAKOUT]
    mid, sd = float(np.mean(window)), float(np.std(window))
    assert row["bb_upper"] == pytest.approx(mid + 2 * sd)
    assert row["close"] == BREAKOUT > row["bb_upper"]
    assert row["direction"] == "long" and row["buy_exchange"] == "binance"
    assert row["strength"] == pytest.approx(min((BREAKOUT - row["bb_upper"]) / sd, 1.0))
    assert row["volume_z"] == pytest.approx(3.0)
    assert row["volume_confirmed"] and row["flags"] == "" and row["pushable"]


def test_bollinger_breakout_without_volume_is_kept_but_flagged() -> None:
    sig = detect_signals(breakout_bars(spike=11.0), bar_end_ms(30))
    row = sig.filter(pl.col("signal") == "bb_break_upper").row(0, named=True)
    assert row["volume_z"] == pytest.approx(0.0)
    assert not row["volume_confirmed"]
    assert row["flags"] == UNCONFIRMED_VOLUME and not row["pushable"]
    # every signal of that bar shares the flag
    assert set(sig.get_column("flags")) == {UNCONFIRMED_VOLUME}
    # the threshold is a parameter
    relaxed = detect_signals(breakout_bars(spike=11.0), bar_end_ms(30), volume_z_min=0.0)
    assert relaxed.filter(pl.col("signal") == "bb_break_upper")["flags"].to_list() == [""]


def test_bollinger_reversion_convention_and_rsi_overbought() -> None:
    sig = detect_signals(breakout_bars(spike=14.0), bar_end_ms(30), bollinger="reversion")
    row = sig.filter(pl.col("signal") == "bb_break_upper").row(0, named=True)
    assert row["direction"] == "short" and row["sell_exchange"] == "binance"
    over = sig.filter(pl.col("signal") == "rsi_overbought").row(0, named=True)
    assert over["direction"] == "short"
    assert over["strength"] == pytest.approx((over["rsi"] - 70) / 30)


def test_rsi_oversold_and_stale_bars() -> None:
    closes = [130.0 - i for i in range(30)]
    bars = make_bars(closes, volumes=[*baseline_volumes(29), 20.0])
    sig = detect_signals(bars, bar_end_ms(29))
    row = sig.filter(pl.col("signal") == "rsi_oversold").row(0, named=True)
    assert row["rsi"] == 0.0 and row["strength"] == 1.0 and row["direction"] == "long"
    # the same bar seen ten minutes later is stale
    late = detect_signals(bars, bar_end_ms(29) + 10 * MIN)
    assert set(late.get_column("flags")) == {"stale"}
    assert not late.get_column("pushable").any()


def test_only_the_requested_timeframe_is_used() -> None:
    bars = pl.concat([breakout_bars(14.0), breakout_bars(14.0).with_columns(timeframe=pl.lit("5m"))])
    sig = detect_signals(bars, bar_end_ms(30), timeframe="1m")
    assert set(sig.get_column("timeframe")) == {"1m"}
    assert sig.filter(pl.col("signal") == "bb_break_upper").height == 1


# --------------------------------------------------------------------------- hit rates


def hand_indicator_bars(exchange: str, outcomes: bool) -> pl.DataFrame:
    """20 flat bars at 100 with hand-set indicators: oversold at 2, 6, 10, 14, 17; overbought at 8.

    With ``outcomes``: bar 4 high 100.2 (+20 bps: the oversold of bar 2 hits), bar 12 high
    100.05 (+5 bps: bar 10 misses), bar 17 high 100.11 (+11 bps: bar 14 hits), bar 9 low
    99.8 (-20 bps: the overbought of bar 8 hits). Bar 6 sees nothing in 7..11 above 100 → miss.
    Bar 17 has no five later bars: not counted.
    """
    n = 20
    highs, lows = [100.0] * n, [100.0] * n
    if outcomes:
        highs[4], highs[12], highs[17], lows[9] = 100.2, 100.05, 100.11, 99.8
    rsi = [50.0] * n
    for i in (2, 6, 10, 14, 17):
        rsi[i] = 20.0
    rsi[8] = 80.0
    null = pl.lit(None, dtype=pl.Float64)
    return make_bars([100.0] * n, highs=highs, lows=lows, exchange=exchange).with_columns(
        rsi=pl.Series(rsi),
        macd_hist=null,
        macd_hist_prev=null,
        bb_upper=null,
        bb_lower=null,
        bb_std=null,
        volume_z=null,
    )


def test_hit_rates_on_known_outcomes() -> None:
    bars = pl.concat([hand_indicator_bars("binance", True), hand_indicator_bars("okx", False)])
    rates = hit_rates(bars, horizon_bars=5, threshold_bps=10)
    got = {
        (r["exchange"], r["signal"]): (r["n"], r["hits"], r["hit_rate"]) for r in rates.iter_rows(named=True)
    }
    assert got == {
        ("binance", "rsi_oversold"): (4, 2, 0.5),
        ("binance", "rsi_overbought"): (1, 1, 1.0),
        ("okx", "rsi_oversold"): (4, 0, 0.0),
        ("okx", "rsi_overbought"): (1, 0, 0.0),
    }
    assert set(rates.get_column("timeframe")) == {"1m"}
    # a higher bar: only the +20 bps moves count
    strict = hit_rates(bars.filter(pl.col("exchange") == "binance"), threshold_bps=15)
    assert strict.filter(pl.col("signal") == "rsi_oversold")["hits"].to_list() == [1]
    # bars not closed at now are left out: up to bar 9 only bars 2 (hit) is countable
    early = hit_rates(bars.filter(pl.col("exchange") == "binance"), now_ms=bar_end_ms(9))
    assert early.filter(pl.col("signal") == "rsi_oversold").select("n", "hits").row(0) == (1, 1)


def test_attach_hit_rates_flags_thin_history() -> None:
    rates = hit_rates(hand_indicator_bars("binance", True))
    signals = detect_signals(breakout_bars(14.0), bar_end_ms(30))
    signals = pl.concat(
        [signals, signals.head(1).with_columns(signal=pl.lit("rsi_oversold"), direction=pl.lit("long"))]
    )
    thin = attach_hit_rates(signals, rates, min_samples=5)
    row = thin.filter(pl.col("signal") == "rsi_oversold").row(0, named=True)
    assert row["hit_samples"] == 4 and row["hit_rate"] is None
    assert NO_HISTORY in row["flags"].split(",") and not row["pushable"]
    enough = attach_hit_rates(signals, rates, min_samples=4)
    row = enough.filter(pl.col("signal") == "rsi_oversold").row(0, named=True)
    assert row["hit_rate"] == 0.5 and row["flags"] == "" and row["pushable"]
    # no rates at all for the other signals
    other = enough.filter(pl.col("signal") == "bb_break_upper").row(0, named=True)
    assert other["hit_samples"] == 0 and other["flags"] == NO_HISTORY


# --------------------------------------------------------------------------- scoring


def test_score_matches_core_scoring_and_gates_pushable() -> None:
    signals = detect_signals(breakout_bars(14.0), bar_end_ms(30) + 20_000)
    n = signals.height
    signals = signals.with_columns(
        hit_rate=pl.Series([0.9, None, 0.6, 0.0, 1.0][:n], dtype=pl.Float64),
        volatility_bps=pl.Series([None, 40.0, 10.0, None, 150.0][:n], dtype=pl.Float64),
    )
    scored = score_signals(signals)
    for row in scored.iter_rows(named=True):
        want = score(
            ScoreInputs(
                net_bps=row["strength"],
                notional_usd=1.0,
                executable_usd=1.0,
                age_s=20.0,
                freshness_s=60.0,
                persistence=row["hit_rate"],
                volatility_bps=row["volatility_bps"],
            ),
            TECHNICAL_SCORING,
        )
        assert row["confidence"] == pytest.approx(want.confidence, abs=1e-12)
        assert row["priority"] == want.priority.value
        assert row["pushable"] == (want.meets_threshold and row["flags"] == "")
    flagged = score_signals(signals.with_columns(flags=pl.lit(UNCONFIRMED_VOLUME), hit_rate=pl.lit(1.0)))
    assert not flagged.get_column("pushable").any()


def test_a_strong_confirmed_signal_with_a_good_record_is_pushable() -> None:
    signals = detect_signals(breakout_bars(14.0), bar_end_ms(30)).filter(pl.col("signal") == "rsi_overbought")
    strong = score_signals(signals.with_columns(strength=pl.lit(1.0), hit_rate=pl.lit(0.9)))
    assert strong.row(0, named=True)["pushable"]
    weak = score_signals(signals.with_columns(strength=pl.lit(0.05), hit_rate=pl.lit(0.9)))
    assert not weak.row(0, named=True)["pushable"]


def test_whole_chain_from_bars() -> None:
    out = technical_opportunities(breakout_bars(14.0), bar_end_ms(30))
    assert {"confidence", "priority", "pushable", "hit_rate", "hit_samples"} <= set(out.columns)
    assert out.height > 0 and (out.get_column("kind") == "technical").all()
    # 31 bars of history: not enough past occurrences, so nothing is pushable
    assert not out.get_column("pushable").any()


# --------------------------------------------------------------------------- speed


def random_bars(symbols: int, exchanges: int, n_bars: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    series = symbols * exchanges
    closes = (100 * np.exp(np.cumsum(rng.normal(0, 0.002, (series, n_bars)), axis=1))).ravel()
    ex = np.repeat([f"ex{i}" for i in range(exchanges)], symbols * n_bars)
    sym = np.tile(np.repeat([f"S{i}/USDT" for i in range(symbols)], n_bars), exchanges)
    start = np.tile(T0 + np.arange(n_bars, dtype=np.int64) * MIN, series)
    return pl.DataFrame(
        {
            "exchange": ex,
            "symbol": sym,
            "timeframe": "1m",
            "bar_ts": start,
            "bar_end": start + MIN,
            "open": closes,
            "high": closes * 1.001,
            "low": closes * 0.999,
            "close": closes,
            "volume": rng.poisson(50, series * n_bars).astype(float),
        }
    ).with_columns(pl.col("bar_ts", "bar_end").cast(TS))


def test_speed_500_symbols_3_exchanges_300_bars() -> None:
    bars = random_bars(500, 3, 300)
    now = bar_end_ms(299)
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        signals = detect_signals(add_indicators(bars), now)
        best = min(best, time.perf_counter() - start)
    assert signals.height > 0
    assert signals.select(pl.struct("exchange", "symbol").n_unique()).item() > 100
    assert best < 1.0, f"indicators + signals took {best:.3f} s"


def test_empty_and_short_histories_give_no_signals() -> None:
    empty = make_bars([100.0] * 3).clear()
    assert detect_signals(empty, bar_end_ms(3)).height == 0
    assert hit_rates(empty).height == 0
    assert technical_opportunities(make_bars([100.0] * 3), bar_end_ms(3)).height == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e5, allow_nan=False), min_size=40, max_size=80))
def test_indicator_and_strength_ranges(closes: list[float]) -> None:
    vols = baseline_volumes(len(closes))
    ind = add_indicators(make_bars(closes, volumes=vols))
    rsi = ind.get_column("rsi").drop_nulls()
    assert ((rsi >= 0) & (rsi <= 100)).all()
    sig = detect_signals(ind, bar_end_ms(len(closes) - 1), volume_z_min=-Z_CAP)
    assert ((sig["strength"] >= 0) & (sig["strength"] <= 1)).all()
    assert (sig["buy_exchange"].is_null() == (sig["direction"] == "short")).all()
