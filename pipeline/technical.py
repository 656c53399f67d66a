"""Technical signals (``kind = technical``): bars, indicators, signals, hit rates, scores.

Everything is Polars expressions over all (exchange, symbol) series at once
(``group_by_dynamic`` / ``.over(...)``); there is no Python loop per bar or symbol.

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

Signals (:func:`detect_signals`), on the latest closed bar of each series
    ======================  =========  =============================================
    signal                  direction  fires when / strength in [0, 1]
    ======================  =========  =============================================
    ``rsi_oversold``        long       ``rsi < rsi_low``; ``(rsi_low - rsi) / rsi_low``
    ``rsi_overbought``      short      ``rsi > rsi_high``; ``(rsi - rsi_high) / (100 - rsi_high)``
    ``macd_cross_up``       long       ``hist_prev <= 0 < hist``; ``min(|hist| / bb_std, 1)``
    ``macd_cross_down``     short      ``hist_prev >= 0 > hist``; ``min(|hist| / bb_std, 1)``
    ``bb_break_upper``      long *     ``close > bb_upper``; ``min((close - bb_upper) / bb_std, 1)``
    ``bb_break_lower``      short *    ``close < bb_lower``; ``min((bb_lower - close) / bb_std, 1)``
    ======================  =========  =============================================

    \\* Bollinger convention: ``bollinger="breakout"`` (default, momentum: a close
    above the upper band is a long) or ``"reversion"`` (the opposite directions).
    MACD strength is the histogram in units of the 20-bar sigma of the close; Bollinger
    strength is how far beyond the band the close is, in sigma (1 = a full sigma beyond).

    Every signal needs volume confirmation ``volume_z >= volume_z_min``; an
    unconfirmed one is kept with the flag ``unconfirmed_volume``. A latest closed bar
    that ended more than ``max_age_bars`` bars before ``now`` is flagged ``stale``.
    ``buy_exchange`` is the exchange when long, ``sell_exchange`` when short
    (CONTRACT.md). ``gross_bps``, ``net_bps``, ``notional_usd`` are null (no spread).

Hit rates (:func:`hit_rates`)
    Every closed bar where a signal fires (same rules as above, volume confirmation
    not required) is an occurrence; it is a *hit* when, within the next
    ``horizon_bars`` bars, the mid reached ``close·(1 ± threshold_bps/10⁴)`` in the
    signal's direction (the high of those bars for a long, the low for a short).
    Occurrences without ``horizon_bars`` later bars are not counted. Consecutive bars
    of one condition are each an occurrence (so the samples are correlated).

Scores (:func:`score_signals`)
    ``core.scoring``'s formula, vectorised (cross-checked against
    :func:`core.scoring.score` in the tests) with :data:`TECHNICAL_SCORING`: the
    edge input is ``strength`` (``full_edge_bps = 1``), depth is not applicable
    (weight 0), freshness is the age of the bar end against one bar length, the
    persistence input is the historical ``hit_rate`` (unknown when ``no_history``),
    volatility when a ``volatility_bps`` column is there. ``pushable`` =
    ``confidence >= push_threshold`` and no flag: every flag of this module
    (``unconfirmed_volume``, ``no_history``, ``stale``) blocks a push.
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl

from core.models import OpportunityKind, Priority, RejectReason
from core.scoring import ScoringConfig

KEYS: tuple[str, ...] = ("exchange", "symbol")
Z_CAP = 10.0
"""Bound of the volume z-score (a spike over a perfectly flat baseline would be infinite)."""

UNCONFIRMED_VOLUME = "unconfirmed_volume"
NO_HISTORY = "no_history"
STALE = RejectReason.STALE.value  # "stale", as for quotes
TECHNICAL_FLAGS: frozenset[str] = frozenset({UNCONFIRMED_VOLUME, NO_HISTORY, STALE})
"""Flags of technical signals; every one of them blocks a push."""

SIGNALS: tuple[str, ...] = (
    "rsi_oversold",
    "rsi_overbought",
    "macd_cross_up",
    "macd_cross_down",
    "bb_break_upper",
    "bb_break_lower",
)

TECHNICAL_SCORING = ScoringConfig(
    min_net_bps=0.0,
    full_edge_bps=1.0,
    w_edge=0.40,
    w_depth=0.0,
    w_freshness=0.15,
    w_persistence=0.45,
    w_volatility=0.10,
)
"""Scoring of technical signals: ``net_bps`` carries the strength (0..1), no depth."""

Bollinger = Literal["breakout", "reversion"]
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


# --------------------------------------------------------------------------- signals


def signal_events(
    indicators: pl.DataFrame,
    *,
    rsi_low: float = 30.0,
    rsi_high: float = 70.0,
    bollinger: Bollinger = "breakout",
) -> pl.DataFrame:
    """One row per (bar, firing signal): the bar's columns plus ``signal, direction, strength``.

    The rules and strengths of the module docstring; a loop over the six signal kinds,
    each a filter over all bars.
    """
    if bollinger not in ("breakout", "reversion"):
        raise ValueError(f"bollinger must be 'breakout' or 'reversion', not {bollinger!r}")
    close, rsi, sigma = pl.col("close"), pl.col("rsi"), pl.col("bb_std")
    hist, prev = pl.col("macd_hist"), pl.col("macd_hist_prev")

    def in_sigma(x: pl.Expr) -> pl.Expr:
        return pl.when(sigma > 0).then(x / sigma).otherwise(pl.when(x > 0).then(1.0).otherwise(0.0))

    upper_dir, lower_dir = ("long", "short") if bollinger == "breakout" else ("short", "long")
    rules: list[tuple[str, pl.Expr, str, pl.Expr]] = [
        ("rsi_oversold", rsi < rsi_low, "long", ((rsi_low - rsi) / rsi_low)),
        ("rsi_overbought", rsi > rsi_high, "short", ((rsi - rsi_high) / (100.0 - rsi_high))),
        ("macd_cross_up", (prev <= 0) & (hist > 0), "long", in_sigma(hist.abs())),
        ("macd_cross_down", (prev >= 0) & (hist < 0), "short", in_sigma(hist.abs())),
        ("bb_break_upper", close > pl.col("bb_upper"), upper_dir, in_sigma(close - pl.col("bb_upper"))),
        ("bb_break_lower", close < pl.col("bb_lower"), lower_dir, in_sigma(pl.col("bb_lower") - close)),
    ]
    parts = [
        indicators.filter(cond.fill_null(False)).with_columns(
            signal=pl.lit(name),
            direction=pl.lit(direction),
            strength=strength.clip(0.0, 1.0).cast(pl.Float64),
        )
        for name, cond, direction, strength in rules
    ]
    return pl.concat(parts, how="vertical")


_SIGNAL_COLUMNS = (
    "kind",
    "signal",
    "symbol",
    "exchange",
    "direction",
    "buy_exchange",
    "sell_exchange",
    "strength",
    "gross_bps",
    "net_bps",
    "notional_usd",
    "close",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "macd_hist_prev",
    "bb_mid",
    "bb_upper",
    "bb_lower",
    "bb_std",
    "volume",
    "volume_z",
    "volume_confirmed",
    "timeframe",
    "bar_ts",
    "bar_end",
    "detected_at",
    "flags",
    "pushable",
)


def detect_signals(
    bars: Frame,
    now_ms: int,
    *,
    timeframe: str = "1m",
    rsi_low: float = 30.0,
    rsi_high: float = 70.0,
    volume_z_min: float = 1.0,
    bollinger: Bollinger = "breakout",
    max_age_bars: float | None = 2.0,
) -> pl.DataFrame:
    """Signals on the latest closed bar (``bar_end <= now_ms``) of each (exchange, symbol).

    ``bars``: from :func:`build_bars` (indicators are computed when absent) of any
    timeframes; only ``timeframe`` is used. Columns: :data:`_SIGNAL_COLUMNS`;
    ``pushable`` here only means "no flag" (``score_signals`` adds the confidence).
    """
    step = duration_ms(timeframe)
    frame = _collect(bars)
    if "timeframe" in frame.columns:
        frame = frame.filter(pl.col("timeframe") == timeframe)
    else:
        frame = frame.with_columns(timeframe=pl.lit(timeframe))
    if "bar_end" not in frame.columns:
        frame = frame.with_columns(bar_end=pl.col("bar_ts") + pl.duration(milliseconds=step))
    frame = frame.filter(_ms("bar_end") <= now_ms)
    if not _has_indicators(frame):
        frame = add_indicators(frame)
    latest = frame.filter(pl.col("bar_ts") == pl.col("bar_ts").max().over(list(KEYS)))
    events = signal_events(latest, rsi_low=rsi_low, rsi_high=rsi_high, bollinger=bollinger)
    confirmed = (pl.col("volume_z") >= volume_z_min).fill_null(False)
    flags = add_flag(pl.lit(""), ~confirmed, UNCONFIRMED_VOLUME)
    if max_age_bars is not None:
        flags = add_flag(flags, (now_ms - _ms("bar_end")) > max_age_bars * step, STALE)
    null_f64 = pl.lit(None, dtype=pl.Float64)
    out = events.with_columns(
        kind=pl.lit(OpportunityKind.TECHNICAL.value),
        buy_exchange=pl.when(pl.col("direction") == "long").then(pl.col("exchange")),
        sell_exchange=pl.when(pl.col("direction") == "short").then(pl.col("exchange")),
        gross_bps=null_f64,
        net_bps=null_f64,
        notional_usd=null_f64,
        volume_confirmed=confirmed,
        detected_at=_utc_ms(now_ms),
        flags=flags,
    ).with_columns(pushable=pl.col("flags") == "")
    return out.select(_SIGNAL_COLUMNS).sort("exchange", "symbol", "signal")


# --------------------------------------------------------------------------- hit rates


def hit_rates(
    bars: Frame,
    *,
    horizon_bars: int = 5,
    threshold_bps: float = 10.0,
    now_ms: int | None = None,
    rsi_low: float = 30.0,
    rsi_high: float = 70.0,
    bollinger: Bollinger = "breakout",
) -> pl.DataFrame:
    """``exchange, symbol, timeframe, signal, n, hits, hit_rate`` over the bars' history.

    See the module docstring for what an occurrence and a hit are. With ``now_ms``,
    bars not closed at that time are left out first.
    """
    if horizon_bars < 1:
        raise ValueError("horizon_bars must be >= 1")
    frame = _collect(bars)
    if "timeframe" not in frame.columns:
        frame = frame.with_columns(timeframe=pl.lit(None, dtype=pl.String))
    if now_ms is not None:
        if "bar_end" in frame.columns:
            end = _ms("bar_end")
        else:
            steps = {tf: duration_ms(tf) for tf in frame.get_column("timeframe").drop_nulls().unique()}
            end = _ms("bar_ts") + pl.col("timeframe").replace_strict(steps, return_dtype=pl.Int64)
        frame = frame.filter(end <= now_ms)
    if not _has_indicators(frame):
        frame = add_indicators(frame)
    frame = _with_series_id(frame, _series_keys(frame))
    frame = (
        frame.with_columns(
            fwd_high=pl.col("high").rolling_max(horizon_bars).shift(-horizon_bars).over("_sid"),
            fwd_low=pl.col("low").rolling_min(horizon_bars).shift(-horizon_bars).over("_sid"),
        )
        .filter(pl.col("fwd_high").is_not_null())
        .drop("_sid")
    )
    events = signal_events(frame, rsi_low=rsi_low, rsi_high=rsi_high, bollinger=bollinger)
    move = threshold_bps / 10_000.0
    hit = (
        pl.when(pl.col("direction") == "long")
        .then(pl.col("fwd_high") >= pl.col("close") * (1.0 + move))
        .otherwise(pl.col("fwd_low") <= pl.col("close") * (1.0 - move))
    )
    return (
        events.group_by("exchange", "symbol", "timeframe", "signal")
        .agg(n=pl.len().cast(pl.Int64), hits=hit.sum().cast(pl.Int64))
        .with_columns(hit_rate=pl.col("hits") / pl.col("n"))
        .sort("exchange", "symbol", "timeframe", "signal")
    )


def attach_hit_rates(signals: pl.DataFrame, rates: pl.DataFrame, *, min_samples: int = 5) -> pl.DataFrame:
    """Signals with ``hit_rate`` and ``hit_samples``; ``no_history`` below ``min_samples``.

    ``hit_rate`` is null (and the signal flagged, hence not pushable) when the same
    signal on the same (exchange, symbol, timeframe) has fewer than ``min_samples``
    past occurrences with a known outcome.
    """
    keys = ["exchange", "symbol", "timeframe", "signal"]
    right = rates.select(*keys, hit_samples="n", _rate="hit_rate").cast(
        {"timeframe": pl.String, "hit_samples": pl.Int64, "_rate": pl.Float64}
    )
    base = signals.drop([c for c in ("hit_rate", "hit_samples") if c in signals.columns])
    enough = pl.col("hit_samples") >= min_samples
    return (
        base.join(right, on=keys, how="left", nulls_equal=True)
        .with_columns(pl.col("hit_samples").fill_null(0))
        .with_columns(
            hit_rate=pl.when(enough).then(pl.col("_rate")),
            flags=add_flag(pl.col("flags"), ~enough, NO_HISTORY),
        )
        .with_columns(pushable=pl.col("pushable") & (pl.col("flags") == ""))
        .drop("_rate")
    )


# --------------------------------------------------------------------------- scoring


def confidence_expr(
    edge_input: pl.Expr,
    age_s: pl.Expr,
    freshness_s: pl.Expr,
    persistence: pl.Expr,
    volatility_bps: pl.Expr,
    config: ScoringConfig = TECHNICAL_SCORING,
) -> pl.Expr:
    """:func:`core.scoring.score` as an expression, with depth complete (component 1)
    and persistence / volatility unknown where null (they then carry no weight)."""
    span = config.full_edge_bps - config.min_net_bps
    edge = ((edge_input - config.min_net_bps) / span).clip(0.0, 1.0)
    fresh = pl.when(freshness_s > 0).then(1.0 - 0.5 * (age_s / freshness_s).clip(0.0, 1.0)).otherwise(0.5)
    pers = persistence.clip(0.0, 1.0)
    vol = (1.0 - volatility_bps / config.max_volatility_bps).clip(0.0, 1.0)
    w_pers = pl.when(persistence.is_not_null()).then(config.w_persistence).otherwise(0.0)
    w_vol = pl.when(volatility_bps.is_not_null()).then(config.w_volatility).otherwise(0.0)
    total = config.w_edge + config.w_depth + config.w_freshness + w_pers + w_vol
    conf = (
        edge.pow(config.w_edge / total)
        * fresh.pow(config.w_freshness / total)
        * pl.when(persistence.is_not_null()).then(pers.pow(w_pers / total)).otherwise(1.0)
        * pl.when(volatility_bps.is_not_null()).then(vol.pow(w_vol / total)).otherwise(1.0)
    )
    return conf.clip(0.0, 1.0)


def score_signals(signals: pl.DataFrame, *, config: ScoringConfig = TECHNICAL_SCORING) -> pl.DataFrame:
    """Signals with ``confidence``, ``priority`` and ``pushable`` (confidence ≥ push
    threshold and no flag). Uses ``hit_rate`` when present (see :func:`attach_hit_rates`)
    and ``volatility_bps`` when present."""
    null_f64 = pl.lit(None, dtype=pl.Float64)
    persistence = pl.col("hit_rate") if "hit_rate" in signals.columns else null_f64
    volatility = pl.col("volatility_bps") if "volatility_bps" in signals.columns else null_f64
    age_s = ((_ms("detected_at") - _ms("bar_end")) / 1000.0).clip(lower_bound=0.0)
    bar_s = (_ms("bar_end") - _ms("bar_ts")) / 1000.0
    confidence = confidence_expr(pl.col("strength"), age_s, bar_s, persistence, volatility, config)
    return signals.with_columns(confidence=confidence.cast(pl.Float64)).with_columns(
        priority=pl.when(pl.col("confidence") >= config.high_threshold)
        .then(pl.lit(Priority.HIGH.value))
        .when(pl.col("confidence") >= config.push_threshold)
        .then(pl.lit(Priority.MEDIUM.value))
        .otherwise(pl.lit(Priority.LOW.value)),
        pushable=(pl.col("confidence") >= config.push_threshold) & (pl.col("flags") == ""),
    )


def technical_opportunities(
    bars: Frame,
    now_ms: int,
    *,
    timeframe: str = "1m",
    horizon_bars: int = 5,
    threshold_bps: float = 10.0,
    min_samples: int = 5,
    volume_z_min: float = 1.0,
    config: ScoringConfig = TECHNICAL_SCORING,
) -> pl.DataFrame:
    """The whole chain on one timeframe: indicators once → signals → hit rates → scores."""
    frame = _collect(bars)
    if "timeframe" in frame.columns:
        frame = frame.filter(pl.col("timeframe") == timeframe)
    ind = add_indicators(frame.filter(_ms("bar_end") <= now_ms))
    signals = detect_signals(ind, now_ms, timeframe=timeframe, volume_z_min=volume_z_min)
    rates = hit_rates(ind, horizon_bars=horizon_bars, threshold_bps=threshold_bps)
    return score_signals(attach_hit_rates(signals, rates, min_samples=min_samples), config=config)
