"""Schema versions: a lake holding files of an older release and of today reads through every
reader (DuckDB views, Polars scans, the analytics report, the dashboard's data, compaction).

The older files are written by hand with pyarrow (``tests/support/lake_versions.py``): a
simulated version 1 that lacks two columns today's schema has and carries a third under
its old name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.settings import LakeSettings
from pipeline import analytics as an
from pipeline import versions as pv
from pipeline.lake import Lake
from pipeline.query import PARTITION_COLUMNS, connect, scan
from pipeline.schemas import DATASET_PATHS
from pipeline.sink import ParquetSink
from serve.dashboard import dashboard_data
from state.audit import AUDIT as BOT_AUDIT
from state.payments import PAYMENTS as BOT_PAYMENTS
from state.sessions import SESSION_EVENTS as BOT_SESSION_EVENTS
from tests.support.lake_versions import rows, simulated_history, write_file

T0 = datetime(2025, 3, 4, 10, tzinfo=UTC)
OLD_ROWS, NEW_ROWS = 3, 2


def test_every_column_of_every_dataset_has_a_version() -> None:
    """A column added to a writer's schema without a Change in pipeline/versions.py fails here."""
    assert set(pv.REGISTRY) == set(DATASET_PATHS)
    for name, entry in pv.REGISTRY.items():
        assert entry.unaccounted() == [], f"{name}: add a Change for {entry.unaccounted()}"


def test_unaccounted_names_a_column_added_without_a_change() -> None:
    entry = pv.REGISTRY["quotes"]
    grown = pa.schema([*entry.schema, pa.field("mid", pa.float64())])
    bare = pv.DatasetVersions("quotes", grown, entry.history, entry.first)
    assert bare.unaccounted() == ["mid"]
    told = pv.DatasetVersions(
        "quotes", grown, (*entry.history, pv.Change(2, "mid price", added=("mid",))), entry.first
    )
    assert told.unaccounted() == []
    assert told.schema_at(1).names == entry.schema.names


def test_registry_mirrors_the_bot_writers_schemas() -> None:
    assert pv.SESSION_EVENTS.equals(BOT_SESSION_EVENTS)
    assert pv.AUDIT.equals(BOT_AUDIT)
    assert pv.PAYMENTS.equals(BOT_PAYMENTS)


def test_schema_at_and_conform_undo_and_redo_a_history() -> None:
    entry = simulated_history("deliveries")
    change = entry.history[-1]
    old = entry.schema_at(1)
    for name in change.added:
        assert name not in old.names
    ((old_name, new_name),) = change.renamed
    assert old_name in old.names and new_name not in old.names
    table = rows(old, 2, T0, tag="old")
    conformed = entry.conform(table)
    assert conformed.schema.names == entry.schema.names
    assert (
        conformed[new_name].to_pylist() == table[old_name].cast(entry.schema.field(new_name).type).to_pylist()
    )
    for name in change.added:
        assert conformed[name].null_count == 2


@pytest.fixture
def mixed_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Lake, dict[str, pv.DatasetVersions]]:
    """Every dataset: an hour of version-1 files (older release) and an hour of today's."""
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    registry = {name: simulated_history(name) for name in DATASET_PATHS}
    for name, entry in registry.items():
        write_file(lake, name, rows(entry.schema_at(1), OLD_ROWS, T0, tag="old"), T0)
        later = T0 + timedelta(hours=1)
        write_file(lake, name, rows(entry.schema, NEW_ROWS, later, tag="new"), later)
        monkeypatch.setitem(pv.REGISTRY, name, entry)  # the readers' default registry
    return lake, registry


def _check(name: str, entry: pv.DatasetVersions, frame: pl.DataFrame) -> None:
    change = entry.history[-1]
    assert frame.columns == [*entry.schema.names, *PARTITION_COLUMNS], name
    assert frame.height == OLD_ROWS + NEW_ROWS, name
    frame = frame.sort(entry.time_column)
    old, new = frame.head(OLD_ROWS), frame.tail(NEW_ROWS)
    for added in change.added:  # null in the older files, present in today's
        assert old[added].null_count() == OLD_ROWS, (name, added)
        assert new[added].null_count() == 0, (name, added)
    written = rows(entry.schema_at(1), OLD_ROWS, T0, tag="old")
    for old_name, new_name in change.renamed:  # the old name's values under the new name
        expected = pl.Series(written[old_name].to_pylist()).cast(old[new_name].dtype)
        assert old[new_name].to_list() == expected.to_list(), (name, new_name)
        assert old[new_name].null_count() == 0
    assert old["hour"].to_list() == [T0.hour] * OLD_ROWS


