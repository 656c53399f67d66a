"""Level-2 validation from the lake: persistence of similar spreads, indicator context,
and realised volatility (level 1 "volatility within bounds"). All Polars, all symbols
and pairs at once.

Persistence (:func:`spread_persistence`)
    One *opportunity* per ``opportunity_id`` of the ``opportunities`` dataset. Its
    size is the ``net_bps`` of its first event (the size it had when detected: what a
    new candidate is compared with); its lifetime is the ``lifetime_s`` of its
    ``closed`` event when that column is there and not null, else last - first
    ``detected_at`` of its events. An opportunity that has not closed yet counts as
    persistent once it has lived ``min_lifetime_s``; before that its outcome is unknown
    and it is left out. Sizes are bucketed by the edges ``bucket_bps`` (bucket ``i``
    is ``[edge[i-1], edge[i])``, bucket 0 below the first edge, the last one at or
    above the last edge). Per (kind, buy_exchange, sell_exchange, bucket):
    ``n``, ``n_persistent`` and ``persistence = (n_persistent + 1) / (n + 2)``
    (Laplace: 0.5 with no history).

Indicator context (:func:`indicator_context`, :func:`attach_indicator_context`)
    RSI, MACD histogram and volume z-score of each (exchange, symbol)'s latest (closed)
    bar, from :mod:`pipeline.technical`; attached to a spread candidate once per leg
    (``buy_rsi``, ``sell_rsi``, …).

Volatility (:func:`volatility`)
    Realised volatility of the mid's log returns over the last ``window`` before
    ``now`` (default: the newest quote), quote to quote:
    ``volatility_bps = 10⁴ · sqrt(Σ r²)`` (not annualised; the typical size of the
    move over the window), with ``n_returns``; null with fewer than two quotes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

import polars as pl

from pipeline.bars import add_indicators, build_bars, duration_ms

if TYPE_CHECKING:
    from pipeline.lake import Lake

Frame = pl.LazyFrame | pl.DataFrame

DEFAULT_BUCKETS_BPS: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, 100.0)
"""Edges of the net-bps size buckets: <5, [5,10), [10,20), [20,50), [50,100), ≥100."""
PRIOR = 0.5
"""Persistence of a pair and size with no history (the Laplace estimate at n = 0)."""

PAIR_KEYS: tuple[str, ...] = ("kind", "buy_exchange", "sell_exchange")
_PERSISTENCE_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(),
    "buy_exchange": pl.String(),
    "sell_exchange": pl.String(),
    "bucket": pl.Int32(),
    "bucket_lo": pl.Float64(),
    "bucket_hi": pl.Float64(),
    "n": pl.Int64(),
    "n_persistent": pl.Int64(),
    "persistence": pl.Float64(),
}


def _collect(data: Frame) -> pl.DataFrame:
    return data.collect() if isinstance(data, pl.LazyFrame) else data


def _check_edges(edges: Sequence[float]) -> list[float]:
    out = [float(e) for e in edges]
    if any(b <= a for a, b in pairwise(out)):
        raise ValueError("bucket_bps edges must be strictly increasing")
    return out


def bucket_expr(net_bps: pl.Expr, edges: Sequence[float] = DEFAULT_BUCKETS_BPS) -> pl.Expr:
    """Index of the size bucket of ``net_bps`` (0 .. len(edges)); null for null."""
    out = _check_edges(edges)
    index = pl.sum_horizontal([(net_bps >= e).cast(pl.Int32) for e in out]) if out else pl.lit(0)
    return pl.when(net_bps.is_not_null()).then(index.cast(pl.Int32))


def _bucket_bounds(bucket: pl.Expr, edges: Sequence[float]) -> tuple[pl.Expr, pl.Expr]:
    lows = [float("-inf"), *edges]
    highs = [*edges, float("inf")]
    lo = pl.lit(None, dtype=pl.Float64)
    hi = pl.lit(None, dtype=pl.Float64)
    for i in range(len(lows)):
        lo = pl.when(bucket == i).then(lows[i]).otherwise(lo)
        hi = pl.when(bucket == i).then(highs[i]).otherwise(hi)
    return lo, hi


# --------------------------------------------------------------------------- persistence


def spread_persistence(
    opportunities: Frame,
    *,
    min_lifetime_s: float = 5.0,
    bucket_bps: Sequence[float] = DEFAULT_BUCKETS_BPS,
) -> pl.DataFrame:
    """How often an opportunity of each size on each pair lived ``min_lifetime_s``.

    ``opportunities``: rows of the ``opportunities`` dataset (lazy or not). Columns:
    ``kind, buy_exchange, sell_exchange, bucket, bucket_lo, bucket_hi, n, n_persistent,
    persistence``. Opportunities with a null ``net_bps`` (technical signals) are skipped.
    """
    edges = _check_edges(bucket_bps)
    lazy = opportunities.lazy()
    names = lazy.collect_schema().names()
    lifetime = pl.col("lifetime_s") if "lifetime_s" in names else pl.lit(None, dtype=pl.Float64)
    closed = pl.col("event") == "closed"
    per_opp = (
        lazy.select(
            "opportunity_id",
            "event",
            *PAIR_KEYS,
            "net_bps",
            ts_ms=pl.col("detected_at").dt.epoch("ms"),
            lifetime_s=lifetime.cast(pl.Float64),
        )
        .sort("opportunity_id", "ts_ms")
        .group_by("opportunity_id")
        .agg(
            *(pl.col(k).first() for k in PAIR_KEYS),
            net_bps=pl.col("net_bps").drop_nulls().first(),
            is_closed=closed.any(),
            closed_lifetime=pl.col("lifetime_s").filter(closed).drop_nulls().last(),
            span_s=(pl.col("ts_ms").max() - pl.col("ts_ms").min()) / 1000.0,
        )
        .with_columns(life_s=pl.coalesce("closed_lifetime", "span_s"))
        .with_columns(persistent=pl.col("life_s") >= min_lifetime_s)
        # An open opportunity younger than the bound has no outcome yet.
        .filter(pl.col("is_closed") | pl.col("persistent"))
        .filter(pl.col("net_bps").is_not_null())
        .with_columns(bucket=bucket_expr(pl.col("net_bps"), edges))
    )
    lo, hi = _bucket_bounds(pl.col("bucket"), edges)
    out = (
        per_opp.group_by(*PAIR_KEYS, "bucket")
        .agg(n=pl.len().cast(pl.Int64), n_persistent=pl.col("persistent").sum().cast(pl.Int64))
        .with_columns(
            bucket_lo=lo,
            bucket_hi=hi,
            persistence=(pl.col("n_persistent") + 1) / (pl.col("n") + 2),
        )
        .select(list(_PERSISTENCE_SCHEMA))
        .sort(*PAIR_KEYS, "bucket")
    )
    return out.collect().cast(_PERSISTENCE_SCHEMA)  # type: ignore[arg-type]


def empty_persistence() -> pl.DataFrame:
    return pl.DataFrame(schema=_PERSISTENCE_SCHEMA)


def window_files(lake: Lake, dataset: str, end: datetime, hours: int) -> list[str]:
    """The committed files of the ``hours`` hour partitions up to ``end`` (inclusive), as URIs.

    One listing per hour partition: neither the listing nor the read grows with the lake.
    """
    last = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    files: list[str] = []
    for back in range(hours):
        files += lake.list_files(dataset, hour=last - timedelta(hours=back))
    return [lake.uri(f) for f in sorted(files)]


def persistence_from_lake(
    lake: Lake,
    *,
    min_lifetime_s: float = 5.0,
    bucket_bps: Sequence[float] = DEFAULT_BUCKETS_BPS,
    window_hours: int = 24,
    end: datetime | None = None,
) -> pl.DataFrame:
    """:func:`spread_persistence` over the last ``window_hours`` hour partitions of the lake's
    ``opportunities`` up to ``end`` (default now); empty when they have none.

    Only those partitions are listed and read (an opportunity that opened before the
    window counts from its first event inside it).
    """
    files = window_files(lake, "opportunities", end or datetime.now(UTC), window_hours)
    if not files:
        return empty_persistence()
    frame = pl.scan_parquet(
        files,
        storage_options=lake.storage_options or None,
        missing_columns="insert",
        extra_columns="ignore",
    )
    return spread_persistence(frame, min_lifetime_s=min_lifetime_s, bucket_bps=bucket_bps)


def attach_persistence(
    candidates: pl.DataFrame,
    persistence: pl.DataFrame,
    *,
    bucket_bps: Sequence[float] = DEFAULT_BUCKETS_BPS,
    prior: float = PRIOR,
) -> pl.DataFrame:
    """Candidates (``pipeline.detect`` output) with ``persistence`` and ``persistence_n``.

    Joined by (kind, buy_exchange, sell_exchange, size bucket of ``net_bps``);
    ``bucket_bps`` must be the edges ``persistence`` was computed with. Where there is
    no history, ``persistence = prior`` and ``persistence_n = 0``.
    """
    right = persistence.select(*PAIR_KEYS, "bucket", _p="persistence", persistence_n="n").cast(
        {"bucket": pl.Int32, "persistence_n": pl.Int64}
    )
    base = candidates.drop([c for c in ("persistence", "persistence_n") if c in candidates.columns])
    return (
        base.with_columns(_bucket=bucket_expr(pl.col("net_bps"), bucket_bps))
        .join(right, left_on=[*PAIR_KEYS, "_bucket"], right_on=[*PAIR_KEYS, "bucket"], how="left")
        .with_columns(
            persistence=pl.col("_p").fill_null(prior),
            persistence_n=pl.col("persistence_n").fill_null(0),
        )
        .drop("_p", "_bucket")
    )


# --------------------------------------------------------------------------- indicator context

_CONTEXT = ("rsi", "macd_hist", "volume_z")


def indicator_context(
    bars_or_quotes: Frame,
    *,
    every: str = "1m",
    now_ms: int | None = None,
) -> pl.DataFrame:
    """``exchange, symbol, bar_ts, rsi, macd_hist, volume_z`` of each series' latest bar.

    Quotes (a frame with ``bid``/``ask``) are turned into ``every`` bars first; bars
    of several timeframes are filtered to ``every``. With ``now_ms``, only closed bars
    (``bar_end <= now_ms``) count.
    """
    lazy = bars_or_quotes.lazy()
    names = lazy.collect_schema().names()
    bars = build_bars(lazy, every) if "bid" in names and "close" not in names else _collect(bars_or_quotes)
    if "timeframe" in bars.columns:
        bars = bars.filter(pl.col("timeframe") == every)
    if now_ms is not None:
        end = (
            pl.col("bar_end")
            if "bar_end" in bars.columns
            else pl.col("bar_ts") + pl.duration(milliseconds=duration_ms(every))
        )
        bars = bars.filter(end.dt.epoch("ms") <= now_ms)
    ind = add_indicators(bars)
    latest = ind.filter(pl.col("bar_ts") == pl.col("bar_ts").max().over("exchange", "symbol"))
    return latest.select("exchange", "symbol", "bar_ts", *_CONTEXT).sort("exchange", "symbol")


def attach_indicator_context(candidates: pl.DataFrame, context: pl.DataFrame) -> pl.DataFrame:
    """Candidates with ``buy_rsi, buy_macd_hist, buy_volume_z`` (the buy leg's series)
    and the ``sell_`` twins (null where a leg has no bars)."""
    out = candidates
    for leg in ("buy", "sell"):
        side = context.select(
            pl.col("exchange").alias(f"{leg}_exchange"),
            "symbol",
            *(pl.col(c).alias(f"{leg}_{c}") for c in _CONTEXT),
        )
        out = out.join(side, on=[f"{leg}_exchange", "symbol"], how="left")
    return out


# --------------------------------------------------------------------------- volatility


def volatility(quotes: Frame, window: str = "5m", *, now_ms: int | None = None) -> pl.DataFrame:
    """``exchange, symbol, volatility_bps, n_returns``: realised volatility of the mid's
    log returns over ``(now - window, now]`` (``now``: ``now_ms`` or the newest quote)."""
    span = duration_ms(window)
    lazy = quotes.lazy().select("ts", "exchange", "symbol", "bid", "ask")
    ts_ms = pl.col("ts").dt.epoch("ms")
    if now_ms is None:
        newest = lazy.select(ts_ms.max()).collect().item()
        if newest is None:
            return pl.DataFrame(
                schema={
                    "exchange": pl.String,
                    "symbol": pl.String,
                    "volatility_bps": pl.Float64,
                    "n_returns": pl.Int64,
                }
            )
        now_ms = int(newest)
    ret = pl.col("_logmid").diff().over("exchange", "symbol")
    return (
        lazy.filter((ts_ms > now_ms - span) & (ts_ms <= now_ms) & (pl.col("bid") > 0) & (pl.col("ask") > 0))
        .sort("exchange", "symbol", "ts")
        .with_columns(_logmid=((pl.col("bid") + pl.col("ask")) / 2.0).log())
        .with_columns(_r=ret)
        .group_by("exchange", "symbol")
        .agg(
            _ss=(pl.col("_r") * pl.col("_r")).sum(),
            n_returns=pl.col("_r").count().cast(pl.Int64),
        )
        .with_columns(
            volatility_bps=pl.when(pl.col("n_returns") > 0).then(pl.col("_ss").sqrt() * 10_000.0),
        )
        .select("exchange", "symbol", "volatility_bps", "n_returns")
        .sort("exchange", "symbol")
        .collect()
    )
