"""The demo's opportunity tables over a small lake (no Ray): edges of pushable opportunities
only, each kind in its unit, flagged ones apart by flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from core.settings import LakeSettings, Settings
from serve.demo import opportunity_tables
from serve.orchestrator import PipelineStats
from tests.unit.pipeline.test_analytics import sample_lake


def test_the_demo_summary_aggregates_pushable_edges_per_kind(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    sample_lake(tmp_path / "lake", now)
    settings = Settings(data_dir=tmp_path / "var", lake=LakeSettings(url=str(tmp_path / "lake")))
    tables = opportunity_tables(settings, now - timedelta(hours=1), PipelineStats(1.0, {}, {}))
    console = Console(record=True, width=200)
    for table in tables:
        console.print(table)
    out = console.export_text()
    assert "Opportunities by kind (this run)" in out and "Top pushable" in out
    assert "implausible_spread" in out and "low_confidence" in out
    assert "net bps (instant)" in out and "net % APR" in out
    assert "300,000" not in out  # the ticker collision is in no edge figure
    spot = next(line for line in out.splitlines() if line.startswith("│ spot_spread") and "instant" in line)
    assert [cell.strip() for cell in spot.split("│")[1:-1]][:8] == [
        "spot_spread",
        "4",
        "2",
        "2",
        "1",
        "net bps (instant)",
        "6.0",
        "9.0",
    ]


def test_pushes_by_tier_shows_free_and_basic_with_their_missed_digests(tmp_path: Path) -> None:
    from actors.missed import DIGEST_KIND, MISSED_REASON
    from serve import summaries
    from serve.summaries import delivery_tables
    from tests.unit.pipeline.test_missed_counts import lake_with_both_shapes

    assert (summaries.DIGEST_KIND, summaries.MISSED_REASON) == (DIGEST_KIND, MISSED_REASON)
    lake_with_both_shapes(tmp_path)
    settings = Settings(data_dir=tmp_path / "var", lake=LakeSettings(url=str(tmp_path / "lake")))
    since = datetime(2025, 6, 1, tzinfo=UTC)
    stats = {"shards": [{"sent": 2, "missed": 3, "missed_digests": 1}]}
    console = Console(record=True, width=200)
    for table in delivery_tables(settings, stats, since):
        console.print(table)
    out = console.export_text()
    cells = {
        cols[0]: cols[1:]
        for line in out.splitlines()
        if line.startswith("│ ") and (cols := [c.strip() for c in line.split("│")[1:-1]])
    }
    # tier: sent, chats, digests (several items), missed while delayed, missed digests
    assert cells["free"] == ["1", "1", "0", "2", "1"]
    assert cells["basic"] == ["0", "0", "0", "1", "0"]
    assert cells["premium"] == ["1", "1", "0", "0", "0"]
    assert cells["enterprise"] == ["0", "0", "0", "0", "0"]
    assert "superadmin" not in cells
    assert "missed while delayed / digests sent" in out and "3 / 1" in out


def test_the_demo_sets_a_short_digest_period_unless_one_is_set(tmp_path: Path) -> None:
    from serve.demo import DEMO_DIGEST_PERIOD_S, with_demo_digests

    settings = Settings(data_dir=tmp_path / "var")
    assert settings.distribution.digest_period_s is None
    assert with_demo_digests(settings, 60).distribution.digest_period_s == DEMO_DIGEST_PERIOD_S
    assert with_demo_digests(settings, 9).distribution.digest_period_s == 3.0
    mine = Settings(data_dir=tmp_path / "var", distribution={"digest_period_s": 120})
    assert with_demo_digests(mine, 60).distribution.digest_period_s == 120
