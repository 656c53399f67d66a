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
