"""Level-2 validation from the lake: persistence, indicator context, volatility."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.bars import add_indicators, build_bars
from pipeline.history import (
    PRIOR,
    attach_indicator_context,
    attach_persistence,
    bucket_expr,
    indicator_context,
    persistence_from_lake,
    spread_persistence,
    volatility,
    window_files,
)
from pipeline.lake import Lake

T0 = int(datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp() * 1000)
TS = pl.Datetime("ms", "UTC")


def opp_rows(
    oid: str,
    net_bps: float,
    lifetime_s: float | None,
    *,
    pair: tuple[str, str] = ("binance", "okx"),
    kind: str = "spot_spread",
    start_s: float = 0.0,
    closed: bool = True,
    span_s: float | None = None,
) -> list[dict[str, object]]:
    """An opened event, an update (half-way; at ``span_s`` when still open), and (when
    ``closed``) a closed event at ``span_s`` carrying ``lifetime_s``."""
    span = span_s if span_s is not None else (lifetime_s or 0.0)
    base = {
        "opportunity_id": oid,
        "kind": kind,
        "symbol": "BTC/USDT",
        "buy_exchange": pair[0],
        "sell_exchange": pair[1],
    }
    t = T0 + int(start_s * 1000)
    rows: list[dict[str, object]] = [
        {**base, "event": "opened", "net_bps": net_bps, "detected_at": t, "lifetime_s": None},
        {
            **base,
            "event": "updated",
            "net_bps": net_bps + 30.0,
            "detected_at": t + int(span * (500 if closed else 1000)),
            "lifetime_s": None,
        },
    ]
    if closed:
        rows.append(
            {
                **base,
                "event": "closed",
                "net_bps": 0.0,
                "detected_at": t + int(span * 1000),
                "lifetime_s": lifetime_s,
            }
        )
    return rows


def opportunities_table() -> pl.DataFrame:
    rows: list[dict[str, object]] = []
    # binance→okx, bucket [10, 20): lifetimes 2, 6, 10, 3, 7 → 3 of 5 lived ≥ 5 s
    for i, life in enumerate((2.0, 6.0, 10.0, 3.0, 7.0)):
        rows += opp_rows(f"a{i}", 12.0 + i, life, start_s=100.0 * i)
    # binance→okx, bucket [5, 10): 0 of 2
    rows += opp_rows("b0", 6.0, 1.0)
    rows += opp_rows("b1", 9.9, 4.9)
    # still open: 8 s old → persistent; 1 s old → no outcome yet, left out
    rows += opp_rows("c0", 7.0, None, closed=False, span_s=8.0)
    rows += opp_rows("c1", 7.0, None, closed=False, span_s=1.0)
    # okx→bybit, funding kind, bucket ≥ 100
    rows += opp_rows("d0", 150.0, 3600.0, pair=("okx", "bybit"), kind="funding_rate")
    # a technical signal has no net_bps: skipped
    rows += [
        {**r, "net_bps": None}
        for r in opp_rows("t0", 0.0, 60.0, pair=("binance", "binance"), kind="technical")
    ]
    return (
        pl.DataFrame(rows)
        .with_columns(pl.col("detected_at").cast(TS))
        .sample(fraction=1.0, shuffle=True, seed=2)
    )


def test_bucket_edges() -> None:
    frame = pl.DataFrame({"x": [-3.0, 0.0, 4.99, 5.0, 19.9, 20.0, 99.0, 100.0, 1e6, None]})
    got = frame.select(bucket_expr(pl.col("x"))).to_series().to_list()
    assert got == [0, 0, 0, 1, 2, 3, 4, 5, 5, None]
    with pytest.raises(ValueError):
        frame.select(bucket_expr(pl.col("x"), (5.0, 5.0)))


def test_persistence_with_known_fractions() -> None:
    out = spread_persistence(opportunities_table().lazy(), min_lifetime_s=5.0)
    got = {
        (r["kind"], r["buy_exchange"], r["sell_exchange"], r["bucket"]): (
            r["n"],
            r["n_persistent"],
            r["persistence"],
        )
        for r in out.iter_rows(named=True)
    }
    assert got == {
        ("spot_spread", "binance", "okx", 2): (5, 3, pytest.approx(4 / 7)),
        ("spot_spread", "binance", "okx", 1): (3, 1, pytest.approx(2 / 5)),  # b0, b1, c0
        ("funding_rate", "okx", "bybit", 5): (1, 1, pytest.approx(2 / 3)),
    }
    row = out.filter(pl.col("bucket") == 2).row(0, named=True)
    assert (row["bucket_lo"], row["bucket_hi"]) == (10.0, 20.0)
    top = out.filter(pl.col("bucket") == 5).row(0, named=True)
    assert (top["bucket_lo"], top["bucket_hi"]) == (100.0, math.inf)


def test_persistence_without_a_lifetime_column_uses_the_event_span() -> None:
    table = opportunities_table()
    # the closed events land at first + lifetime, so the span gives the same answer
    with_col = spread_persistence(table)
    without = spread_persistence(table.drop("lifetime_s"))
    assert without.equals(with_col)
    # a stricter bound: only 10 s and the funding one
    strict = spread_persistence(table.drop("lifetime_s"), min_lifetime_s=8.0)
    assert strict.filter(pl.col("bucket") == 2)["n_persistent"].to_list() == [1]


def test_lifetime_column_wins_over_the_span() -> None:
    rows = opp_rows("x", 12.0, 30.0, span_s=1.0)  # closed after 1 s of events but lifetime says 30 s
    out = spread_persistence(pl.DataFrame(rows).with_columns(pl.col("detected_at").cast(TS)))
    assert out.select("n", "n_persistent").row(0) == (1, 1)


def candidates() -> pl.DataFrame:
    """Rows shaped like ``pipeline.detect.detect_spreads`` output (the columns used here)."""
    return pl.DataFrame(
        {
            "kind": ["spot_spread", "spot_spread", "spot_spread", "spot_spread"],
            "symbol": ["BTC/USDT", "ETH/USDT", "BTC/USDT", "BTC/USDT"],
            "buy_exchange": ["binance", "binance", "okx", "binance"],
            "sell_exchange": ["okx", "okx", "binance", "okx"],
            "notional_usd": [1000.0, 1000.0, 1000.0, 10000.0],
            "net_bps": [15.0, 11.0, 15.0, 60.0],
        }
    )


def test_attach_persistence_with_the_prior() -> None:
    persistence = spread_persistence(opportunities_table())
    out = attach_persistence(candidates(), persistence)
    assert out.columns[: len(candidates().columns)] == candidates().columns
    assert out.get_column("persistence").to_list() == pytest.approx([4 / 7, 4 / 7, PRIOR, PRIOR])
    assert out.get_column("persistence_n").to_list() == [5, 5, 0, 0]
    # no history at all
    empty = attach_persistence(candidates(), persistence.clear())
    assert empty.get_column("persistence").to_list() == [PRIOR] * 4
    custom = attach_persistence(candidates(), persistence.clear(), prior=0.3)
    assert custom.get_column("persistence").to_list() == [0.3] * 4


def test_persistence_from_the_lake(tmp_path: Path) -> None:
    lake = Lake(LocalFileSystem(), str(tmp_path))
    assert persistence_from_lake(lake).height == 0
    table = opportunities_table()
    part = Path(lake.partition_path("opportunities", datetime(2026, 1, 5, 10, tzinfo=UTC)))
    part.mkdir(parents=True)
    table.write_parquet(part / "part-0.parquet", compression="zstd")
    out = persistence_from_lake(lake, end=datetime(2026, 1, 5, 12, 30, tzinfo=UTC))
    assert out.equals(spread_persistence(table))


def test_persistence_reads_only_the_window_of_hour_partitions(tmp_path: Path) -> None:
    """Partitions older than the window are neither listed into the scan nor read: an
    unreadable file there changes nothing (the whole-dataset scan failed on it)."""
    lake = Lake(LocalFileSystem(), str(tmp_path))
    table = opportunities_table()
    recent = Path(lake.partition_path("opportunities", datetime(2026, 1, 5, 10, tzinfo=UTC)))
    recent.mkdir(parents=True)
    table.write_parquet(recent / "part-0.parquet", compression="zstd")
    old = Path(lake.partition_path("opportunities", datetime(2026, 1, 3, 9, tzinfo=UTC)))
    old.mkdir(parents=True)
    (old / "part-0.parquet").write_bytes(b"not parquet at all")
    end = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    assert window_files(lake, "opportunities", end, 24) == [
        lake.uri(f) for f in lake.list_files("opportunities", hour=datetime(2026, 1, 5, 10, tzinfo=UTC))
    ]
    assert persistence_from_lake(lake, end=end, window_hours=24).equals(spread_persistence(table))
    assert persistence_from_lake(lake, end=end, window_hours=2).height == 0  # 11:00 and 12:00 only
    with pytest.raises(Exception, match=r"(?i)parquet|magic|footer"):
        persistence_from_lake(lake, end=end, window_hours=72)  # the old partition is in this window


# --------------------------------------------------------------------------- indicator context


def quotes(n_minutes: int = 40) -> pl.DataFrame:
    """binance and okx BTC/USDT: a quote every 20 s, a gently rising mid (okx falling)."""
    rows = []
    for exchange, sign in (("binance", 1.0), ("okx", -1.0)):
        for k in range(n_minutes * 3):
            mid = 100.0 + sign * 0.05 * k + (0.3 if k % 2 else 0.0)
            rows.append(
                {
                    "ts": T0 + k * 20_000,
                    "exchange": exchange,
                    "symbol": "BTC/USDT",
                    "bid": mid - 0.01,
                    "ask": mid + 0.01,
                }
            )
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS))


def test_indicator_context_from_quotes_and_bars() -> None:
    q = quotes()
    ctx = indicator_context(q.lazy())
    assert ctx.columns == ["exchange", "symbol", "bar_ts", "rsi", "macd_hist", "volume_z"]
    assert ctx.height == 2
    ind = add_indicators(build_bars(q))
    want = ind.filter(pl.col("bar_ts") == pl.col("bar_ts").max().over("exchange", "symbol"))
    assert ctx.get_column("rsi").to_list() == want.sort("exchange").get_column("rsi").to_list()
    rsi = dict(zip(ctx["exchange"], ctx["rsi"], strict=True))
    assert rsi["binance"] > 50 > rsi["okx"]
    # from bars, and only closed bars with now
    assert indicator_context(build_bars(q)).equals(ctx)
    now = T0 + 30 * 60_000
    closed = indicator_context(q, now_ms=now)
    assert closed.get_column("bar_ts").dt.epoch("ms").to_list() == [now - 60_000] * 2


def test_attach_indicator_context_per_leg() -> None:
    ctx = indicator_context(quotes())
    out = attach_indicator_context(candidates(), ctx)
    first = out.row(0, named=True)  # binance → okx BTC
    by_ex = {r["exchange"]: r for r in ctx.iter_rows(named=True)}
    assert first["buy_rsi"] == by_ex["binance"]["rsi"]
    assert first["sell_rsi"] == by_ex["okx"]["rsi"]
    assert first["sell_macd_hist"] == by_ex["okx"]["macd_hist"]
    assert out.row(1, named=True)["buy_rsi"] is None  # no ETH bars
    assert out.height == candidates().height


# --------------------------------------------------------------------------- volatility


def test_volatility_of_a_constant_series_is_zero() -> None:
    rows = [
        {"ts": T0 + k * 1000, "exchange": "binance", "symbol": "BTC/USDT", "bid": 99.0, "ask": 101.0}
        for k in range(50)
    ]
    out = volatility(pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS)))
    assert out.row(0, named=True) == {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "volatility_bps": 0.0,
        "n_returns": 49,
    }


def test_volatility_known_returns_and_window() -> None:
    mids = {"binance": [100.0, 101.0, 100.0], "okx": [50.0, 50.0, 55.0]}
    rows = [
        {"ts": T0 + k * 60_000, "exchange": ex, "symbol": "ETH/USDT", "bid": m, "ask": m}
        for ex, series in mids.items()
        for k, m in enumerate(series)
    ]
    # an old quote outside the 5 m window that would dominate if it counted
    rows.append(
        {"ts": T0 - 10 * 60_000, "exchange": "binance", "symbol": "ETH/USDT", "bid": 10.0, "ask": 10.0}
    )
    # a lone quote: no return, volatility unknown
    rows.append({"ts": T0, "exchange": "bybit", "symbol": "ETH/USDT", "bid": 1.0, "ask": 1.0})
    frame = pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS))
    out = {r["exchange"]: r for r in volatility(frame.lazy(), "5m").iter_rows(named=True)}
    want = math.sqrt(math.log(101 / 100) ** 2 + math.log(100 / 101) ** 2) * 1e4
    assert out["binance"]["volatility_bps"] == pytest.approx(want)
    assert out["binance"]["n_returns"] == 2
    assert out["okx"]["volatility_bps"] == pytest.approx(abs(math.log(55 / 50)) * 1e4)
    assert out["bybit"]["volatility_bps"] is None and out["bybit"]["n_returns"] == 0
    # an explicit now that keeps only the last two minutes
    late = volatility(frame, "90s", now_ms=T0 + 2 * 60_000)
    assert late.filter(pl.col("exchange") == "binance")["volatility_bps"].to_list() == [
        pytest.approx(abs(math.log(100 / 101)) * 1e4)
    ]
    assert volatility(frame.clear()).height == 0
