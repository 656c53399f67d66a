"""Bars and indicators of the technical signals (:mod:`pipeline.technical`), as Polars
expressions over all (exchange, symbol) series at once (``group_by_dynamic`` /
``.over(...)``); there is no Python loop per bar or symbol.

Bars (:func:`build_bars`)
    OHLC of the mid price ``(bid + ask) / 2`` per (exchange, symbol) and window of
    ``every`` (``"1m"``, ``"5m"``, …), left-closed and labelled by their start
    (``bar_ts``; ``bar_end = bar_ts + every``). A bar is *closed* at ``now`` when
    ``bar_end <= now``. Windows without quotes produce no bar: indicators run over
    consecutive bars as they are, not over wall-clock gaps.

    Volume proxy: ``volume`` is the **number of quote updates** in the bar
    (``updates``, by default). Quotes carry no traded volume; the rolling 24 h
    ``base_volume`` of tickers is kept as ``base_volume_change`` (last - first inside
    the bar; it can be negative when old trades leave the 24 h window, and is null
    without that column) and can be chosen as the proxy with ``volume="base_volume"``
    (then ``volume = max(base_volume_change, 0)``).

Indicators (:func:`add_indicators`), per (exchange, symbol, timeframe)
    * RSI(14), Wilder: ``avg_gain``/``avg_loss`` are ``ewm_mean(alpha=1/14,
      adjust=False)`` of the positive/negative close-to-close moves;
      ``rsi = 100 - 100 / (1 + avg_gain / avg_loss)``, 100 when there were no losses
      and gains, 50 when there were neither. Null for the first 14 bars.
    * MACD(12, 26, 9): ``macd = ema12 - ema26`` of the close (``ewm_mean(span=…,
      adjust=False)``), ``macd_signal = ema9(macd)``, ``macd_hist = macd - signal``;
      ``macd`` null for the first 25 bars, signal and histogram for the first 33.
      ``macd_hist_prev`` is the previous bar's histogram.
    * Bollinger(20, 2 sigma): ``bb_mid`` = 20-bar mean of the close, ``bb_std`` its
      population standard deviation, ``bb_upper/lower = bb_mid ± 2·bb_std``.
    * Volume z-score: ``(volume - mean) / std`` against the **previous** 20 bars (the
      bar itself is not part of its own baseline), population std; when that std is
      0 the z-score is 0 for an equal volume and ±:data:`Z_CAP` otherwise; always
      clipped to ±:data:`Z_CAP`.
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl

KEYS: tuple[str, ...] = ("exchange", "symbol")
Z_CAP = 10.0
"""Bound of the volume z-score (a spike over a perfectly flat baseline would be infinite)."""

VolumeProxy = Literal["updates", "base_volume"]
Frame = pl.LazyFrame | pl.DataFrame

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


# --------------------------------------------------------------------------- helpers


def duration_ms(every: str) -> int:
    """``"1m"`` → 60000; Polars duration strings made of ms/s/m/h/d/w parts (``"1h30m"``)."""
    parts = _DURATION.findall(every)
    if not parts or "".join(n + u for n, u in parts) != every:
        raise ValueError(f"unsupported bar length {every!r} (use e.g. '1m', '5m', '1h')")
    return sum(int(n) * _UNITS_MS[u] for n, u in parts)


def _collect(data: Frame) -> pl.DataFrame:
    return data.collect() if isinstance(data, pl.LazyFrame) else data


def _ms(col: str) -> pl.Expr:
    return pl.col(col).dt.epoch("ms")


def _utc_ms(ms: int) -> pl.Expr:
    return pl.lit(ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def _series_keys(frame: pl.DataFrame) -> list[str]:
    return [k for k in (*KEYS, "timeframe") if k in frame.columns]


def _with_series_id(frame: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    """Sorted by series then ``bar_ts``, with ``_sid``: one integer per series.

    Window expressions over one integer column are ~8x faster than over the string
    keys (measured: 5 ms against 40 ms per expression at 450k bars).
    """
    if not group:
        return frame.sort("bar_ts").with_columns(_sid=pl.lit(0, dtype=pl.UInt32))
    frame = frame.with_columns(_sid=pl.struct(group).rle_id())
    if frame.height:
        # Already one contiguous, time-ordered run per series (build_bars' output)? Skip the sort.
        sid, ts = pl.col("_sid"), pl.col("bar_ts")
        check = frame.select(
            runs=sid.max() + 1,
            series=pl.struct(group).n_unique(),
            ordered=((sid.diff() != 0) | (ts.diff() > pl.duration(milliseconds=0))).fill_null(True).all(),
        ).row(0)
        if check[0] == check[1] and check[2]:
            return frame
    return frame.sort(*group, "bar_ts").with_columns(_sid=pl.struct(group).rle_id())


def add_flag(flags: pl.Expr, condition: pl.Expr, flag: str) -> pl.Expr:
    """Append ``flag`` to a comma-separated ``flags`` column where ``condition`` holds."""
    return (
        pl.when(condition.fill_null(False))
        .then(pl.when(flags == "").then(pl.lit(flag)).otherwise(flags + pl.lit("," + flag)))
        .otherwise(flags)
    )


# --------------------------------------------------------------------------- bars


def build_bars(quotes: Frame, every: str = "1m", *, volume: VolumeProxy = "updates") -> pl.DataFrame:
    """OHLC bars of the mid price per (exchange, symbol), one row per non-empty window.

    ``quotes``: rows of the ``quotes`` dataset (``ts``, ``exchange``, ``symbol``, ``bid``,
    ``ask``; ``base_volume`` optional). Quotes without a positive bid and ask are
    ignored. Columns: ``exchange, symbol, timeframe, bar_ts, bar_end, open, high, low,
    close, updates, base_volume_change, volume``.
    """
    step = duration_ms(every)
    lazy = quotes.lazy()
    has_base = "base_volume" in lazy.collect_schema().names()
    base = pl.col("base_volume") if has_base else pl.lit(None, dtype=pl.Float64).alias("base_volume")
    bars = (
        lazy.select("ts", "exchange", "symbol", "bid", "ask", base)
        .filter((pl.col("bid") > 0) & (pl.col("ask") > 0))
        .with_columns(mid=(pl.col("bid") + pl.col("ask")) / 2.0)
        .sort("exchange", "symbol", "ts")
        .group_by_dynamic("ts", every=every, closed="left", label="left", group_by=list(KEYS))
        .agg(
            open=pl.col("mid").first(),
            high=pl.col("mid").max(),
            low=pl.col("mid").min(),
            close=pl.col("mid").last(),
            updates=pl.len().cast(pl.Int64),
            base_volume_change=pl.col("base_volume").drop_nulls().last()
            - pl.col("base_volume").drop_nulls().first(),
        )
        .rename({"ts": "bar_ts"})
        .with_columns(
            timeframe=pl.lit(every),
            bar_end=pl.col("bar_ts") + pl.duration(milliseconds=step),
            volume=pl.col("updates").cast(pl.Float64)
            if volume == "updates"
            else pl.col("base_volume_change").clip(lower_bound=0.0),
        )
        .select(
            "exchange",
            "symbol",
            "timeframe",
            "bar_ts",
            "bar_end",
            "open",
            "high",
            "low",
            "close",
            "updates",
            "base_volume_change",
            "volume",
        )
        .sort("exchange", "symbol", "bar_ts")
    )
    return bars.collect()


def build_bar_sets(quotes: Frame, everies: tuple[str, ...] = ("1m", "5m")) -> pl.DataFrame:
    """Bars of several timeframes stacked (the ``timeframe`` column tells them apart)."""
    lazy = quotes.lazy()
    return pl.concat([build_bars(lazy, every) for every in everies], how="vertical")


# --------------------------------------------------------------------------- indicators


def add_indicators(
    bars: Frame,
    *,
    rsi_period: int = 14,
    macd_fast: int = 12,
    macd_slow: int = 26,
    macd_signal: int = 9,
    bb_period: int = 20,
    bb_k: float = 2.0,
    volume_period: int = 20,
) -> pl.DataFrame:
    """The bars with ``rsi, macd, macd_signal, macd_hist, macd_hist_prev, bb_mid, bb_std,
    bb_upper, bb_lower, volume_mean, volume_z`` per (exchange, symbol[, timeframe]).

    Needs ``exchange, symbol, bar_ts, close, volume``; sorted by series then ``bar_ts``.
    """
    frame = _collect(bars)
    frame = _with_series_id(frame, _series_keys(frame))
    close, sid = pl.col("close"), "_sid"
    alpha = 1.0 / rsi_period
    # Staged: each window expression is computed once, into a scratch column.
    frame = frame.with_columns(
        _n=pl.int_range(pl.len()).over(sid),  # bar index inside its series
        _delta=close.diff().over(sid),
        _ema_fast=close.ewm_mean(span=macd_fast, adjust=False).over(sid),
        _ema_slow=close.ewm_mean(span=macd_slow, adjust=False).over(sid),
        _vol=pl.col("volume").cast(pl.Float64),
        bb_mid=close.rolling_mean(bb_period).over(sid),
        bb_std=close.rolling_std(bb_period, ddof=0).over(sid),
    )
    vol, prev_vol = pl.col("_vol"), pl.col("_vol").shift(1)
    frame = frame.with_columns(
        _gain=pl.col("_delta").clip(lower_bound=0.0).ewm_mean(alpha=alpha, adjust=False).over(sid),
        _loss=(-pl.col("_delta")).clip(lower_bound=0.0).ewm_mean(alpha=alpha, adjust=False).over(sid),
        _macd=pl.col("_ema_fast") - pl.col("_ema_slow"),
        volume_mean=prev_vol.rolling_mean(volume_period).over(sid),
        _vol_std=prev_vol.rolling_std(volume_period, ddof=0).over(sid),
    )
    frame = frame.with_columns(
        _signal=pl.col("_macd").ewm_mean(span=macd_signal, adjust=False).over(sid),
    )
    n, gain, loss = pl.col("_n"), pl.col("_gain"), pl.col("_loss")
    vol_std, vol_mean = pl.col("_vol_std"), pl.col("volume_mean")
    rsi = (
        pl.when(loss > 0).then(100.0 - 100.0 / (1.0 + gain / loss)).when(gain > 0).then(100.0).otherwise(50.0)
    )
    hist_ready = n >= macd_slow + macd_signal - 2
    frame = frame.with_columns(
        rsi=pl.when(n >= rsi_period).then(rsi),
        macd=pl.when(n >= macd_slow - 1).then(pl.col("_macd")),
        macd_signal=pl.when(hist_ready).then(pl.col("_signal")),
        macd_hist=pl.when(hist_ready).then(pl.col("_macd") - pl.col("_signal")),
        bb_upper=pl.col("bb_mid") + bb_k * pl.col("bb_std"),
        bb_lower=pl.col("bb_mid") - bb_k * pl.col("bb_std"),
        volume_z=pl.when(vol_std > 0)
        .then((vol - vol_mean) / vol_std)
        .when(vol_std == 0)
        .then((vol - vol_mean).sign() * Z_CAP)
        .clip(-Z_CAP, Z_CAP),
    )
    scratch = [
        "_n",
        "_delta",
        "_ema_fast",
        "_ema_slow",
        "_vol",
        "_gain",
        "_loss",
        "_macd",
        "_vol_std",
        "_signal",
    ]
    return frame.with_columns(macd_hist_prev=pl.col("macd_hist").shift(1).over(sid)).drop(*scratch, sid)


def _has_indicators(frame: pl.DataFrame) -> bool:
    return {"rsi", "macd_hist", "macd_hist_prev", "bb_upper", "volume_z"} <= set(frame.columns)
