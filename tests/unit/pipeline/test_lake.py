"""Lake: naming, atomic writes, listing, error translation (local filesystem)."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline import lake as lake_module
from pipeline.lake import Lake, hour_of, is_temp_name


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))


def test_from_settings_paths(tmp_path: Path) -> None:
    assert Lake.from_settings(LakeSettings(url=f"file://{tmp_path}/a")).root == f"{tmp_path}/a"
    local = Lake.from_settings(LakeSettings(url=str(tmp_path / "b")))
    assert local.is_local and local.uri(local.root) == str(tmp_path / "b")
    s3 = Lake.from_settings(
        LakeSettings(url="s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:9", anonymous=True)
    )
    assert not s3.is_local
    assert s3.root == "bucket/some/prefix"
    assert s3.uri(s3.dataset_root("quotes")) == "s3://bucket/some/prefix/market-data/quotes"
    assert s3.storage_options["aws_endpoint_url"] == "http://127.0.0.1:9"
    assert s3.storage_options["aws_skip_signature"] == "true"
    with pytest.raises(LakeError, match="unsupported"):
        Lake.from_settings(LakeSettings(url="gs://nope"))
    with pytest.raises(LakeError, match="bucket"):
        Lake.from_settings(LakeSettings(url="s3://"))


def test_partition_path_is_zero_padded_utc(lake: Lake) -> None:
    when = datetime(2024, 3, 5, 7, tzinfo=UTC)
    assert (
        lake.partition_path("quotes", when)
        == f"{lake.root}/market-data/quotes/year=2024/month=03/day=05/hour=07"
    )
    plus2 = datetime(2024, 3, 5, 9, tzinfo=timezone(timedelta(hours=2)))
    assert lake.partition_path("quotes", plus2).endswith("year=2024/month=03/day=05/hour=07")
    assert hour_of(lake.partition_path("audit", when) + "/x.parquet") == when
    with pytest.raises(ValueError):
        lake.partition_path("quotes", datetime(2024, 1, 1))
    with pytest.raises(LakeError, match="unknown dataset"):
        lake.dataset_root("nope")


def test_write_atomic_leaves_only_the_file(lake: Lake) -> None:
    path = lake.partition_path("quotes", datetime(2024, 1, 1, tzinfo=UTC)) + "/part-1-abc.parquet"
    lake.write_atomic(path, b"x" * 100_000)
    directory = Path(path).parent
    assert sorted(os.listdir(directory)) == ["part-1-abc.parquet"]
    assert Path(path).read_bytes() == b"x" * 100_000
    assert lake.exists(path)
    assert lake.list_files("quotes") == [path]
    assert lake.read_bytes(path) == b"x" * 100_000


def test_write_failure_disk_full_leaves_nothing(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lake_module.os, "fsync", full)
    path = lake.partition_path("quotes", datetime(2024, 1, 1, tzinfo=UTC)) + "/part-1-abc.parquet"
    with pytest.raises(LakeError, match="no space left"):
        lake.write_atomic(path, b"y" * 10_000)
    assert os.listdir(Path(path).parent) == []
    assert lake.list_files("quotes") == []
    assert lake.list_files("quotes", temp=True) == []


def test_list_files_skips_temp_and_other_files(lake: Lake) -> None:
    directory = Path(lake.partition_path("audit", datetime(2024, 1, 1, tzinfo=UTC)))
    directory.mkdir(parents=True)
    (directory / "part-1-a.parquet").write_bytes(b"1")
    (directory / ".part-2-b.parquet.1234.tmp").write_bytes(b"2")
    (directory / "notes.txt").write_bytes(b"3")
    assert [Path(p).name for p in lake.list_files("audit")] == ["part-1-a.parquet"]
    temps = lake.list_files("audit", temp=True)
    assert [Path(p).name for p in temps] == [".part-2-b.parquet.1234.tmp"]
    assert is_temp_name(".part-2-b.parquet.1234.tmp")
    assert lake.file_sizes("audit") == {str(directory / "part-1-a.parquet"): 1}
    lake.delete([*temps, str(directory / "missing.parquet")])
    assert lake.list_files("audit", temp=True) == []
    assert lake.list_files("quotes") == []  # no directory yet


def test_ping(lake: Lake, tmp_path: Path) -> None:
    lake.ping()
    assert Path(lake.root).is_dir()
    blocked = tmp_path / "file-not-dir"
    blocked.write_bytes(b"")
    with pytest.raises(LakeError, match="ping"):
        Lake.from_settings(LakeSettings(url=str(blocked / "lake"))).ping()


def test_write_atomic_with_a_writer_that_dies_half_way(lake: Lake) -> None:
    path = lake.partition_path("quotes", datetime(2024, 1, 1, tzinfo=UTC)) + "/part-2-def.parquet"

    def writer(target: object) -> None:
        assert isinstance(target, str) and Path(target).name.startswith(".part-2-def.parquet.")
        Path(target).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(LakeError, match="no space left"):
        lake.write_atomic_with(path, writer)
    assert os.listdir(Path(path).parent) == []
    assert lake.write_atomic_with(path, lambda target: Path(str(target)).write_bytes(b"whole")) == 5
    assert sorted(os.listdir(Path(path).parent)) == ["part-2-def.parquet"]


def test_has_files_ignores_temp_files_and_empty_directories(lake: Lake) -> None:
    assert not lake.has_files("quotes")
    early = Path(lake.partition_path("quotes", datetime(2024, 1, 1, tzinfo=UTC)))
    early.mkdir(parents=True)
    (early / ".part-1-a.parquet.x.tmp").write_bytes(b"")
    Path(lake.partition_path("quotes", datetime(2024, 1, 2, tzinfo=UTC))).mkdir(parents=True)
    assert not lake.has_files("quotes")
    late = lake.partition_path("quotes", datetime(2024, 2, 1, 5, tzinfo=UTC)) + "/part-9-z.parquet"
    lake.write_atomic(late, b"x")
    assert lake.has_files("quotes")
    assert not lake.has_files("audit")
