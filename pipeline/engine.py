"""The opportunity engine of one process: market batches in, candidates and audit rows out.

It keeps the latest order book and funding rate per (exchange, symbol), rolling 1 m
bars of the quotes, the historical persistence of spreads from the lake, and per
tick runs the vectorised detectors of ``pipeline.detect`` over every symbol and
exchange pair at once, then validation and scoring:

1. market: per-kind thresholds, depth at the notional, freshness, plausibility,
   volatility within bounds (``pipeline.detect`` flags, plus ``volatile``);
2. technical: historical persistence of similar spreads (``pipeline.history``) and
   indicator context (RSI, MACD, volume) of both legs;
3. (user checks belong to distribution);
4. score: a confidence in [0, 1] blending the detector's score with persistence and
   volatility; ``pushable`` only without blocking flags and at ``push_threshold``.

Technical signals (``kind = technical``) run once per closed bar on the rolling bars.
The engine returns candidates grouped by exchange pair; coordination (dedup and the
lifecycle) is the pair coordinators' job. No Ray, no Redis: tested as plain code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from core.candidates import Candidate, candidates_from_frame
from core.fees import FeeSchedule
from core.models import UNTRADEABLE_FLAGS, OpportunityKind, TransferStatus
from core.settings import OpportunitySettings
from pipeline import detect, detect_funding, history, technical
from pipeline.bars import build_bars, duration_ms
from pipeline.opportunities import validations_to_table
from pipeline.schemas import MarketBatch

log = logging.getLogger(__name__)

Pair = tuple[str, str]
BAR_KEEP = 400
"""1 m bars kept per series: enough for 5 m indicators (MACD needs 34 bars) and hit rates."""

_BAR_COLUMNS = ("exchange", "symbol", "bar_ts", "open", "high", "low", "close", "updates")


def pair_of(buy: str | None, sell: str | None) -> Pair:
    """The coordinator of an opportunity: its two exchanges, sorted (one for technical)."""
    a, b = buy or sell or "", sell or buy or ""
    return (a, b) if a <= b else (b, a)


@dataclass(slots=True)
class Tick:
    """What one detection tick produced."""

    now_ms: int
    kinds: frozenset[str]
    candidates: dict[Pair, list[Candidate]] = field(default_factory=dict)
    validations: pa.Table | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.candidates.values())


class OpportunityEngine:
    def __init__(
        self,
        settings: OpportunitySettings,
        fees: FeeSchedule,
        *,
        exchanges: list[str] | None = None,
        persistence_loader: Callable[[], pl.DataFrame] | None = None,
        persistence_executor: Executor | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.fees = fees
        self.exchanges = list(exchanges or [])
        self.persistence_loader = persistence_loader
        self.persistence_executor = persistence_executor
        """With an executor the persistence table is rebuilt there: a tick never waits for the lake."""
        self._persistence_job: Future[pl.DataFrame] | None = None
        self.books = pl.DataFrame()
        self.transfer: dict[str, dict[str, TransferStatus]] = {}
        """exchange -> asset -> what the venue says about moving it (``core.transfers``), from
        the live sources' currency data; empty (sim, replay): transfers are not checked. An
        exchange present with an asset missing: that asset's status is unknown."""
        self.funding = pl.DataFrame()
        self.bars = pl.DataFrame()
        self._bar_parts: list[pl.DataFrame] = []
        self.persistence = history.empty_persistence()
        self._persistence_at = -math.inf
        self.clock_ms = 0
        self._last_detect_ms = -(10**18)
        self._last_bar_ms = 0
        self._vol = pl.DataFrame()
        self._vol_minute = -1
        self.ticks = 0

    # -- state -----------------------------------------------------------------
    def ingest(self, batch: MarketBatch) -> None:
        self.clock_ms = max(self.clock_ms, batch.clock_ms)
        books = batch.tables.get("order_books")
        if books is not None and books.num_rows:
            self.books = _upsert(self.books, books.drop_columns(["nonce"]))
        funding = batch.tables.get("funding_rates")
        if funding is not None and funding.num_rows:
            self.funding = _upsert(self.funding, funding)
        quotes = batch.tables.get("quotes")
        if self.settings.technical and quotes is not None and quotes.num_rows:
            self._bar_parts.append(_partial_bars(quotes))

    def backfill_bars(self, quotes: pl.LazyFrame | pl.DataFrame) -> None:
        """Rebuild the rolling bars from the lake's recent quotes (at start)."""
        bars = build_bars(quotes, "1m").select(_BAR_COLUMNS)
        if bars.height:
            self._bar_parts.insert(0, bars)

    def refresh_persistence(self, now_s: float) -> None:
        """Rebuild the persistence table every ``persistence_refresh_s``.

        With ``persistence_executor`` the load runs there and its result is taken by a
        later call once done (never waited for); without, it runs inline (plain code, tests).
        """
        if self.persistence_loader is None:
            return
        job = self._persistence_job
        if job is not None:
            if not job.done():
                return
            self._persistence_job = None
            try:
                self.persistence = job.result()
            except Exception as exc:  # history is context: a lake hiccup must not stop detection
                log.warning("persistence from the lake unavailable: %s", exc)
        if now_s - self._persistence_at < self.settings.persistence_refresh_s:
            return
        self._persistence_at = now_s
        if self.persistence_executor is not None:
            self._persistence_job = self.persistence_executor.submit(self.persistence_loader)
            return
        try:
            self.persistence = self.persistence_loader()
        except Exception as exc:  # history is context: a lake hiccup must not stop detection
            log.warning("persistence from the lake unavailable: %s", exc)

    # -- ticks -----------------------------------------------------------------
    def due(self) -> bool:
        return self.clock_ms - self._last_detect_ms >= self.settings.detect_interval_ms

    def idle_tick(self, now_ms: int) -> Tick:
        """A tick at ``now_ms`` past the newest data (no batch arrived): held books and
        funding rates are judged against it, so the stale ones no longer yield candidates.

        The source clock is left alone: the next batch ticks as it would have.
        """
        out = self.tick(max(now_ms, self.clock_ms))
        self._last_detect_ms = self.clock_ms
        return out

    def tick(self, now_ms: int | None = None) -> Tick:
        """Spot spreads and funding carries over everything held, scored and audited."""
        import time

        now_ms = self.clock_ms if now_ms is None else now_ms
        self._last_detect_ms = now_ms
        self.ticks += 1
        s = self.settings
        out = Tick(now_ms, frozenset({OpportunityKind.SPOT_SPREAD.value, OpportunityKind.FUNDING_RATE.value}))
        started = time.perf_counter()
        frames: list[pl.DataFrame] = []
        rejections = None
        if self.books.height:
            spreads = detect.detect_spreads(
                self.books,
                self.fees,
                s.notionals,
                now_ms=now_ms,
                freshness_s=s.freshness_s,
                plausibility_cap=s.plausibility_cap,
                min_net_bps=s.min_net_bps,
                transfer=self.transfer or None,
            )
            rejections = detect.book_rejections(self.books, now_ms, s.freshness_s)
            if spreads.height:
                frames.append(spreads)
        out.timings_ms["spreads"] = (time.perf_counter() - started) * 1e3
        if self.funding.height:
            carries = detect_funding.detect_funding(
                self.funding,
                self.fees,
                s.funding_notional,
                now_ms=now_ms,
                horizon_hours=s.funding_horizon_hours,
                use_predicted=s.funding_use_predicted,
                freshness_s=s.funding_freshness_s,
                min_net_apr=s.min_net_apr,
            )
            if carries.height:
                frames.append(carries)
        out.timings_ms["detect"] = (time.perf_counter() - started) * 1e3
        detected = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        if detected.height:
            detected = self._validate_and_score(detected)
        out.timings_ms["score"] = (time.perf_counter() - started) * 1e3
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        if detected.height or (rejections is not None and rejections.height):
            out.validations = validations_to_table(
                now,
                book_rejections=rejections,
                candidates=detected if detected.height else None,
                push_threshold=s.push_threshold,
            )
        if detected.height:
            for cand in candidates_from_frame(detected, detected_at=now):
                out.candidates.setdefault(pair_of(cand.buy_exchange, cand.sell_exchange), []).append(cand)
        out.timings_ms["total"] = (time.perf_counter() - started) * 1e3
        return out

    def technical_due(self) -> bool:
        return self.settings.technical and self.clock_ms // 60_000 > self._last_bar_ms // 60_000

    def technical_tick(self, now_ms: int | None = None) -> Tick:
        """Signals on the bars that closed since the last technical tick."""
        now_ms = self.clock_ms if now_ms is None else now_ms
        self._last_bar_ms = now_ms
        out = Tick(now_ms, frozenset({OpportunityKind.TECHNICAL.value}))
        bars_1m = self._consolidate_bars()
        if bars_1m.height == 0:
            return out
        frames = []
        for tf in self.settings.technical_timeframes:
            bars = _with_bar_meta(bars_1m, "1m") if tf == "1m" else _resample(bars_1m, tf)
            found = technical.technical_opportunities(bars, now_ms, timeframe=tf)
            if found.height:
                frames.append(found)
        if not frames:
            return out
        signals = pl.concat(frames, how="diagonal_relaxed").with_columns(
            pushable=pl.col("pushable") & (pl.col("confidence") >= self.settings.push_threshold)
        )
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        for cand in candidates_from_frame(signals, detected_at=now):
            out.candidates.setdefault(pair_of(cand.buy_exchange, cand.sell_exchange), []).append(cand)
        return out

    # -- validation levels 1, 2 and 4 -------------------------------------------
    def _validate_and_score(self, detected: pl.DataFrame) -> pl.DataFrame:
        s = self.settings
        frame = history.attach_persistence(detected, self.persistence)
        vol = self._volatility()
        if vol.height:
            buy = vol.rename({"exchange": "buy_exchange", "vol": "buy_vol"})
            sell = vol.rename({"exchange": "sell_exchange", "vol": "sell_vol"})
            frame = (
                frame.join(buy, on=["buy_exchange", "symbol"], how="left")
                .join(sell, on=["sell_exchange", "symbol"], how="left")
                .with_columns(volatility_bps=pl.max_horizontal("buy_vol", "sell_vol"))
                .drop("buy_vol", "sell_vol")
            )
        else:
            frame = frame.with_columns(volatility_bps=pl.lit(None, dtype=pl.Float64))
        vol_score = (1.0 - (pl.col("volatility_bps") / s.max_volatility_bps).clip(0.0, 1.0)).fill_null(1.0)
        # Weighted geometric mean: the detector's (edge, depth, freshness) score with
        # persistence (0.15) and volatility (0.10) joined in, as core.scoring weighs them.
        w_base, w_p, w_v = 0.75, 0.15, 0.10
        conf = (
            pl.col("confidence").clip(1e-12, 1.0).pow(w_base)
            * pl.col("persistence").clip(1e-12, 1.0).pow(w_p)
            * vol_score.clip(1e-12, 1.0).pow(w_v)
        )
        volatile = pl.col("volatility_bps").fill_null(0.0) > s.max_volatility_bps
        # A probable ticker collision or a closed transfer is no trade at all: confidence 0.
        # A probable ticker collision or a closed transfer is no trade at all: confidence 0
        # (volatility is judged just above, on this tick's own volatility_bps).
        untradeable = pl.col("flags").str.contains("|".join(sorted(UNTRADEABLE_FLAGS - {"volatile"})))
        return frame.with_columns(
            confidence=pl.when((pl.col("confidence") > 0) & ~untradeable).then(conf).otherwise(0.0),
            flags=pl.when(volatile)
            .then(pl.concat_str([pl.col("flags"), pl.lit("volatile")], separator=",").str.strip_chars(","))
            .otherwise(pl.col("flags")),
        ).with_columns(
            pushable=pl.col("pushable") & ~volatile & (pl.col("confidence") >= s.push_threshold),
            priority=detect.priority_expr(pl.col("confidence"), detect.SPOT_SCORING),
        )

    def _volatility(self) -> pl.DataFrame:
        """Realised volatility (bps) of the last five 1 m closes per (exchange, symbol).

        Recomputed once per minute of the clock: bars only close once a minute.
        """
        minute = self.clock_ms // 60_000
        if self._vol_minute == minute:
            return self._vol
        self._vol_minute = minute
        bars = self._consolidate_bars()
        if bars.height < 2:
            self._vol = pl.DataFrame()
            return self._vol
        self._vol = (
            bars.sort("exchange", "symbol", "bar_ts")
            .group_by("exchange", "symbol")
            .agg(pl.col("close").tail(6).log().diff().drop_nulls().pow(2).sum().sqrt().mul(1e4).alias("vol"))
        )
        return self._vol

    def _consolidate_bars(self) -> pl.DataFrame:
        if self._bar_parts:
            parts = [self.bars, *self._bar_parts] if self.bars.height else self._bar_parts
            self._bar_parts = []
            merged = pl.concat(parts, how="vertical_relaxed")
            self.bars = (
                merged.group_by("exchange", "symbol", "bar_ts", maintain_order=True)
                .agg(
                    pl.col("open").first(),
                    pl.col("high").max(),
                    pl.col("low").min(),
                    pl.col("close").last(),
                    pl.col("updates").sum(),
                )
                .sort("exchange", "symbol", "bar_ts")
                .group_by("exchange", "symbol", maintain_order=True)
                .tail(BAR_KEEP)
            )
        return self.bars

    def snapshot(self) -> dict[str, Any]:
        return {
            "clock_ms": self.clock_ms,
            "books": self.books.height,
            "funding": self.funding.height,
            "bars": self.bars.height,
            "persistence_rows": self.persistence.height,
            "ticks": self.ticks,
        }


