"""Backtests against hand computations, on lakes written through the real ParquetSink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from core.fees import FeeSchedule
from core.settings import LakeSettings
from pipeline.backtest import funding_carry, spot_spread
from pipeline.lake import Lake
from pipeline.schemas import FUNDING_RATES, QUOTES
from pipeline.sink import ParquetSink
from serve.cli import app

END = datetime(2025, 6, 8, tzinfo=UTC)
SYMBOL = "BTC/USDT:USDT"
FEES = FeeSchedule.build({"binance": {"swap_taker": 0.0005}, "okx": {"swap_taker": 0.0004}})


def _funding_rows(
    exchange: str, interval_h: int, final: float, first: datetime, last: datetime
) -> list[dict[str, Any]]:
    """Hourly snapshots; each announces the next settlement with a preliminary rate (0.01) and,
    in its last hour, the final one: only the final rate is paid."""
    out: list[dict[str, Any]] = []
    at = first
    while at < last:
        hours = int((at - datetime(2025, 1, 1, tzinfo=UTC)).total_seconds() // 3600)
        settles = at + timedelta(hours=interval_h - hours % interval_h)
        rate = final if settles - at <= timedelta(hours=1) else 0.01
        out.append(
            {
                "ts": at + timedelta(minutes=1),
                "recv_ts": at + timedelta(minutes=1),
                "exchange": exchange,
                "symbol": SYMBOL,
                "funding_rate": rate,
                "interval_hours": float(interval_h),
                "rate_per_hour": rate / interval_h,
                "funding_ts": settles,
                "next_funding_ts": settles,
            }
        )
        at += timedelta(hours=1)
    return out


@pytest.fixture
def funding_lake(tmp_path: Path) -> Lake:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    sink = ParquetSink(lake, LakeSettings(url=lake.root))
    first, last = END - timedelta(days=12), END + timedelta(days=2)  # data before and after the window
    rows = _funding_rows("binance", 8, 0.0001, first, last) + _funding_rows("okx", 4, 0.00015, first, last)
    rows += _funding_rows("bybit", 8, 0.5, first, last)  # another exchange: never read into the figure
    sink.add("funding_rates", pa.Table.from_pylist(rows, schema=FUNDING_RATES))
    sink.flush()
    return lake


def test_funding_carry_matches_the_hand_computation(funding_lake: Lake) -> None:
    result = funding_carry(
        funding_lake, SYMBOL, "binance", "okx", end=END, days=7, notional=10_000, fees=FEES
    )
    # [06-01 00:00, 06-08 00:00): binance settles every 8 h -> 21 times at 0.0001 (long: pays),
    # okx every 4 h -> 42 times at 0.00015 (short: receives).
    assert (result.settlements_long, result.settlements_short) == (21, 42)
    earned = 10_000 * (42 * 0.00015 - 21 * 0.0001)  # 42.0 USD
    fees = 10_000 * 2 * (0.0005 + 0.0004)  # open and close both legs: 18.0 USD
    assert result.earned_usd == pytest.approx(earned) == pytest.approx(42.0)
    assert result.fees_usd == pytest.approx(fees) == pytest.approx(18.0)
    assert result.net_usd == pytest.approx(24.0)
    assert result.covered_hours == pytest.approx(7 * 24 - 4)  # first to last settlement
    # the other way round pays the carry
    reverse = funding_carry(
        funding_lake, SYMBOL, "okx", "binance", end=END, days=7, notional=10_000, fees=FEES
    )
    assert reverse.net_usd == pytest.approx(-42.0 - 18.0)


def test_funding_carry_30_days_covers_what_the_lake_holds(funding_lake: Lake) -> None:
    result = funding_carry(funding_lake, SYMBOL, "binance", "okx", end=END, days=30, fees=FEES)
    # data starts 12 days before END: the first snapshot (05-27 00:01) announces 05-27 08:00 (binance)
    # and 05-27 04:00 (okx)
    assert result.settlements_long == 12 * 3 - 1 and result.settlements_short == 12 * 6 - 1


def _quote(ts: datetime, exchange: str, bid: float, ask: float) -> dict[str, Any]:
    return {"ts": ts, "recv_ts": ts, "exchange": exchange, "symbol": "BTC/USDT", "market_type": "spot",
            "bid": bid, "ask": ask}  # fmt: skip


def test_spot_spread_episodes_match_the_hand_computation(tmp_path: Path) -> None:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    sink = ParquetSink(lake, LakeSettings(url=lake.root))
    t0 = END - timedelta(hours=1)
    rows = []
    for i in range(100):  # one quote a second on each leg
        at = t0 + timedelta(seconds=i)
        wide = 10 <= i < 20 or 50 <= i < 55
        rows.append(_quote(at, "binance", 99.9, 100.0))
        rows.append(_quote(at, "okx", 100.5 if wide else 100.0, 100.6))
    sink.add("quotes", pa.Table.from_pylist(rows, schema=QUOTES))
    sink.flush()
    result = spot_spread(lake, "BTC/USDT", "binance", "okx", end=END, days=7, threshold_bps=5.0)
    fees_bps = 2 * 0.001 * 1e4  # default spot taker fees: 20 bps
    net = (100.5 - 100.0) / 100.25 * 1e4 - fees_bps  # 29.875... bps while wide
    assert result.fees_bps == pytest.approx(fees_bps)
    assert result.observations == 100 and result.quoted_s == pytest.approx(99.0)
    assert result.episodes == 2
    assert result.open_s == pytest.approx(15.0)  # 10 s then 5 s: each until the next closed quote
    assert result.median_episode_s == pytest.approx(7.5) and result.longest_episode_s == pytest.approx(10.0)
    assert result.median_net_bps == pytest.approx(net)
    assert result.open_share == pytest.approx(15 / 99)
    above = spot_spread(lake, "BTC/USDT", "binance", "okx", end=END, days=7, threshold_bps=40.0)
    assert above.episodes == 0 and above.median_net_bps is None


def test_arbflow_backtest_cli(funding_lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARBFLOW_LAKE__URL", funding_lake.root)
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARBFLOW_FEES", '{"binance": {"swap_taker": 0.0005}, "okx": {"swap_taker": 0.0004}}')
    monkeypatch.setenv("COLUMNS", "200")
    args = [
        "backtest",
        "funding_rate",
        SYMBOL,
        "--legs",
        "binance,okx",
        "--days",
        "7",
        "--end",
        "2025-06-08T00:00Z",
    ]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["net_usd"] == pytest.approx(24.0) and body["settlements_short"] == 42
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "net usd" in table.output and "24" in table.output
    bad = CliRunner().invoke(app, [*args[:-2], "--days", "8"])
    assert bad.exit_code == 2
