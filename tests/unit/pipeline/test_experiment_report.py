"""The experiment report over a real Parquet lake: per variant its users, pushes, engaged
pushes, rate and difference from the control; files of the previous ``deliveries`` shape
(version 2: no experiment or variant) read as "no experiment"; a simulated population with a
planted effect is found, an A/A split is not; an unknown experiment is a clear error."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from rich.console import Console

from core.experiments import Experiment, Variant, assign
from core.settings import LakeSettings
from pipeline.analytics.experiments import (
    UnknownExperiment,
    experiment_report,
    experiment_reports,
    experiment_users,
    experiments_seen,
    rich_table,
)
from pipeline.deliveries import DELIVERIES, deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.sink import ParquetSink
from tests.support.lake_versions import write_file

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
NOW = T0 + timedelta(hours=4)
LAYOUT = Experiment(name="layout", variants=[Variant(name="a"), Variant(name="b", layout="compact")])


def _sent(user: int, opp: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "queued_at": at,
        "opportunity_id": opp,
        "chat_id": user,
        "user_id": user,
        "audience": "user",
        "status": "sent",
        "kind": "spot_spread",
        "tier": "premium",
        "sent_at": at,
        **extra,
    }


def _press(user: int, opp: str, at: datetime, action: str = "push_button") -> dict[str, Any]:
    return {
        "ts": at,
        "user_id": user,
        "chat_id": user,
        "action": action,
        "opportunity_id": opp,
        "detail": "details",
    }


def _lake(tmp_path: Path) -> tuple[Lake, ParquetSink]:
    settings = LakeSettings(url=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    return lake, ParquetSink(lake, settings)


def test_figures_per_variant_beside_a_version_2_file(tmp_path: Path) -> None:
    lake, sink = _lake(tmp_path)
    # version 2 (no experiment, variant, channel, bot_id): an older release's pushes, engaged too
    previous = pa.schema(
        [f for f in DELIVERIES if f.name not in ("experiment", "variant", "channel", "bot_id")]
    )
    old = [_sent(1, "o1", T0), _sent(2, "o1", T0)]
    write_file(lake, "deliveries", pa.Table.from_pylist(old, schema=previous), T0)
    later = T0 + timedelta(hours=1)
    exp = {"experiment": "layout"}
    rows = [
        _sent(10, "o2", later, variant="a", **exp),
        _sent(10, "o3", later, variant="a", **exp),
        _sent(10, "o3", later, variant="a", **exp, reason="joined"),  # one push per opportunity
        _sent(11, "o2", later, variant="a", **exp),
        _sent(20, "o2", later, variant="b", **exp),
        _sent(20, "o3", later, variant="b", **exp),
        _sent(21, "o2", later, variant="b", **exp),
        _sent(21, "md:1", later, variant="b", kind="missed_digest", **exp),  # not a push of the strategy
        _sent(21, "o4", later, variant="b", channel="webhook", **exp),  # an outbound webhook POST
        {**_sent(22, "o2", later, variant="b", **exp), "status": "queued"},  # never sent: not counted
        _sent(30, "o2", later, experiment="other", variant="x"),
    ]
    sink.add("deliveries", deliveries_table(rows))
    sink.add(
        "engagement",
        engagement_table(
            [
                _press(1, "o1", later),  # the old release's user: no experiment
                _press(10, "o2", later),
                _press(10, "o2", later, "details"),  # twice on one push: one engaged push
                _press(20, "o2", later),
                _press(20, "o3", later),
                _press(21, "o9", later),  # an opportunity never pushed to them
                _press(11, "o3", later),  # pushed to someone else
            ]
        ),
    )
    sink.flush()

    assert experiments_seen(lake, None, now=NOW) == ["layout", "other"]
    per_user = {
        (r["variant"], r["user_id"]): (r["sent"], r["engaged"])
        for r in experiment_users(lake, "layout", None, now=NOW).to_pylist()
    }
    assert per_user == {("a", 10): (2, 1), ("a", 11): (1, 0), ("b", 20): (2, 2), ("b", 21): (1, 0)}
    report = experiment_report(lake, "layout", [LAYOUT], None, now=NOW)
    a, b = report.variants
    assert (a.name, a.control, a.estimate.users, a.pushes, a.engaged) == ("a", True, 2, 3, 1)
    assert (b.name, b.control, b.estimate.users, b.pushes, b.engaged) == ("b", False, 2, 3, 2)
    assert a.estimate.rate == pytest.approx(1 / 3) and b.estimate.rate == pytest.approx(2 / 3)
    assert b.diff is not None and b.diff.diff == pytest.approx(1 / 3)
    assert b.verdict is not None and "too few users" in b.verdict
    table = report.table()
    assert table.column("variant").to_pylist() == ["a", "b"]
    assert report.as_dict()["control"] == "a"
    # the terminal table
    console = Console(width=160, record=True)
    console.print(rich_table(report))
    out = console.export_text()
    assert "Experiment layout: engagement per variant" in out and "control" in out and "66.7%" in out

    # a window after the old file: the same (the old rows had no experiment anyway)
    assert experiment_report(lake, "layout", [LAYOUT], later, now=NOW).variants[1].pushes == 3
    # an experiment no longer configured but in the lake: its variants from the rows
    other = experiment_report(lake, "other", [LAYOUT], None, now=NOW)
    assert not other.configured and [v.name for v in other.variants] == ["x"]
    with pytest.raises(UnknownExperiment) as err:
        experiment_report(lake, "nope", [LAYOUT], None, now=NOW)
    assert "nope" in str(err.value) and err.value.known == ["layout", "other"]


def test_a_configured_experiment_without_rows_has_empty_variants(tmp_path: Path) -> None:
    lake, _ = _lake(tmp_path)
    (report,) = experiment_reports(lake, [LAYOUT], None, now=NOW)
    assert [v.name for v in report.variants] == ["a", "b"]
    assert all(v.estimate.users == 0 and v.estimate.rate is None for v in report.variants)
    assert report.variants[1].verdict is not None and "no pushes" in report.variants[1].verdict
    with pytest.raises(UnknownExperiment, match="known: layout"):
        experiment_report(lake, "nope", [LAYOUT], None, now=NOW)


def _simulate(lake: Lake, sink: ParquetSink, exp: Experiment, lift: dict[str, float], seed: int) -> None:
    """A population of 800 users assigned by the real hash, a few to a dozen pushes each,
    each user with their own press probability around 20% plus their variant's lift."""
    rng = random.Random(seed)
    sent: list[dict[str, Any]] = []
    pressed: list[dict[str, Any]] = []
    for uid in range(7_000_000, 7_000_800):
        a = assign(uid, [exp])
        assert a.variant is not None
        p = min(0.95, rng.betavariate(2, 8) + lift.get(a.variant, 0.0))
        for k in range(rng.randint(2, 14)):
            at = T0 + timedelta(minutes=rng.randint(0, 170))
            opp = f"o{k}"
            sent.append(_sent(uid, opp, at, experiment=exp.name, variant=a.variant))
            if rng.random() < p:
                pressed.append(_press(uid, opp, at + timedelta(seconds=30)))
    sink.add("deliveries", deliveries_table(sent))
    sink.add("engagement", engagement_table(pressed))
    sink.flush()


def test_a_planted_effect_is_found_through_the_lake(tmp_path: Path) -> None:
    lake, sink = _lake(tmp_path)
    exp = Experiment(name="planted", variants=[Variant(name="a"), Variant(name="b", digest_window_s=30)])
    _simulate(lake, sink, exp, {"b": 0.08}, seed=11)
    report = experiment_report(lake, "planted", [exp], None, now=NOW)
    a, b = report.variants
    assert a.estimate.users + b.estimate.users == 800
    assert b.diff is not None and b.diff.p_value < 0.05 and b.diff.low > 0
    assert 0.03 < b.diff.diff < 0.13
    assert b.verdict is not None and b.verdict.startswith("b engages more than a")


def test_an_aa_split_through_the_lake_is_not_significant(tmp_path: Path) -> None:
    lake, sink = _lake(tmp_path)
    exp = Experiment(name="aa", variants=[Variant(name="a"), Variant(name="b")])
    _simulate(lake, sink, exp, {}, seed=12)
    report = experiment_report(lake, "aa", [exp], None, now=NOW)
    b = report.variants[1]
    assert b.diff is not None and b.diff.p_value >= 0.05 and b.diff.low < 0 < b.diff.high
    assert b.verdict is not None and "no significant difference" in b.verdict