def _upsert(held: pl.DataFrame, table: pa.Table) -> pl.DataFrame:
    """Keep the newest row per (exchange, symbol) of ``held`` and ``table``."""
    new = pl.from_arrow(table)
    assert isinstance(new, pl.DataFrame)
    new = new.sort("ts").unique(subset=["exchange", "symbol"], keep="last")
    if held.height == 0:
        return new
    return pl.concat([held, new], how="vertical_relaxed").unique(
        subset=["exchange", "symbol"], keep="last", maintain_order=True
    )


def _partial_bars(quotes: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(quotes.select(["ts", "exchange", "symbol", "bid", "ask"]))
    assert isinstance(frame, pl.DataFrame)
    return (
        frame.filter((pl.col("bid") > 0) & (pl.col("ask") > 0))
        .sort("ts")
        .with_columns(mid=(pl.col("bid") + pl.col("ask")) / 2.0, bar_ts=pl.col("ts").dt.truncate("1m"))
        .group_by("exchange", "symbol", "bar_ts", maintain_order=True)
        .agg(
            open=pl.col("mid").first(),
            high=pl.col("mid").max(),
            low=pl.col("mid").min(),
            close=pl.col("mid").last(),
            updates=pl.len().cast(pl.Int64),
        )
    )


def _with_bar_meta(bars: pl.DataFrame, every: str) -> pl.DataFrame:
    step = duration_ms(every)
    return bars.with_columns(
        timeframe=pl.lit(every),
        bar_end=pl.col("bar_ts") + pl.duration(milliseconds=step),
        base_volume_change=pl.lit(None, dtype=pl.Float64),
        volume=pl.col("updates").cast(pl.Float64),
    )


def _resample(bars_1m: pl.DataFrame, every: str) -> pl.DataFrame:
    out = (
        bars_1m.sort("exchange", "symbol", "bar_ts")
        .group_by_dynamic("bar_ts", every=every, closed="left", label="left", group_by=["exchange", "symbol"])
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("updates").sum(),
        )
    )
    return _with_bar_meta(out, every)


def recent_quotes(lake: Any, hours: int, now: datetime) -> pl.LazyFrame:
    """The lake's quotes of the last ``hours`` hours (hour partitions pruned)."""
    from pipeline.query import hour_filter_expr, scan

    start = now - timedelta(hours=hours)
    return scan(lake, "quotes").filter(hour_filter_expr(start, now))