@pytest.mark.parametrize("dataset", sorted(DATASET_PATHS))
def test_duckdb_views_read_every_version(
    dataset: str, mixed_lake: tuple[Lake, dict[str, pv.DatasetVersions]]
) -> None:
    lake, registry = mixed_lake
    con = connect(lake, datasets=[dataset])
    try:
        table = con.sql(f'SELECT * FROM "{dataset}"').to_arrow_table()
    finally:
        con.close()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    _check(dataset, registry[dataset], frame)


@pytest.mark.parametrize("dataset", sorted(DATASET_PATHS))
def test_polars_scans_read_every_version(
    dataset: str, mixed_lake: tuple[Lake, dict[str, pv.DatasetVersions]]
) -> None:
    lake, registry = mixed_lake
    _check(dataset, registry[dataset], scan(dataset, lake=lake).collect())
    windowed = scan(dataset, T0, T0 + timedelta(hours=2), lake=lake).collect()
    _check(dataset, registry[dataset], windowed)
    # the older-shaped file first or last: the scan's schema does not come from one file
    assert scan(dataset, T0 + timedelta(hours=1), lake=lake).collect().height == NEW_ROWS


def test_report_and_dashboard_read_every_version(
    mixed_lake: tuple[Lake, dict[str, pv.DatasetVersions]],
) -> None:
    lake, registry = mixed_lake
    now = T0 + timedelta(hours=3)
    tables = an.report(lake, None, now=now)
    summary = tables["summary"].to_pylist()[0]
    assert summary["sent"] == OLD_ROWS + NEW_ROWS  # every deliveries row is 'sent'
    by_kind = {r["kind"]: r for r in tables["opportunities_by_kind"].to_pylist()}
    assert by_kind["spot_spread"]["opened"] == OLD_ROWS + NEW_ROWS
    fresh = tables["data_freshness"].to_pylist()
    assert [(r["exchange"], r["quotes"]) for r in fresh] == [("binance", OLD_ROWS + NEW_ROWS)]
    renamed = dict(registry["deliveries"].history[-1].renamed)
    assert renamed  # the figures above crossed a renamed deliveries column
    data = dashboard_data(lake, window=timedelta(hours=6), now=now)
    assert data["summary"]["sent"] == OLD_ROWS + NEW_ROWS
    assert sum(r["opened"] for r in data["opportunities_by_kind"]) == OLD_ROWS + NEW_ROWS


@pytest.mark.parametrize("dataset", ["quotes", "deliveries", "opportunities", "audit"])
def test_compaction_rewrites_older_files_in_todays_shape(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    entry = simulated_history(dataset)
    monkeypatch.setitem(pv.REGISTRY, dataset, entry)
    for i in range(2):
        write_file(
            lake, dataset, rows(entry.schema_at(1), OLD_ROWS, T0 + timedelta(minutes=10 * i), tag="old"), T0
        )
        write_file(lake, dataset, rows(entry.schema, NEW_ROWS, T0 + timedelta(minutes=30 + i), tag="new"), T0)
    sink = ParquetSink(lake, LakeSettings(url=lake.root, compact_min_files=4))
    assert sink.compact(dataset, T0 + timedelta(hours=2)) == 1
    (merged,) = lake.list_files(dataset)
    meta = pq.read_metadata(merged).metadata
    assert meta[pv.VERSION_KEY.encode()] == f"{dataset}@2".encode()
    assert pq.read_schema(merged).names == entry.schema.names
    frame = scan(dataset, lake=lake).collect()
    assert frame.height == 2 * (OLD_ROWS + NEW_ROWS)
    ((_old, new_name),) = entry.history[-1].renamed
    assert frame[new_name].null_count() == 0


def test_the_sink_stamps_the_version(tmp_path: Path) -> None:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    sink = ParquetSink(lake, LakeSettings(url=lake.root))
    sink.add("quotes", rows(pv.REGISTRY["quotes"].schema, 2, T0, tag="x"))
    sink.flush()
    (path,) = lake.list_files("quotes")
    assert pq.read_metadata(path).metadata[pv.VERSION_KEY.encode()] == b"quotes@1"
