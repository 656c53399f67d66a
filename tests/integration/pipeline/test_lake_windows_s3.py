"""Windowed reads, schema versions and retention on an S3 lake (SeaweedFS): the hive-tree walk
lists through s3fs, Polars reads through object_store, DuckDB through the registered s3fs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.query import connect, scan
from pipeline.retention import prune
from pipeline.versions import REGISTRY
from tests.support.lake_versions import older_release, rows, write_file

T0 = datetime(2025, 2, 27, 22, tzinfo=UTC)  # the window crosses a month end


def test_windows_versions_and_retention_on_s3(s3_lake_settings: LakeSettings) -> None:
    lake = Lake.from_settings(s3_lake_settings.model_copy(update={"trace_path": ""}))
    entry = older_release("quotes")
    for hours in range(0, 72, 6):  # three days, hours 22, 04, 10, 16, …
        at = T0 + timedelta(hours=hours)
        schema = entry.schema_at(1) if hours < 36 else REGISTRY["quotes"].schema
        write_file(lake, "quotes", rows(schema, 10, at, tag="x"), at)
    start, end = T0 + timedelta(hours=24), T0 + timedelta(hours=48)  # 02-28 22:00 .. 03-01 22:00
    files = lake.window_files("quotes", start, end)
    assert len(files) == 4 and all(path.startswith(lake.root) for path in files)
    frame = scan("quotes", start, end, lake=lake).collect()
    assert frame.height == 40
    added = entry.history[-1].added
    assert frame.filter(pl.col("ts") < T0 + timedelta(hours=36))[added[0]].null_count() == 20  # older rows
    con = connect(lake, datasets=["quotes"], start=start, end=end)
    try:
        assert con.sql(f"SELECT count(*), count({added[0]}) FROM quotes").fetchall() == [(40, 20)]
    finally:
        con.close()
    report = prune(lake, {"quotes": 1.0}, T0 + timedelta(days=3))
    assert report.partitions == 8  # the hours wholly before 03-01 22:00 (and not that one)
    assert len(lake.list_files("quotes")) == 4
    assert prune(lake, {"quotes": 1.0}, T0 + timedelta(days=3), dry_run=True).partitions == 0
