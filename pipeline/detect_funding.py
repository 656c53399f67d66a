"""Vectorised funding-rate arbitrage over every perpetual and exchange pair in one tick:
the float64 twin of ``core.funding.evaluate_funding`` (same formulas, guards and flags, in
the same order; cross-checked in the tests). Shared helpers live in :mod:`pipeline.detect`."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from core.funding import DEFAULT_BASIS_CAP, DEFAULT_FUNDING_FRESHNESS_S, DEFAULT_HORIZON_HOURS
from core.models import OpportunityKind, RejectReason
from core.scoring import FUNDING_SCORING, ScoringConfig
from pipeline.detect import (
    HOURS_PER_YEAR,
    FeesInput,
    _flags,
    _ms,
    _ts_from_ms,
    confidence_expr,
    fee_table,
    latest_per_key,
    priority_expr,
)
from pipeline.detect_arrays import as_frame


def detect_funding(
    funding: pa.Table | pa.RecordBatch | pl.DataFrame,
    fees: FeesInput,
    notional: float = 10_000.0,
    *,
    now_ms: int,
    horizon_hours: float = float(DEFAULT_HORIZON_HOURS),
    use_predicted: bool = False,
    exit_basis: float = 0.0,
    credit_favourable_basis: bool = False,
    freshness_s: float = float(DEFAULT_FUNDING_FRESHNESS_S),
    basis_cap: float = float(DEFAULT_BASIS_CAP),
    min_net_apr: float = 0.0,
    min_spread_per_hour: float | None = 0.0,
    scoring: ScoringConfig = FUNDING_SCORING,
) -> pl.DataFrame:
    """Every funding carry of one tick: one row per (symbol, unordered exchange pair).

    ``funding``: FUNDING_RATES rows (latest per key used). ``buy_exchange`` is the long
    leg, ``sell_exchange`` the short. Kept when ``spread_per_hour > min_spread_per_hour``
    (``None``: every evaluable pair). Same formulas and flags as
    ``core.funding.evaluate_funding``; snapshots that are stale, have a non-positive
    interval, or legs further apart than ``freshness_s`` are left out.
    """
    fresh_ms = freshness_s * 1000.0
    frame = as_frame(funding)
    state = (
        latest_per_key(frame)
        .with_columns(ts_ms=_ms("ts"))
        .filter((pl.col("interval_hours") > 0) & ((now_ms - pl.col("ts_ms")) <= fresh_ms))
    )
    fee_df = fee_table(fees, state.get_column("exchange").unique().to_list()).filter(
        pl.col("market_type") == "swap"
    )
    state = state.join(fee_df.drop("market_type"), on="exchange", how="left").select(
        "symbol",
        "exchange",
        "ts_ms",
        "funding_rate",
        "next_funding_rate",
        "interval_hours",
        "mark_price",
        _ms("next_funding_ts").alias("next_ms"),
        "taker_fee",
        "fee_is_default",
    )
    left = state.rename({c: f"{c}_a" for c in state.columns if c != "symbol"})
    right = state.rename({c: f"{c}_b" for c in state.columns if c != "symbol"})
    pairs = left.join(right, on="symbol").filter(
        (pl.col("exchange_a") < pl.col("exchange_b"))
        & ((pl.col("ts_ms_a") - pl.col("ts_ms_b")).abs() <= fresh_ms)
    )
    predicted_ok = pl.col("next_funding_rate_a").is_not_null() & pl.col("next_funding_rate_b").is_not_null()
    use_pred = predicted_ok if use_predicted else pl.lit(False)
    pairs = pairs.with_columns(
        use_pred=use_pred,
        ph_a=pl.when(use_pred).then(pl.col("next_funding_rate_a")).otherwise(pl.col("funding_rate_a"))
        / pl.col("interval_hours_a"),
        ph_b=pl.when(use_pred).then(pl.col("next_funding_rate_b")).otherwise(pl.col("funding_rate_b"))
        / pl.col("interval_hours_b"),
    ).with_columns(a_long=pl.col("ph_a") <= pl.col("ph_b"))

    def pick(name: str, long: bool) -> pl.Expr:
        first, second = (f"{name}_a", f"{name}_b") if long else (f"{name}_b", f"{name}_a")
        return pl.when(pl.col("a_long")).then(pl.col(first)).otherwise(pl.col(second))

    legs = pairs.select(
        "symbol",
        "use_pred",
        buy_exchange=pick("exchange", True),
        sell_exchange=pick("exchange", False),
        long_rate_per_hour=pick("ph", True),
        short_rate_per_hour=pick("ph", False),
        long_interval_hours=pick("interval_hours", True),
        short_interval_hours=pick("interval_hours", False),
        long_mark=pick("mark_price", True),
        short_mark=pick("mark_price", False),
        long_fee=pick("taker_fee", True),
        short_fee=pick("taker_fee", False),
        fee_default=pl.col("fee_is_default_a") | pl.col("fee_is_default_b"),
        long_next_ms=pick("next_ms", True),
        short_next_ms=pick("next_ms", False),
        older_ts_ms=pl.min_horizontal("ts_ms_a", "ts_ms_b"),
    )
    spread_ph = pl.col("short_rate_per_hour") - pl.col("long_rate_per_hour")
    has_basis = (
        pl.col("long_mark").is_not_null()
        & pl.col("short_mark").is_not_null()
        & (pl.col("long_mark") > 0)
        & (pl.col("short_mark") > 0)
    )
    entry_basis = pl.when(has_basis).then((pl.col("short_mark") - pl.col("long_mark")) / pl.col("long_mark"))
    raw_basis_cost = exit_basis - pl.col("entry_basis")
    basis_cost = raw_basis_cost if credit_favourable_basis else raw_basis_cost.clip(lower_bound=0.0)
    legs = (
        legs.with_columns(spread_per_hour=spread_ph, entry_basis=entry_basis)
        .with_columns(
            fees=2.0 * pl.col("long_fee") + 2.0 * pl.col("short_fee"),
            basis_cost=basis_cost.fill_null(0.0),
        )
        .with_columns(roundtrip_cost=pl.col("fees") + pl.col("basis_cost"))
        .with_columns(
            gross=pl.col("spread_per_hour") * horizon_hours,
            net=pl.col("spread_per_hour") * horizon_hours - pl.col("roundtrip_cost"),
        )
        .with_columns(net_apr=pl.col("net") * HOURS_PER_YEAR / horizon_hours)
    )
    if min_spread_per_hour is not None:
        legs = legs.filter(pl.col("spread_per_hour") > min_spread_per_hour)

    blocking = [
        (pl.col("entry_basis").abs() > basis_cap, RejectReason.IMPLAUSIBLE_SPREAD),
        ((pl.col("net") <= 0.0) | (pl.col("net_apr") < min_net_apr), RejectReason.BELOW_THRESHOLD),
    ]
    info = [
        (pl.col("use_pred"), RejectReason.PREDICTED_RATE),
        (pl.lit(use_predicted) & ~pl.col("use_pred"), RejectReason.PREDICTED_UNAVAILABLE),
        (pl.col("entry_basis").is_null(), RejectReason.BASIS_UNKNOWN),
        (pl.col("fee_default"), RejectReason.DEFAULT_FEE),
    ]
    # flags follow core.funding's order: rate source, basis, threshold, fee
    ordered = [info[0], info[1], info[2], blocking[0], blocking[1], info[3]]
    age_s = ((now_ms - pl.col("older_ts_ms")) / 1000.0).clip(lower_bound=0.0)
    confidence = confidence_expr(
        pl.col("net") * 10_000.0, pl.lit(1.0), pl.lit(1.0), age_s, freshness_s, scoring
    )

    return (
        legs.select(
            kind=pl.lit(OpportunityKind.FUNDING_RATE.value),
            symbol="symbol",
            buy_exchange="buy_exchange",
            sell_exchange="sell_exchange",
            notional_usd=pl.lit(float(notional)),
            rate_source=pl.when(pl.col("use_pred")).then(pl.lit("predicted")).otherwise(pl.lit("settled")),
            long_rate_per_hour="long_rate_per_hour",
            short_rate_per_hour="short_rate_per_hour",
            long_interval_hours="long_interval_hours",
            short_interval_hours="short_interval_hours",
            spread_per_hour="spread_per_hour",
            spread_per_day=pl.col("spread_per_hour") * 24.0,
            gross_apr=pl.col("spread_per_hour") * HOURS_PER_YEAR,
            fees="fees",
            entry_basis="entry_basis",
            basis_cost="basis_cost",
            roundtrip_cost="roundtrip_cost",
            gross_bps=pl.col("gross") * 10_000.0,
            net_bps=pl.col("net") * 10_000.0,
            net_apr="net_apr",
            horizon_hours=pl.lit(float(horizon_hours)),  # net_bps/gross_bps are a return over it
            breakeven_hours=pl.when(pl.col("spread_per_hour") > 0).then(
                pl.col("roundtrip_cost").clip(lower_bound=0.0) / pl.col("spread_per_hour")
            ),
            long_next_funding=_ts_from_ms("long_next_ms"),
            short_next_funding=_ts_from_ms("short_next_ms"),
            flags=_flags(ordered),
            pushable=~pl.any_horizontal([cond.fill_null(False) for cond, _ in blocking]),
            confidence=confidence,
        )
        .with_columns(priority=priority_expr(pl.col("confidence"), scoring))
        .sort("symbol", "buy_exchange", "sell_exchange")
    )


__all__ = ["detect_funding"]
