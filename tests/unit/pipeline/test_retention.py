"""Retention: which hour partitions expire, the dry run against the real run, idempotence,
the settings, and the sink's scheduled prune (plain class; the actor in tests/integration)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.sink import LakeSink
from core.errors import LakeError
from core.settings import LakeSettings, Settings
from pipeline.lake import Lake
from pipeline.retention import cutoff, plan, prune
from pipeline.versions import REGISTRY
from serve.cli import app
from tests.support.lake_versions import rows, write_file

NOW = datetime(2025, 6, 30, 12, 20, tzinfo=UTC)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """quotes, order_books and opportunities in hours 40, 31, 30 (and a bit), 8, 6 and 0 days back."""
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "lake")))
    for name in ("quotes", "order_books", "opportunities"):
        for back in (timedelta(days=40), timedelta(days=31), timedelta(days=30, hours=1), timedelta(days=30),
                     timedelta(days=8), timedelta(days=6), timedelta(0)):  # fmt: skip
            hour = (NOW - back).replace(minute=0)
            write_file(lake, name, rows(REGISTRY[name].schema, 2, hour, tag="x"), hour)
    return lake


def test_the_hours_wholly_before_the_cutoff_expire(lake: Lake) -> None:
    retention = LakeSettings().retention  # defaults: order_books 7, quotes 30, the rest kept
    assert retention == {"order_books": 7.0, "quotes": 30.0}
    expired = plan(lake, retention, NOW)
    by = {(e.dataset, e.hour) for e in expired}
    q_cut, ob_cut = cutoff(NOW, 30), cutoff(NOW, 7)
    assert q_cut == datetime(2025, 5, 31, 12, tzinfo=UTC)
    # 30 days back is the hour 12:00 holding now - 30 d (12:20): it is kept; 30 d 1 h back is not.
    assert {h for d, h in by if d == "quotes"} == {
        NOW.replace(minute=0) - timedelta(days=40),
        NOW.replace(minute=0) - timedelta(days=31),
        NOW.replace(minute=0) - timedelta(days=30, hours=1),
    }
    assert {h for d, h in by if d == "order_books"} == {
        NOW.replace(minute=0) - timedelta(days=d) for d in (40, 31, 8)
    } | {NOW.replace(minute=0) - timedelta(days=30, hours=1), NOW.replace(minute=0) - timedelta(days=30)}
    assert not [e for e in expired if e.dataset == "opportunities"]  # kept forever
    assert all(e.hour < (q_cut if e.dataset == "quotes" else ob_cut) for e in expired)


def test_the_dry_run_lists_exactly_what_the_run_deletes(lake: Lake) -> None:
    retention = {"quotes": 30.0, "order_books": 7.0}
    before = {n: set(lake.list_files(n)) for n in ("quotes", "order_books", "opportunities")}
    dry = prune(lake, retention, NOW, dry_run=True)
    assert dry.partitions == 8 and {n: set(lake.list_files(n)) for n in before} == before  # nothing gone
    listed = {p for e in dry.expired for p in e.files}
    real = prune(lake, retention, NOW)
    assert [(e.dataset, e.hour, e.files) for e in real.expired] == [
        (e.dataset, e.hour, e.files) for e in dry.expired
    ]
    after = {n: set(lake.list_files(n)) for n in before}
    gone = set().union(*before.values()) - set().union(*after.values())
    assert gone == listed and real.deleted_files == len(listed)
    for e in real.expired:  # local: the emptied hour directories are removed too
        assert not os.path.exists(lake.partition_path(e.dataset, e.hour))
    again = prune(lake, retention, NOW)  # idempotent
    assert again.expired == [] and again.deleted_files == 0


def test_retention_settings() -> None:
    assert LakeSettings(retention="quotes=60").retention == {"order_books": 7.0, "quotes": 60.0}
    assert LakeSettings(retention='{"order_books": 0, "audit": 365}').retention == {
        "order_books": 0.0,
        "quotes": 30.0,
        "audit": 365.0,
    }
    with pytest.raises(ValueError, match="dataset=days"):
        LakeSettings(retention="quotes")
    with pytest.raises(ValueError, match=">= 0"):
        LakeSettings(retention="quotes=-1")


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBFLOW_LAKE__RETENTION", "order_books=3,validations=90")
    assert Settings().lake.retention == {"order_books": 3.0, "quotes": 30.0, "validations": 90.0}


def test_unknown_dataset_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(LakeError, match="unknown datasets \\['quote'\\]"):
        plan(lake, {"quote": 3}, NOW)


def test_zero_keeps_forever(lake: Lake) -> None:
    assert plan(lake, {"quotes": 0, "order_books": 0}, NOW) == []


def test_the_sink_prunes_on_its_timer(lake: Lake) -> None:
    settings = Settings(lake={"url": lake.root, "retention_every_s": 3600})
    sink = LakeSink(settings)
    assert sink._prune_due()  # the first tick prunes
    dry = sink.prune(dry_run=True, now=NOW.timestamp())
    report = sink.prune(now=NOW.timestamp())
    assert [e.files for e in report.expired] == [e.files for e in dry.expired] and report.partitions == 8
    stats = sink.counters()["retention"]
    assert stats["runs"] == 1 and stats["files"] == report.deleted_files
    assert LakeSink(Settings(lake={"url": lake.root, "retention_every_s": 0}))._prune_due() is False


def test_arbflow_lake_prune_cli(lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI at the wall clock: data 40 days back expires for quotes (30 d) and order_books (7 d)."""
    monkeypatch.setenv("ARBFLOW_LAKE__URL", lake.root)
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARBFLOW_LAKE__RETENTION", "quotes=30,order_books=7")
    monkeypatch.setenv("COLUMNS", "200")
    expected = plan(lake, {"quotes": 30, "order_books": 7}, datetime.now(UTC))
    assert expected  # NOW is in the past: every hour of the fixture but the newest is old
    dry = CliRunner().invoke(app, ["lake", "prune", "--dry-run", "--format", "json"])
    assert dry.exit_code == 0, dry.output
    listed = [(r["dataset"], r["hour"]) for r in json.loads(dry.output)["expired"]]
    assert listed == [(e.dataset, e.as_row()["hour"]) for e in expected]
    real = CliRunner().invoke(app, ["lake", "prune"])
    assert real.exit_code == 0 and "deleted" in real.output
    assert plan(lake, {"quotes": 30, "order_books": 7}, datetime.now(UTC)) == []
    monkeypatch.setenv("ARBFLOW_LAKE__RETENTION", "quote=3")
    bad = CliRunner().invoke(app, ["lake", "prune", "--dry-run"])
    assert bad.exit_code != 0 and "unknown datasets" in str(bad.exception or bad.output)
