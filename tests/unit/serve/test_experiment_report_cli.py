"""``arbflow report --experiment NAME`` on a small lake, with ``ARBFLOW_EXPERIMENTS`` set:
the per-variant table, its JSON, and a clear error naming the known experiments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import LakeSettings
from pipeline.deliveries import deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.sink import ParquetSink
from serve.cli import app

EXPERIMENTS = '[{"name": "layout", "variants": [{"name": "a"}, {"name": "b", "layout": "compact"}]}]'


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lake_dir = tmp_path / "lake"
    settings = LakeSettings(url=str(lake_dir))
    sink = ParquetSink(Lake.from_settings(settings), settings)
    at = datetime.now(UTC) - timedelta(minutes=5)
    sent = []
    for uid, variant, opps in ((1, "a", 2), (2, "a", 2), (3, "b", 2), (4, "b", 1)):
        for k in range(opps):
            sent.append(
                {
                    "queued_at": at,
                    "opportunity_id": f"o{k}",
                    "chat_id": uid,
                    "user_id": uid,
                    "audience": "user",
                    "status": "sent",
                    "experiment": "layout",
                    "variant": variant,
                    "sent_at": at,
                }
            )
    sink.add("deliveries", deliveries_table(sent))
    presses = [(1, "o0"), (3, "o0"), (3, "o1")]
    sink.add(
        "engagement",
        engagement_table(
            [{"ts": at, "user_id": u, "action": "push_button", "opportunity_id": o} for u, o in presses]
        ),
    )
    sink.flush()
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(lake_dir))
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARBFLOW_EXPERIMENTS", EXPERIMENTS)
    monkeypatch.setenv("COLUMNS", "200")
    return lake_dir


def test_report_experiment_table(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--experiment", "layout"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "arbflow report --experiment layout" in out
    assert "Experiment layout: engagement per variant" in out
    assert "rate [95% CI]" in out and "vs control" in out and "control" in out
    assert "25.0%" in out and "66.7%" in out  # a: 1 of 4 pushes, b: 2 of 3
    assert "too few users to tell yet" in out


def test_report_experiment_json(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report", "-e", "layout", "--since", "1h", "-f", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["experiment"] == "layout" and body["control"] == "a" and body["since"] is not None
    a, b = body["variants"]
    assert (a["variant"], a["users"], a["pushes_sent"], a["engaged"]) == ("a", 2, 4, 1)
    assert (b["variant"], b["users"], b["pushes_sent"], b["engaged"]) == ("b", 2, 3, 2)
    assert b["diff"] == pytest.approx(2 / 3 - 1 / 4) and 0 <= b["p_value"] <= 1
    assert len(body["verdicts"]) == 1


def test_report_unknown_experiment(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--experiment", "nope"])
    assert result.exit_code == 2
    assert "no experiment named 'nope'" in result.output and "known: layout" in result.output


def test_the_full_report_names_the_experiments(lake_env: Path) -> None:
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    assert "Experiments: layout (per variant: arbflow report --experiment NAME)" in result.output
