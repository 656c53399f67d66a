"""ParquetSink on a local lake: thresholds, hour partitions, failures, compaction, recovery."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline import lake as lake_module
from pipeline.lake import Lake
from pipeline.schemas import QUOTES, TS
from pipeline.sink import COMPACTED_FROM_KEY, ParquetSink
from tests.support import make_quotes, ms

H0 = datetime(2024, 1, 1, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sink(tmp_path: Path, clock: Clock | None = None, **overrides: object) -> ParquetSink:
    settings = LakeSettings(url=str(tmp_path / "lake"), **overrides)  # type: ignore[arg-type]
    return ParquetSink(Lake.from_settings(settings), settings, clock=clock or Clock())


def read_all(sink: ParquetSink, dataset: str = "quotes") -> pa.Table:
    files = sink.lake.list_files(dataset)
    return pa.concat_tables([pq.read_table(f).cast(QUOTES) for f in files]) if files else QUOTES.empty_table()


def fail_writes(monkeypatch: pytest.MonkeyPatch, after: int = 0) -> list[int]:
    """Make local writes fail with ENOSPC once ``after`` writes have succeeded."""
    real = lake_module.os.fsync
    calls = [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(lake_module.os, "fsync", fsync)
    return calls


def test_flush_by_rows(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, flush_rows=100)
    sink.add("quotes", make_quotes(H0, 60))
    assert sink.lake.list_files("quotes") == []
    assert sink.buffered_rows("quotes") == 60
    sink.add("quotes", make_quotes(H0, 60, seed=1))
    assert len(sink.lake.list_files("quotes")) == 1
    assert sink.buffered_rows() == 0
    assert read_all(sink).num_rows == 120


def test_flush_by_bytes(tmp_path: Path) -> None:
    table = make_quotes(H0, 200)
    sink = make_sink(tmp_path, flush_bytes=table.nbytes * 2 - 1)
    sink.add("quotes", table)
    assert sink.lake.list_files("quotes") == []
    sink.add("quotes", table)
    assert len(sink.lake.list_files("quotes")) == 1


def test_flush_by_age_with_injected_clock(tmp_path: Path) -> None:
    clock = Clock()
    sink = make_sink(tmp_path, clock, flush_seconds=10.0)
    sink.add("quotes", make_quotes(H0, 10))
    clock.now += 5
    sink.add("quotes", make_quotes(H0, 10, seed=2))
    assert sink.maybe_flush() == 0
    assert sink.counters()["total"]["lag_s"] == pytest.approx(5.0)
    clock.now += 5
    assert sink.maybe_flush() == 1
    assert sink.buffered_rows() == 0
    assert sink.maybe_flush() == 0  # nothing buffered: cheap no-op
    assert read_all(sink).num_rows == 20


def test_hour_boundary_split_and_file_layout(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    start = datetime(2024, 1, 1, 23, 59, 30, tzinfo=UTC)
    sink.add("quotes", make_quotes(start, 60))  # 30 rows in hour 23, 30 in the next day's hour 0
    assert sink.flush() == 2
    files = sink.lake.list_files("quotes")
    assert [Path(f).parent.relative_to(Path(sink.lake.root)).as_posix() for f in files] == [
        "market-data/quotes/year=2024/month=01/day=01/hour=23",
        "market-data/quotes/year=2024/month=01/day=02/hour=00",
    ]
    first = Path(files[0]).name
    assert first.startswith(f"part-{ms(start):013d}-") and first.endswith(".parquet")
    for f in files:
        table = pq.read_table(f)
        assert table.num_rows == 30
        assert table.column_names == QUOTES.names  # no hive columns inside the files
        assert table.schema.field("ts").type == TS
        assert not table.schema.field("ts").nullable
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).statistics.has_min_max
    assert sorted(read_all(sink).column("ts").to_pylist()) == make_quotes(start, 60).column("ts").to_pylist()


def test_counters(tmp_path: Path) -> None:
    clock = Clock()
    sink = make_sink(tmp_path, clock)
    table = make_quotes(H0, 50)
    sink.add("quotes", table)
    clock.now += 2
    before = sink.counters()
    assert before["datasets"]["quotes"]["buffered_rows"] == 50
    assert before["datasets"]["quotes"]["lag_s"] == pytest.approx(2.0)
    sink.flush()
    after = sink.counters()
    q = after["datasets"]["quotes"]
    assert q["rows_in"] == q["rows_written"] == 50
    assert q["arrow_bytes"] == table.nbytes
    assert q["parquet_bytes"] == Path(sink.lake.list_files("quotes")[0]).stat().st_size
    assert (q["files"], q["flushes"], q["errors"], q["buffered_rows"], q["lag_s"]) == (1, 1, 0, 0, 0.0)
    assert after["total"]["rows_written"] == 50


def test_failed_write_keeps_rows_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = make_sink(tmp_path, flush_rows=100)
    fail_writes(monkeypatch)
    sink.add("quotes", make_quotes(H0, 150))  # reaches flush_rows: add() must not raise
    with pytest.raises(LakeError, match="no space left"):
        sink.flush()
    root = Path(sink.lake.root)
    assert [p for p in root.rglob("*") if p.is_file()] == []  # no partial file, no temp file
    assert sink.buffered_rows("quotes") == 150
    assert sink.counters()["total"]["errors"] == 2
    monkeypatch.undo()
    assert sink.flush() == 1
    assert read_all(sink).num_rows == 150
    assert sink.buffered_rows() == 0


def test_partial_failure_across_hours_never_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = make_sink(tmp_path)
    sink.add("quotes", make_quotes(datetime(2024, 1, 1, 0, 59, tzinfo=UTC), 120))  # 60 rows in each hour
    fail_writes(monkeypatch, after=1)
    with pytest.raises(LakeError):
        sink.flush()
    assert len(sink.lake.list_files("quotes")) == 1
    assert sink.buffered_rows("quotes") == 60
    monkeypatch.undo()
    sink.flush()
    ts = read_all(sink).column("ts").to_pylist()
    assert len(ts) == len(set(ts)) == 120


def test_buffer_is_bounded_while_the_lake_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_quotes(H0, 100)
    sink = make_sink(tmp_path, flush_bytes=table.nbytes * 2)
    fail_writes(monkeypatch)
    for _ in range(20):
        sink.add("quotes", table)
    counters = sink.counters()["datasets"]["quotes"]
    assert counters["buffered_bytes"] <= 4 * sink.settings.flush_bytes
    assert counters["dropped_rows"] > 0
    assert counters["buffered_rows"] + counters["dropped_rows"] == 2000


def test_other_datasets_use_their_own_schema_and_time_column(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    detected = pa.array([ms(H0), ms(H0) + 3_600_000], pa.timestamp("ms", tz="UTC"))
    sink.add(
        "opportunities",
        pa.table({"opportunity_id": ["a", "b"], "detected_at": detected, "net_bps": [1.5, 2.0]}),
    )
    sink.add("audit", pa.table({"ts": pa.array([ms(H0)], pa.timestamp("us")), "actor_id": [1], "ok": [True]}))
    sink.flush()
    assert len(sink.lake.list_files("opportunities")) == 2
    audit = pq.read_table(sink.lake.list_files("audit")[0])
    assert audit.schema.field("ts").type == TS
    with pytest.raises(ValueError, match="unknown dataset"):
        sink.add("nope", audit)
    with pytest.raises(ValueError, match="time column"):
        sink.add("session_events", pa.table({"user_id": [1]}))
    with pytest.raises(ValueError, match="lacks columns"):
        sink.add("quotes", pa.table({"ts": detected}))


def _four_files(sink: ParquetSink) -> None:
    for i in range(4):
        sink.add("quotes", make_quotes(datetime(2024, 1, 1, 0, 10 * i, tzinfo=UTC), 25, seed=i))
        sink.flush()


def test_compaction_merges_closed_hours_and_deletes_sources(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, compact_min_files=4)
    _four_files(sink)
    sources = sink.lake.list_files("quotes")
    assert len(sources) == 4
    assert sink.compact("quotes", datetime(2024, 1, 1, 1, 2, tzinfo=UTC)) == 0  # within the grace period
    assert sink.compact("quotes", datetime(2024, 1, 1, 2, tzinfo=UTC)) == 1
    files = sink.lake.list_files("quotes")
    assert len(files) == 1 and Path(files[0]).name.startswith(f"compact-{ms(H0):013d}-")
    merged = pq.read_table(files[0])
    assert merged.num_rows == 100 and merged.column_names == QUOTES.names
    assert merged.column("ts").to_pylist() == sorted(merged.column("ts").to_pylist())
    listed = json.loads(pq.read_metadata(files[0]).metadata[COMPACTED_FROM_KEY.encode()])
    assert listed == [Path(s).name for s in sources]
    assert sink.counters()["datasets"]["quotes"]["compacted_files"] == 4
    assert sink.compact("quotes", datetime(2024, 1, 2, tzinfo=UTC)) == 0  # nothing left to merge


def test_recover_after_crash_between_compaction_write_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = make_sink(tmp_path, compact_min_files=4)
    _four_files(sink)

    def crash(paths: object) -> None:
        raise LakeError("process died")

    monkeypatch.setattr(sink.lake, "delete", crash)
    with pytest.raises(LakeError):
        sink.compact("quotes", datetime(2024, 1, 2, tzinfo=UTC))
    monkeypatch.undo()
    assert len(sink.lake.list_files("quotes")) == 5  # merged file + its 4 sources: duplicates
    leftover = Path(sink.lake.list_files("quotes")[0]).parent / ".part-9-x.parquet.abcd.tmp"
    leftover.write_bytes(b"half a file")

    fresh = make_sink(tmp_path, compact_min_files=4)  # a restarted process
    assert fresh.recover() == {"temp_deleted": 1, "sources_deleted": 4}
    files = fresh.lake.list_files("quotes")
    assert len(files) == 1 and Path(files[0]).name.startswith("compact-")
    ts = read_all(fresh).column("ts").to_pylist()
    assert len(ts) == len(set(ts)) == 100
    assert not leftover.exists()
    assert fresh.recover() == {"temp_deleted": 0, "sources_deleted": 0}


def test_schema_less_dataset_keeps_new_columns_and_survives_clashes(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    at = pa.array([ms(H0)], pa.timestamp("ms", tz="UTC"))
    sink.add("audit", pa.table({"ts": at, "actor_id": [1], "action": ["a"], "ok": [True]}))
    sink.add("audit", pa.table({"ts": at, "actor_id": [2], "action": ["b"], "ok": [False], "detail": ["x"]}))
    sink.flush()
    (only,) = sink.lake.list_files("audit")
    table = pq.read_table(only)
    assert table.column("detail").to_pylist() == [None, "x"]
    sink.add("audit", pa.table({"ts": at, "actor_id": [3], "ok": [True]}))
    sink.add("audit", pa.table({"ts": at, "actor_id": ["not-an-int"], "ok": [True]}))
    assert sink.flush() == 2  # cannot be unified: one file each, nothing lost
    assert sink.counters()["datasets"]["audit"]["rows_written"] == 4


def test_compaction_writes_files_of_at_least_the_target(tmp_path: Path) -> None:
    """Ten small files of a closed hour, a target of three of the largest: every merged file
    comes from at least the target's worth of sources (the remainder joins the last group)."""
    sink = make_sink(tmp_path, compact_min_files=4)
    for i in range(10):
        sink.add("quotes", make_quotes(datetime(2024, 1, 1, 0, 5 * i, tzinfo=UTC), 200, seed=i))
        sink.flush()
    sizes = sink.lake.file_sizes("quotes")
    sink.compact_target_bytes = 3 * max(sizes.values())
    written = sink.compact("quotes", datetime(2024, 1, 1, 2, tzinfo=UTC))
    merged = sink.lake.list_files("quotes")
    assert 2 <= written == len(merged) <= 3
    seen: list[str] = []
    for path in merged:
        sources = json.loads(pq.read_metadata(path).metadata[COMPACTED_FROM_KEY.encode()])
        assert sum(sizes[f"{Path(path).parent}/{name}"] for name in sources) >= sink.compact_target_bytes
        seen += sources
    assert sorted(seen) == sorted(Path(p).name for p in sizes)
    assert sum(pq.read_metadata(p).num_rows for p in merged) == 2000
    assert sink.compact("quotes", datetime(2024, 1, 2, tzinfo=UTC)) == 0  # fewer than compact_min_files
