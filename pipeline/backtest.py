"""Backtests from the lake's own history: "what would this have earned?".

Both read only the window's partitions (:func:`pipeline.query.scan`) and return a plain
dataclass (``as_dict`` for JSON). Fees are taker fees (``core.fees.FeeSchedule``:
``ARBFLOW_FEES``, else the defaults), fractions of one leg's notional.

**Funding carry** (:func:`funding_carry`): long the perpetual on ``long`` (the
opportunity's ``buy_exchange``), short it on ``short`` (``sell_exchange``), ``notional``
USD on each leg, held over the whole window. At each settlement a long pays the rate and
a short receives it, so the position earns ``notional · (Σ r_short - Σ r_long)`` over the
settlements of the window, each exchange on its own schedule. A settlement is a distinct
``funding_ts`` (ccxt's ``fundingTimestamp``: the settlement the rate applies to; when
absent, ``next_funding_ts``) inside ``[start, end)``, and its rate is the last one
observed for it. Fees: four taker fills (open and close both legs),
``notional · 2 · (f_long + f_short)`` on swap fees. Net = earned - fees. Price moves
of the hedged pair (basis) are not in the figure.

**Spot spread** (:func:`spot_spread`): buy on ``buy`` at its ask, sell on ``sell`` at its
bid. On the timeline of every quote of either leg, each leg's latest quote no older than
``freshness_s``; ``net_bps = (bid_sell - ask_buy) / mid · 1e4 - (f_buy + f_sell) · 1e4``
(spot taker fees). The spread is *open* while ``net_bps > threshold_bps``; an episode
lasts from the first open observation to the first observation after it that is not
open (or the last one). Figures: episodes, time open (seconds and share of the time
both legs were quoted), median and longest episode, and the median ``net_bps`` of the
open observations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.fees import FeeSchedule
from core.models import MarketType
from pipeline.lake import Lake
from pipeline.query import scan

WINDOW_DAYS = (7, 30, 90)


def _window(end: datetime, days: float) -> tuple[datetime, datetime]:
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware (UTC)")
    if days <= 0:
        raise ValueError("days must be > 0")
    return end - timedelta(days=days), end


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True, slots=True)
class FundingCarryResult:
    symbol: str
    long: str
    short: str
    start: datetime
    end: datetime
    notional_usd: float
    settlements_long: int
    settlements_short: int
    sum_rate_long: float
    sum_rate_short: float
    earned_usd: float
    """Funding received minus paid, before fees."""
    fees_usd: float
    net_usd: float
    net_apr: float | None
    """``net / notional`` annualised over the hours the data covers (None: no data)."""
    covered_hours: float
    """From the first to the last settlement of either leg in the window."""

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


def _settlements(frame: pl.DataFrame, exchange: str) -> pl.DataFrame:
    """One row per settlement of ``exchange``: its time and the last rate observed for it."""
    return (
        frame.filter(pl.col("exchange") == exchange)
        .with_columns(pl.coalesce("funding_ts", "next_funding_ts").alias("settles_at"))
        .drop_nulls("settles_at")
        .sort("ts")
        .group_by("settles_at")
        .agg(pl.col("funding_rate").last())
        .sort("settles_at")
    )


def funding_carry(
    lake: Lake | str | None,
    symbol: str,
    long: str,
    short: str,
    *,
    end: datetime,
    days: float = 7,
    notional: float = 10_000.0,
    fees: FeeSchedule | None = None,
    lookback_days: float = 1.0,
) -> FundingCarryResult:
    """What long ``long`` / short ``short`` on ``symbol`` would have earned after fees over
    the ``days`` before ``end``, from the lake's funding history.

    ``lookback_days``: snapshots this long before the window are read too (they may announce
    a settlement inside it); 0 reads the window's partitions only."""
    start, end = _window(end, days)
    fees = fees or FeeSchedule()
    frame = (
        scan(
            "funding_rates",
            start - timedelta(days=lookback_days),
            end,
            symbols=[symbol],
            exchanges=[long, short],
            lake=lake,
        )
        .select("ts", "exchange", "funding_rate", "funding_ts", "next_funding_ts")
        .collect()
    )
    # Snapshots from the day before the window may announce a settlement inside it.
    legs = {}
    for exchange in (long, short):
        rows = _settlements(frame, exchange).filter(
            (pl.col("settles_at") >= start) & (pl.col("settles_at") < end)
        )
        legs[exchange] = rows
    rl, rs = legs[long], legs[short]
    sum_long = float(rl["funding_rate"].sum() or 0.0)
    sum_short = float(rs["funding_rate"].sum() or 0.0)
    earned = notional * (sum_short - sum_long)
    fee_total = notional * 2 * float(fees.taker(long, MarketType.SWAP) + fees.taker(short, MarketType.SWAP))
    times = pl.concat([rl["settles_at"], rs["settles_at"]])
    covered = (times.max() - times.min()).total_seconds() / 3600 if times.len() > 1 else 0.0  # type: ignore[operator,union-attr]
    net = earned - fee_total
    return FundingCarryResult(
        symbol=symbol,
        long=long,
        short=short,
        start=start,
        end=end,
        notional_usd=notional,
        settlements_long=rl.height,
        settlements_short=rs.height,
        sum_rate_long=sum_long,
        sum_rate_short=sum_short,
        earned_usd=earned,
        fees_usd=fee_total,
        net_usd=net,
        net_apr=(net / notional) * 8760 / covered if covered > 0 else None,
        covered_hours=covered,
    )


