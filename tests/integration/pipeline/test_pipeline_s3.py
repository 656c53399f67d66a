"""The whole ingest path onto an S3 lake (SeaweedFS), read back with `arbflow query`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.settings import LakeSettings, Settings
from pipeline.lake import Lake
from pipeline.query import run_query, scan
from serve.orchestrator import MarketPipeline


def test_sim_pipeline_writes_an_s3_lake_that_query_reads(
    ray_session: None, base_settings: Settings, s3_lake_settings: LakeSettings, tmp_path: Path
) -> None:
    lake_settings = s3_lake_settings.model_copy(update={"flush_seconds": 0.5})
    settings = base_settings.model_copy(
        update={
            "lake": lake_settings,
            "market": base_settings.market.model_copy(update={"source": "sim"}),
        }
    )
    pipeline = MarketPipeline(settings, "sim", detect=False).start()
    time.sleep(3.0)
    stats = pipeline.stop()
    assert stats.rows["quotes"] > 0

    lake = Lake.from_settings(lake_settings)
    files = lake.list_files("quotes")
    assert files and all(f.endswith(".parquet") and "/year=" in f and "/hour=" in f for f in files)
    n = run_query(lake, "SELECT count(*) AS n FROM quotes").column("n")[0].as_py()
    assert n == stats.rows["quotes"]
    assert scan(lake, "quotes").select("exchange").unique().collect().height == 3

    env = {
        **os.environ,
        "ARBFLOW_LAKE__URL": lake_settings.url,
        "ARBFLOW_LAKE__ENDPOINT_URL": lake_settings.endpoint_url,
        "ARBFLOW_LAKE__ANONYMOUS": "true",
    }
    out = subprocess.run(
        [sys.executable, "-m", "serve.cli", "query", "SELECT count(*) AS n FROM quotes", "--format", "json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": n}]
