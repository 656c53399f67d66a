"""``arbflow report`` on a small lake (Typer's CliRunner, the configured lake from the env)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve.cli import app
from tests.unit.pipeline.test_analytics import sample_lake


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lake_dir = tmp_path / "lake"
    sample_lake(lake_dir, datetime.now(UTC))
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(lake_dir))
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COLUMNS", "200")
    return lake_dir


def test_report_tables(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"arbflow report · {lake_env}" in out
    for title in ("Summary", "Onboarding funnel", "Deliveries per tier", "Skipped, by deciding layer"):
        assert title in out
    assert "engagement rate" in out and "75.0%" in out
    assert "subscription.kind" in out and "premium" in out


def test_report_json_since(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--since", "24h", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["lake"] == str(lake_env) and body["since"] is not None
    (summary,) = body["tables"]["summary"]
    assert (summary["sent"], summary["throttled_429"], summary["engagement_rate"]) == (4, 2, 0.75)
    assert [r["tier"] for r in body["tables"]["latency_percentiles"]] == ["all", "free", "premium"]
    every = json.loads(CliRunner().invoke(app, ["report", "--since", "all", "-f", "json"]).output)
    assert every["since"] is None and every["tables"]["summary"][0]["sent"] == 5


def test_report_on_an_empty_lake_and_bad_since(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["report", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tables"]["summary"][0]["sent"] == 0
    bad = CliRunner().invoke(app, ["report", "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    assert CliRunner().invoke(app, ["report", "-f", "csv"]).exit_code == 2


def test_report_edges_are_over_pushable_ones_in_each_kinds_unit(lake_env: Path) -> None:
    """The sample lake holds a 300,000 bps ticker collision: it is counted apart, by flag,
    and moves no edge figure; funding is in % APR, not in bps over its horizon."""
    body = json.loads(CliRunner().invoke(app, ["report", "-f", "json"]).output)
    kinds = {r["kind"]: r for r in body["tables"]["opportunities_by_kind"]}
    spot = kinds["spot_spread"]
    assert (spot["unit"], spot["mean_net"], spot["max_net"], spot["flagged"]) == (
        "net bps (instant)",
        6.0,
        9.0,
        2,
    )
    assert kinds["funding_rate"]["unit"] == "net % APR" and kinds["funding_rate"]["max_net"] == 25.0
    assert {"kind": "spot_spread", "flag": "implausible_spread", "opportunities": 1} in body["tables"][
        "flagged_opportunities"
    ]
    out = CliRunner().invoke(app, ["report"]).output
    assert "Flagged opportunities (never pushable), by flag" in out and "implausible_spread" in out
    assert "net % APR" in out and "300,000" not in out