@dataclass(frozen=True, slots=True)
class SpotSpreadResult:
    symbol: str
    buy: str
    sell: str
    start: datetime
    end: datetime
    threshold_bps: float
    fees_bps: float
    observations: int
    """Timeline points where both legs had a fresh quote."""
    quoted_s: float
    """Time both legs were quoted (first to last such point)."""
    episodes: int
    open_s: float
    open_share: float | None
    median_episode_s: float | None
    longest_episode_s: float | None
    median_net_bps: float | None
    """Median ``net_bps`` of the open observations."""
    max_net_bps: float | None

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


def spread_series(
    quotes: pl.DataFrame, buy: str, sell: str, *, fees_bps: float, freshness_s: float
) -> pl.DataFrame:
    """``ts, ask_buy, bid_sell, net_bps`` on the timeline of both legs' quotes (vectorised)."""
    tolerance = timedelta(seconds=freshness_s)
    a = quotes.filter(pl.col("exchange") == buy).select("ts", pl.col("ask").alias("ask_buy")).sort("ts")
    b = quotes.filter(pl.col("exchange") == sell).select("ts", pl.col("bid").alias("bid_sell")).sort("ts")
    timeline = pl.concat([a.select("ts"), b.select("ts")]).unique().sort("ts")
    joined = timeline.join_asof(a, on="ts", strategy="backward", tolerance=tolerance).join_asof(
        b, on="ts", strategy="backward", tolerance=tolerance
    )
    mid = (pl.col("ask_buy") + pl.col("bid_sell")) / 2
    return joined.drop_nulls(["ask_buy", "bid_sell"]).with_columns(
        ((pl.col("bid_sell") - pl.col("ask_buy")) / mid * 1e4 - fees_bps).alias("net_bps")
    )


def spot_spread(
    lake: Lake | str | None,
    symbol: str,
    buy: str,
    sell: str,
    *,
    end: datetime,
    days: float = 7,
    threshold_bps: float = 0.0,
    fees: FeeSchedule | None = None,
    freshness_s: float = 5.0,
) -> SpotSpreadResult:
    """How often and how long buying ``symbol`` on ``buy`` and selling on ``sell`` was open
    above ``threshold_bps`` net of fees over the ``days`` before ``end``, and its median net edge."""
    start, end = _window(end, days)
    fees = fees or FeeSchedule()
    fees_bps = float(fees.taker(buy, MarketType.SPOT) + fees.taker(sell, MarketType.SPOT)) * 1e4
    quotes = (
        scan("quotes", start, end, symbols=[symbol], exchanges=[buy, sell], lake=lake)
        .select("ts", "exchange", "bid", "ask")
        .collect()
    )
    series = spread_series(quotes, buy, sell, fees_bps=fees_bps, freshness_s=freshness_s)
    if series.height == 0:
        return SpotSpreadResult(
            symbol,
            buy,
            sell,
            start,
            end,
            threshold_bps,
            fees_bps,
            0,
            0.0,
            0,
            0.0,
            None,
            None,
            None,
            None,
            None,
        )
    marked = series.with_columns(
        (pl.col("net_bps") > threshold_bps).alias("open"),
        pl.col("ts").shift(-1).fill_null(pl.col("ts").last()).alias("next_ts"),
    ).with_columns((pl.col("open") != pl.col("open").shift(1)).fill_null(True).cum_sum().alias("run"))
    episodes = (
        marked.filter(pl.col("open"))
        .group_by("run")
        .agg(
            pl.col("ts").first().alias("opened"),
            pl.col("next_ts").last().alias("closed"),
        )
        .with_columns(((pl.col("closed") - pl.col("opened")).dt.total_milliseconds() / 1000).alias("seconds"))
    )
    open_rows = marked.filter(pl.col("open"))
    quoted = (series["ts"].max() - series["ts"].min()).total_seconds()  # type: ignore[operator,union-attr]
    open_s = float(episodes["seconds"].sum() or 0.0)
    return SpotSpreadResult(
        symbol=symbol,
        buy=buy,
        sell=sell,
        start=start,
        end=end,
        threshold_bps=threshold_bps,
        fees_bps=fees_bps,
        observations=series.height,
        quoted_s=quoted,
        episodes=episodes.height,
        open_s=open_s,
        open_share=open_s / quoted if quoted > 0 else None,
        median_episode_s=_opt(episodes["seconds"].median()),
        longest_episode_s=_opt(episodes["seconds"].max()),
        median_net_bps=_opt(open_rows["net_bps"].median()),
        max_net_bps=_opt(open_rows["net_bps"].max()),
    )


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
