"""Lifecycle events and validation outcomes as lake rows: exact columns and types."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from core.candidates import Candidate, candidates_from_frame
from core.lifecycle import OpportunityTracker
from core.models import OpportunityKind, Priority, Rejection, RejectReason
from pipeline.opportunities import (
    OPPORTUNITIES,
    OPPORTUNITIES_DATASET,
    VALIDATIONS,
    VALIDATIONS_DATASET,
    VALIDATIONS_PATH,
    events_to_table,
    validations_to_table,
)
from pipeline.schemas import TS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTRACT_COLUMNS = [
    "opportunity_id",
    "event",
    "kind",
    "symbol",
    "buy_exchange",
    "sell_exchange",
    "gross_bps",
    "net_bps",
    "gross_apr",
    "notional_usd",
    "confidence",
    "priority",
    "pushable",
    "flags",
    "detected_at",
]


def cand(kind: OpportunityKind = OpportunityKind.SPOT_SPREAD, net: float = 12.0, **kw: object) -> Candidate:
    fields: dict[str, object] = {
        "kind": kind,
        "symbol": "BTC/USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "gross_bps": net + 20,
        "net_bps": net,
        "gross_apr": None,
        "notional_usd": 1_000.0,
        "executable_usd": 900.0,
        "confidence": 0.8,
        "priority": Priority.MEDIUM,
        "pushable": True,
        "flags": (),
        "detected_at": T0,
        "details": {"buy_vwap": 100.0, "next": T0},
    }
    fields.update(kw)
    return Candidate(**fields)  # type: ignore[arg-type]


def test_names() -> None:
    assert OPPORTUNITIES_DATASET == "opportunities"
    assert VALIDATIONS_DATASET == "validations" and VALIDATIONS_PATH == "validations"


def test_events_to_table_columns_and_values() -> None:
    tracker = OpportunityTracker()
    funding = cand(
        OpportunityKind.FUNDING_RATE,
        symbol="ETH/USDT:USDT",
        gross_apr=0.31,
        flags=("basis_unknown", "default_fee"),
        executable_usd=10_000.0,
        notional_usd=10_000.0,
    )
    events = tracker.observe([cand(), funding], T0)
    events += tracker.observe([cand(net=30.0)], T0 + timedelta(seconds=2))
    table = events_to_table(events)

    assert table.schema.equals(OPPORTUNITIES)
    assert set(CONTRACT_COLUMNS) <= set(table.column_names)
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["detected_at"] == TS and types["ts"] == TS and types["opened_at"] == TS
    assert types["pushable"] == pa.bool_() and types["flags"] == pa.string()
    for name in ("gross_bps", "net_bps", "gross_apr", "notional_usd", "confidence", "lifetime_s"):
        assert types[name] == pa.float64()

    rows = table.to_pylist()
    assert [r["event"] for r in rows] == ["opened", "opened", "updated", "closed"]
    spot, fund, upd, closed = rows
    assert spot["gross_apr"] is None and spot["flags"] == "" and spot["lifetime_s"] is None
    assert fund["gross_apr"] == pytest.approx(0.31) and fund["flags"] == "basis_unknown,default_fee"
    assert fund["buy_exchange"] == "binance" and fund["sell_exchange"] == "okx"
    assert upd["opportunity_id"] == spot["opportunity_id"] and upd["net_bps"] == 30.0
    assert closed["opportunity_id"] == fund["opportunity_id"] and closed["lifetime_s"] == pytest.approx(2.0)
    assert closed["detected_at"] == closed["ts"] == T0 + timedelta(seconds=2)
    assert closed["opened_at"] == T0
    assert json.loads(spot["details"]) == {"buy_vwap": 100.0, "next": T0.isoformat()}


def test_events_to_table_technical_and_empty() -> None:
    tech = cand(OpportunityKind.TECHNICAL, buy_exchange=None, sell_exchange="okx", net=float("nan"))
    (row,) = events_to_table(OpportunityTracker().observe([tech], T0)).to_pylist()
    assert row["buy_exchange"] is None and row["sell_exchange"] == "okx" and row["net_bps"] is None
    empty = events_to_table([])
    assert empty.num_rows == 0 and empty.schema.equals(OPPORTUNITIES)


def test_events_table_goes_through_polars_and_back() -> None:
    events = OpportunityTracker().observe([cand()], T0)
    frame = pl.from_arrow(events_to_table(events))
    assert isinstance(frame, pl.DataFrame)
    assert frame.schema["detected_at"] == pl.Datetime("ms", "UTC")


def test_validations_from_frames() -> None:
    spreads = pl.DataFrame(
        {
            "kind": ["spot_spread"] * 3,
            "symbol": ["BTC/USDT", "BTC/USDT", "ETH/USDT"],
            "buy_exchange": ["binance", "binance", "okx"],
            "sell_exchange": ["okx", "okx", "bybit"],
            "notional_usd": [1_000.0, 10_000.0, 1_000.0],
            "net_bps": [10.0, -3.0, 4.0],
            "flags": ["default_fee", "insufficient_depth,below_threshold", ""],
            "confidence": [0.8, 0.0, 0.5],
        }
    )
    books = pl.DataFrame(
        {"exchange": ["bybit"], "symbol": ["XRP/USDT"], "market_type": ["spot"], "reason": ["stale"]}
    )
    rejection = Rejection(
        kind=OpportunityKind.FUNDING_RATE,
        symbol="BTC/USDT:USDT",
        buy_exchange="okx",
        sell_exchange="binance",
        reason=RejectReason.INVALID_INTERVAL,
        detail="interval 0h",
        detected_at=T0,
    )
    technical = pl.DataFrame(
        {
            "kind": ["spot_spread"],
            "symbol": ["BTC/USDT"],
            "buy_exchange": ["binance"],
            "sell_exchange": ["okx"],
            "stage": ["technical"],
            "outcome": ["pass"],
            "persistence": [0.8],
        }
    )
    table = validations_to_table(
        T0, book_rejections=books, candidates=spreads, rejections=[rejection], extra=technical
    )
    assert table.schema.equals(VALIDATIONS)
    rows = table.to_pylist()
    got = [(r["symbol"], r["notional_usd"], r["stage"], r["outcome"], r["reason"]) for r in rows]
    assert got == [
        ("XRP/USDT", None, "market", "fail", "stale"),
        ("BTC/USDT", 1_000.0, "market", "pass", ""),
        ("BTC/USDT", 10_000.0, "market", "fail", "insufficient_depth,below_threshold"),
        ("ETH/USDT", 1_000.0, "market", "pass", ""),
        ("BTC/USDT", 1_000.0, "score", "pass", ""),
        ("ETH/USDT", 1_000.0, "score", "fail", "below_confidence"),
        ("BTC/USDT:USDT", None, "market", "fail", "invalid_interval"),
        ("BTC/USDT", None, "technical", "pass", ""),
    ]
    assert all(r["ts"] == T0 for r in rows)
    assert rows[0]["buy_exchange"] == "bybit" and rows[0]["sell_exchange"] is None
    assert rows[0]["detail"] == "spot book on bybit"
    assert rows[1]["detail"] == "default_fee" and rows[1]["net_bps"] == 10.0
    assert rows[6]["detail"] == "interval 0h"


def test_validations_from_candidate_objects_and_detector_output() -> None:
    c = cand(flags=("not_transferable",), pushable=False)
    rows = validations_to_table(T0, candidates=[c]).to_pylist()
    assert [(r["stage"], r["outcome"], r["reason"]) for r in rows] == [("market", "fail", "not_transferable")]
    assert validations_to_table(T0).num_rows == 0
    assert validations_to_table(T0).schema.equals(VALIDATIONS)


def test_detect_output_round_trip() -> None:
    """A frame shaped like detect_spreads output → candidates → events → rows."""
    ts = pl.Series([T0], dtype=pl.Datetime("ms", "UTC"))
    frame = pl.DataFrame(
        {
            "kind": ["spot_spread", "spot_spread"],
            "symbol": ["BTC/USDT"] * 2,
            "buy_exchange": ["binance"] * 2,
            "sell_exchange": ["okx"] * 2,
            "notional_usd": [1_000.0, 10_000.0],
            "gross_bps": [30.0, 28.0],
            "net_bps": [12.0, 11.0],
            "executable_usd": [1_000.0, 10_000.0],
            "flags": ["", ""],
            "pushable": [True, True],
            "confidence": [0.8, 0.8],
            "priority": ["medium", "medium"],
            "buy_ts": pl.concat([ts, ts]),
            "sell_ts": pl.concat([ts, ts]),
        }
    )
    (row,) = events_to_table(OpportunityTracker().observe(candidates_from_frame(frame), T0)).to_pylist()
    assert row["notional_usd"] == 1_000.0 and row["executable_usd"] == 1_000.0
    details = json.loads(row["details"])
    assert details["alternatives"][0]["notional_usd"] == 10_000.0
    assert details["buy_ts"].startswith("2026-03-01T12:00:00")


def _book(ex: str, symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]],
          ts: datetime = T0) -> dict[str, object]:  # fmt: skip
    return {
        "ts": ts,
        "recv_ts": ts,
        "exchange": ex,
        "symbol": symbol,
        "market_type": "spot",
        "depth": max(len(bids), len(asks)),
        "bid_px": [p for p, _ in bids],
        "bid_sz": [s for _, s in bids],
        "ask_px": [p for p, _ in asks],
        "ask_sz": [s for _, s in asks],
        "nonce": None,
    }


def test_real_detector_output_to_rows() -> None:
    from core.fees import FeeSchedule
    from pipeline.detect import book_rejections, detect_spreads
    from pipeline.detect_funding import detect_funding
    from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS

    books = pa.Table.from_pylist(
        [
            # binance asks 100 (20 BTC), okx bids 101 (50 BTC): 1k fills, 10k is short on the ask side
            _book("binance", "BTC/USDT", [(99.0, 5.0)], [(100.0, 20.0)]),
            _book("okx", "BTC/USDT", [(101.0, 50.0)], [(102.0, 50.0)]),
            _book("bybit", "BTC/USDT", [(99.5, 1.0)], [(99.0, 1.0)]),  # crossed
        ],
        schema=ORDER_BOOKS,
    )
    fees = FeeSchedule.build({"binance": {"spot_taker": 0.001}, "okx": {"spot_taker": 0.001}})
    now_ms = int(T0.timestamp() * 1000)
    spreads = detect_spreads(books, fees, now_ms=now_ms)
    assert spreads.height == 2  # binance → okx at 1k and 10k
    rejected = book_rejections(books, now_ms)

    (c,) = candidates_from_frame(spreads, detected_at=T0)
    assert (c.buy_exchange, c.sell_exchange, c.notional_usd) == ("binance", "okx", 1_000.0)
    assert c.net_bps == pytest.approx(((101 * 0.999 - 100 * 1.001) / (100 * 1.001)) * 10_000)
    assert c.details["alternatives"][0]["notional_usd"] == 10_000.0

    rows = events_to_table(OpportunityTracker().observe([c], T0)).to_pylist()
    assert [(r["event"], r["kind"], r["notional_usd"], r["pushable"]) for r in rows] == [
        ("opened", "spot_spread", 1_000.0, True)
    ]
    audit = validations_to_table(T0, book_rejections=rejected, candidates=spreads).to_pylist()
    assert [(r["buy_exchange"], r["stage"], r["outcome"], r["reason"]) for r in audit] == [
        ("bybit", "market", "fail", "crossed_book"),
        ("binance", "market", "pass", ""),
        ("binance", "market", "fail", "insufficient_depth"),
        ("binance", "score", "pass", ""),  # ~80 bps net, full depth, fresh: confidence 1
    ]

    funding = pa.Table.from_pylist(
        [
            {"ts": T0, "recv_ts": T0, "exchange": ex, "symbol": "BTC/USDT:USDT", "funding_rate": rate,
             "interval_hours": hours, "rate_per_hour": rate / hours, "funding_ts": None,
             "next_funding_ts": T0 + timedelta(hours=1), "next_funding_rate": None, "mark_price": 100.0,
             "index_price": None}
            for ex, rate, hours in [("binance", 0.0001, 8.0), ("okx", 0.0008, 4.0)]
        ],
        schema=FUNDING_RATES,
    )  # fmt: skip
    (f,) = candidates_from_frame(detect_funding(funding, fees, now_ms=now_ms), detected_at=T0)
    assert (f.kind, f.buy_exchange, f.sell_exchange) == (OpportunityKind.FUNDING_RATE, "binance", "okx")
    assert f.gross_apr is not None and f.gross_apr > 0 and "long_next_funding" in f.details
    (row,) = events_to_table(OpportunityTracker().observe([f], T0)).to_pylist()
    assert row["gross_apr"] == pytest.approx(f.gross_apr)


def test_rows_go_through_the_parquet_sink(tmp_path: Path) -> None:
    from core.settings import LakeSettings
    from pipeline.lake import Lake
    from pipeline.sink import ParquetSink

    settings = LakeSettings(url=str(tmp_path / "lake"))
    sink = ParquetSink(Lake.from_settings(settings), settings)
    tracker = OpportunityTracker()
    table = events_to_table(tracker.observe([cand()], T0) + tracker.observe([], T0 + timedelta(hours=1)))
    sink.add(OPPORTUNITIES_DATASET, table)
    assert sink.flush() == 2
    files = sorted((tmp_path / "lake" / "opportunities").rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["hour=12", "hour=13"]  # partitioned by detected_at
    back = pl.read_parquet(files)
    assert back.get_column("event").to_list() == ["opened", "closed"]
