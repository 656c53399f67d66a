"""``arbflow query`` and ``arbflow report`` (subprocesses, the real registry) on a lake that holds
files of an older release, lacking columns today's writers add, beside today's files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.schemas import DATASET_PATHS
from tests.support.cli import cli_env, run_cli
from tests.support.lake_versions import older_release, rows, write_file

T0 = datetime(2025, 3, 4, 10, tzinfo=UTC)


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    for name in DATASET_PATHS:
        entry = older_release(name)
        write_file(lake, name, rows(entry.schema_at(1), 3, T0, tag="old"), T0)
        write_file(
            lake, name, rows(entry.schema, 2, T0 + timedelta(hours=1), tag="new"), T0 + timedelta(hours=1)
        )
    return tmp_path


@pytest.mark.timeout(240)
def test_query_and_report_read_an_older_release_beside_todays(lake_dir: Path) -> None:
    env = cli_env(lake_dir, redis_url="", label="lake-versions")
    added = older_release("deliveries").history[-1].added
    counts = ", ".join(f"count({c}) AS {c}" for c in added)
    sql = f"SELECT count(*) AS n, {counts} FROM deliveries"
    proc = run_cli(["query", sql, "--format", "json"], env, 60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 5, **{c: 2 for c in added}}]
    every = ", ".join(f'(SELECT count(*) FROM "{name}") AS "{name}"' for name in DATASET_PATHS)
    proc = run_cli(["query", f"SELECT {every}", "--format", "json"], env, 60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [dict.fromkeys(DATASET_PATHS, 5)]
    proc = run_cli(["report", "--since", "all", "--format", "json"], env, 60)
    assert proc.returncode == 0, proc.stderr
    tables = json.loads(proc.stdout)["tables"]
    assert tables["summary"][0]["sent"] == 5
    assert {r["kind"]: r["opened"] for r in tables["opportunities_by_kind"]} == {"spot_spread": 5}
