"""Technical signals (``kind = technical``): bars, indicators, signals, hit rates, scores.

Everything is Polars expressions over all (exchange, symbol) series at once
(``group_by_dynamic`` / ``.over(...)``); there is no Python loop per bar or symbol.

Bars and indicators (:func:`build_bars`, :func:`add_indicators`): :mod:`pipeline.bars`.

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

from typing import Literal

import polars as pl

from core.models import OpportunityKind, Priority, RejectReason
from core.scoring import ScoringConfig
from pipeline.bars import (
    KEYS,
    Frame,
    _collect,
    _has_indicators,
    _ms,
    _series_keys,
    _utc_ms,
    _with_series_id,
    add_flag,
    add_indicators,
    duration_ms,
)

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
