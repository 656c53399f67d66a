"""DuckDB views and Polars scans over a local lake; output formats for the CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from rich.table import Table as RichTable

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.query import (
    LakeQuery,
    connect,
    format_table,
    hour_filter,
    hour_filter_expr,
    relation,
    run_query,
    scan,
    scan_all,
)
from pipeline.schemas import DATASET_PATHS, QUOTES
from pipeline.sink import ParquetSink
from tests.support import make_quotes

H0 = datetime(2024, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """Quotes in hours 00, 01, 02 (100 rows each) and a corrupt file in hour 05."""
    settings = LakeSettings(url=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    sink = ParquetSink(lake, settings)
    sink.add("quotes", make_quotes(H0, 300, step_ms=36_000))
    sink.flush()
    bad = lake.partition_path("quotes", datetime(2024, 1, 1, 5, tzinfo=UTC)) + "/part-0-corrupt.parquet"
    lake.write_atomic(bad, b"this is not parquet")
    return lake


def test_views_with_hive_partitions_and_pruning(lake: Lake) -> None:
    start, end = datetime(2024, 1, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=UTC)
    con = connect(lake, datasets=["quotes"], start=start, end=end)  # lists and reads hour 01 only
    try:
        where = hour_filter(start, end)
        sql = f"SELECT year, month, day, hour, count(*) AS n FROM quotes WHERE {where} GROUP BY ALL"
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    assert table.to_pylist() == [{"year": 2024, "month": 1, "day": 1, "hour": 1, "n": 100}]
    two_start, two_end = datetime(2024, 1, 1, 0, 30, tzinfo=UTC), datetime(2024, 1, 1, 2, 0, 1, tzinfo=UTC)
    con = connect(lake, datasets=["quotes"], start=two_start, end=two_end)
    try:
        assert con.sql("SELECT count(*) AS n FROM quotes").fetchall() == [(151,)]  # rows cut to the window
        assert relation("quotes", two_start, two_end, lake=lake).aggregate("count(*)").fetchall() == [(151,)]
    finally:
        con.close()
    # The whole-lake views read every file's footer (by name, for older versions): the
    # corrupt hour-05 file fails them, while the windows above never opened it.
    with pytest.raises(LakeError, match="could not open the lake"):
        run_query(lake, "SELECT count(*) FROM quotes WHERE ts < TIMESTAMPTZ '2024-01-01 01:00:00+00'")


def test_empty_and_missing_datasets(lake: Lake) -> None:
    with LakeQuery(lake, datasets=["order_books", "funding_rates", "opportunities"]) as q:
        assert q.sql("SELECT count(*) AS n FROM order_books").to_pylist() == [{"n": 0}]
        cols = q.sql("SELECT * FROM funding_rates").column_names
        assert cols[:3] == ["ts", "recv_ts", "exchange"] and cols[-4:] == ["year", "month", "day", "hour"]
        # every dataset has a known schema now: an empty view, not an error
        assert q.sql("SELECT count(*) AS n FROM opportunities").to_pylist() == [{"n": 0}]
    con = connect(lake, datasets=["quotes"], start=H0, end=H0 + timedelta(hours=3))
    try:
        assert con.sql("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
        names = {
            row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert {n for n in names if not n.startswith("__")} == {"quotes"}  # "__schema_…": its reading schema
    finally:
        con.close()


def test_polars_scan_with_partition_pruning(lake: Lake) -> None:
    frame = scan(lake, "quotes")  # the older form: the whole dataset, pruned by the filter
    window = hour_filter_expr(datetime(2024, 1, 1, 0, tzinfo=UTC), datetime(2024, 1, 1, 3, tzinfo=UTC))
    out = frame.filter(window).group_by("hour").len().sort("hour").collect()
    assert out.to_dicts() == [{"hour": h, "len": 100} for h in (0, 1, 2)]
    schema = frame.filter(window).collect_schema()
    assert schema["ts"] == pl.Datetime("ms", "UTC")
    assert schema["year"] == pl.Int32
    windowed = scan("quotes", H0 + timedelta(minutes=30), H0 + timedelta(hours=2), lake=lake)
    assert windowed.select(pl.len()).collect().item() == 150
    frames = scan_all(lake, H0, H0 + timedelta(hours=3))
    assert set(frames) == set(DATASET_PATHS)
    assert frames["order_books"].collect().height == 0
    assert scan(lake, "audit").collect().height == 0  # no files yet: an empty frame of its schema


def test_format_json_csv_table() -> None:
    table = pa.table(
        {
            "ts": pa.array([1_704_067_200_123, None], pa.timestamp("ms", tz="UTC")),
            "naive": pa.array([0, 1], pa.timestamp("us")),
            "symbol": ["BTC/USDT", "ETH/USDT"],
            "bid": [1.5, float("nan")],
            "levels": [[1.0, 2.0], []],
        }
    )
    rows = json.loads(str(format_table(table, "json")))
    assert isinstance(rows, list) and len(rows) == 2
    assert rows[0] == {
        "ts": "2024-01-01T00:00:00.123Z",
        "naive": "1970-01-01T00:00:00.000Z",
        "symbol": "BTC/USDT",
        "bid": 1.5,
        "levels": [1.0, 2.0],
    }
    assert rows[1]["ts"] is None and rows[1]["bid"] is None
    parsed = list(csv.reader(io.StringIO(str(format_table(table, "csv")))))
    assert parsed[0] == ["ts", "naive", "symbol", "bid", "levels"]
    assert parsed[1] == [
        "2024-01-01T00:00:00.123Z",
        "1970-01-01T00:00:00.000Z",
        "BTC/USDT",
        "1.5",
        "[1.0,2.0]",
    ]
    rich_table = format_table(table, "table")
    assert isinstance(rich_table, RichTable) and rich_table.row_count == 2
    assert json.loads(str(format_table(QUOTES.empty_table(), "json"))) == []
    with pytest.raises(ValueError):
        format_table(table, "xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2024, 1, 31, 22, 30, tzinfo=UTC), datetime(2024, 2, 1, 2, tzinfo=UTC)),
        (datetime(2023, 12, 31, 23, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)),
        (datetime(2024, 3, 1, 5, tzinfo=UTC), datetime(2024, 3, 1, 6, tzinfo=UTC)),
    ],
)
def test_hour_filter_keeps_exactly_the_hours_of_the_window(start: datetime, end: datetime) -> None:
    hours = [datetime(2023, 12, 30, tzinfo=UTC) + timedelta(hours=i) for i in range(24 * 70)]
    frame = pl.DataFrame(
        {
            "year": [h.year for h in hours],
            "month": [h.month for h in hours],
            "day": [h.day for h in hours],
            "hour": [h.hour for h in hours],
            "at": hours,
        }
    )
    expected = [h for h in hours if h + timedelta(hours=1) > start and h < end]
    assert frame.filter(hour_filter_expr(start, end))["at"].to_list() == expected
    con = duckdb.connect()
    try:
        con.register("hours", frame.to_arrow())
        got = con.sql(
            f"SELECT year, month, day, hour FROM hours WHERE {hour_filter(start, end)} ORDER BY ALL"
        )
        assert [datetime(y, m, d, h, tzinfo=UTC) for y, m, d, h in got.fetchall()] == expected
    finally:
        con.close()


def test_run_query_binds_only_the_datasets_it_names(lake: Lake) -> None:
    from pipeline.query import mentioned

    assert mentioned("SELECT count(*) FROM Quotes JOIN order_books USING (symbol)") == [
        "quotes",
        "order_books",
    ]
    assert mentioned("SELECT 1 AS quotes_like") == []
    # the corrupt quotes file is not opened by a query on another dataset
    assert run_query(lake, "SELECT count(*) AS n FROM funding_rates").to_pylist() == [{"n": 0}]


def test_window_listing_walks_only_the_windows_branches(lake: Lake, tmp_path: Path) -> None:
    """A trace of what a windowed read lists and reads; a stray directory that is no date is skipped."""
    Path(lake.dataset_root("quotes"), "year=2024", "month=02", "day=31").mkdir(parents=True)
    trace = tmp_path / "trace.tsv"
    lake.trace_path = str(trace)
    files = lake.window_files("quotes", H0 + timedelta(hours=1), H0 + timedelta(hours=2))
    assert [Path(p).parent.name for p in files] == ["hour=01"]
    lines = [line.split("\t") for line in trace.read_text().splitlines()]
    assert [(k, Path(w).name) for k, _, w in lines] == [("list", "day=01"), ("read", "hour=01")]
    assert lake.window_files("quotes", H0 + timedelta(days=40), None) == {}
