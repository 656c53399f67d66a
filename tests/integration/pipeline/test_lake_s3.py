"""The sink and the query layer against a real S3 server (SeaweedFS) over ``s3://``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.query import format_table, hour_filter, hour_filter_expr, run_query, scan
from pipeline.sink import COMPACTED_FROM_KEY, ParquetSink
from tests.support import make_quotes
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration

H0 = datetime(2024, 1, 1, 0, tzinfo=UTC)


def test_write_and_read_back_through_duckdb_and_polars(s3_lake_settings: LakeSettings) -> None:
    lake = Lake.from_settings(s3_lake_settings)
    lake.ping()
    sink = ParquetSink(lake, s3_lake_settings)
    sink.add("quotes", make_quotes(H0, 3000, step_ms=3600))  # hours 00, 01, 02
    assert sink.flush() == 3
    files = lake.list_files("quotes")
    assert len(files) == 3 and all(f.startswith(lake.root + "/market-data/quotes/year=2024/") for f in files)

    window = hour_filter(datetime(2024, 1, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=UTC))
    table = run_query(
        lake, f"SELECT hour, count(*) AS n, min(ts) AS first FROM quotes WHERE {window} GROUP BY hour"
    )
    rows = json.loads(str(format_table(table, "json")))
    assert rows == [{"hour": 1, "n": 1000, "first": "2024-01-01T01:00:00.000Z"}]
    assert run_query(lake, "SELECT count(*) AS n FROM order_books").to_pylist() == [{"n": 0}]

    frame = scan(lake, "quotes")
    out = (
        frame.filter(hour_filter_expr(H0, datetime(2024, 1, 1, 2, tzinfo=UTC)))
        .group_by("hour")
        .len()
        .collect()
    )
    assert sorted(out.rows()) == [(0, 1000), (1, 1000)]
    assert frame.select("ts").collect().height == 3000


def test_compaction_and_recovery_on_s3(
    s3_lake_settings: LakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake.from_settings(s3_lake_settings)
    sink = ParquetSink(lake, s3_lake_settings)
    for i in range(3):
        sink.add("quotes", make_quotes(datetime(2024, 1, 1, 0, 10 * i, tzinfo=UTC), 100, seed=i))
        sink.flush()
    sink.add("quotes", make_quotes(datetime(2024, 1, 1, 1, tzinfo=UTC), 100, seed=9))
    sink.flush()
    sources = lake.list_files("quotes", hour=H0)
    assert len(sources) == 3

    def crash(paths: object) -> None:
        raise LakeError("process died between compaction write and delete")

    monkeypatch.setattr(lake, "delete", crash)
    with pytest.raises(LakeError):
        sink.compact("quotes", datetime(2024, 1, 2, tzinfo=UTC))
    monkeypatch.undo()
    assert run_query(lake, "SELECT count(*) AS n FROM quotes").to_pylist() == [{"n": 700}]  # duplicated

    assert ParquetSink(lake, s3_lake_settings).recover() == {"temp_deleted": 0, "sources_deleted": 3}
    files = lake.list_files("quotes", hour=H0)
    assert len(files) == 1 and files[0].rsplit("/", 1)[1].startswith("compact-")
    with lake.open(files[0]) as f:
        listed = json.loads(pq.read_metadata(f).metadata[COMPACTED_FROM_KEY.encode()])
    assert listed == [s.rsplit("/", 1)[1] for s in sources]
    counts = run_query(
        lake, "SELECT hour, count(*) AS n, count(DISTINCT ts) AS d FROM quotes GROUP BY ALL ORDER BY 1"
    )
    assert counts.to_pylist() == [{"hour": 0, "n": 300, "d": 300}, {"hour": 1, "n": 100, "d": 100}]
    assert sink.compact("quotes", datetime(2024, 1, 2, tzinfo=UTC)) == 0  # hour 01 has one file only


def test_ping_reports_an_unreachable_or_missing_bucket(
    s3_lake_settings: LakeSettings, seaweed: SeaweedS3
) -> None:
    Lake.from_settings(s3_lake_settings).ping()
    missing = s3_lake_settings.model_copy(update={"url": "s3://no-such-bucket-here/x"})
    with pytest.raises(LakeError, match="ping"):
        Lake.from_settings(missing).ping()
    down = s3_lake_settings.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(LakeError, match="ping"):
        Lake.from_settings(down).ping()
