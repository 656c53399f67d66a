"""Retention on the cluster: ``arbflow lake prune --dry-run`` lists what the sink actor's
scheduled prune then deletes, exactly (real Ray actor, real lake, the CLI as a subprocess)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import ray

from actors.sink import LakeSinkActor
from core.settings import Settings
from pipeline.lake import Lake, hour_of
from pipeline.versions import REGISTRY
from tests.support.cli import cli_env, run_cli
from tests.support.lake_versions import rows, write_file


def _hour(path: str) -> str:
    at = hour_of(path)
    assert at is not None
    return at.strftime("%Y-%m-%dT%H:00Z")


@pytest.mark.timeout(240)
def test_scheduled_prune_deletes_what_the_dry_run_listed(ray_session: None, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        lake={
            "url": str(tmp_path / "lake"),
            "retention": "quotes=30,order_books=7",
            "retention_every_s": 3600,
        },
        ray={"namespace": "arbflow-test"},
    )
    lake = Lake.from_settings(settings.lake)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Far from the cutoffs (the CLI's clock and the actor's differ by seconds).
    for name, backs in {
        "quotes": (45, 31, 29, 0),
        "order_books": (31, 8, 6, 0),
        "opportunities": (400, 0),
    }.items():
        for days in backs:
            at = hour - timedelta(days=days, hours=3)
            write_file(lake, name, rows(REGISTRY[name].schema, 2, at, tag="x"), at)
    before = {n: set(lake.list_files(n)) for n in ("quotes", "order_books", "opportunities")}

    env = cli_env(
        tmp_path, redis_url="", label="retention", ARBFLOW_LAKE__RETENTION="quotes=30,order_books=7"
    )
    proc = run_cli(["lake", "prune", "--dry-run", "--format", "json"], env, 90)
    assert proc.returncode == 0, proc.stderr
    dry = json.loads(proc.stdout)
    assert dry["dry_run"] is True
    listed = {(r["dataset"], r["hour"]) for r in dry["expired"]}
    assert {d for d, _ in listed} == {"quotes", "order_books"} and len(listed) == 4
    assert {n: set(lake.list_files(n)) for n in before} == before  # the dry run deleted nothing

    actor = LakeSinkActor.options(  # type: ignore[attr-defined]
        name=f"sink:retention-{uuid.uuid4().hex[:6]}", namespace="arbflow-test"
    ).remote(settings, 0.2)
    try:
        assert ray.get(actor.ready.remote(), timeout=60)  # starts the timer; its first tick prunes
        deadline = time.monotonic() + 60
        stats: dict[str, object] = {}
        while time.monotonic() < deadline:
            stats = ray.get(actor.counters.remote(), timeout=30)["retention"]
            if stats["runs"]:
                break
            time.sleep(0.2)
        assert stats["runs"] == 1, stats
        deleted = {(r["dataset"], r["hour"]) for r in stats["last_deleted"]}  # type: ignore[attr-defined]
        assert deleted == listed
        after = {n: set(lake.list_files(n)) for n in before}
        gone = {(n, p) for n in before for p in before[n] - after[n]}
        assert {(n, _hour(p)) for n, p in gone} == listed
        # a second run (on demand) finds nothing: idempotent
        assert ray.get(actor.prune.remote(), timeout=30) == []
    finally:
        ray.kill(actor)
