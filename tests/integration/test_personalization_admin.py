"""What the admin sees of the engagement model: ``arbflow personalize`` (a run now, a user's
affinities) and ``GET /api/personalization`` through the real Serve app, on a real Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serve.cli import app
from serve.runtime import EmbeddedRedis
from state.personalization import RedisModelStore
from state.redis import redis_client
from tests.integration.test_dashboard import TOKEN, deploy_dashboard
from tests.support.engagement import clear_history, history_tables, write_lake

ALICE = 7101


def test_personalize_runs_the_model_and_shows_a_user(
    tmp_path: Path, isolated_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake_dir = tmp_path / "lake"
    write_lake(lake_dir, history_tables(clear_history(ALICE, datetime.now(UTC))))
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(lake_dir))
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARBFLOW_REDIS__URL", isolated_redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    before = CliRunner().invoke(app, ["personalize", "--format", "json"])
    assert before.exit_code == 0, before.output
    assert json.loads(before.output)["model"]["version"] == 0  # never run
    result = CliRunner().invoke(app, ["personalize", "--run", "--user", str(ALICE), "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["run"]["users"] == 1 and body["model"]["version"] == 1 and body["model"]["users"] == 1
    top = {a["feature"]: a["affinity"] for a in body["user"]["top"]}
    assert top["kind:funding_rate"] > 0 > top["kind:spot_spread"]
    table = CliRunner().invoke(app, ["personalize", "--user", "99"])
    assert (
        table.exit_code == 0 and "users with a model" in table.output and "user 99: no model" in table.output
    )
    monkeypatch.setenv("ARBFLOW_REDIS__URL", "")
    assert CliRunner().invoke(app, ["personalize"]).exit_code == 2


def test_api_personalization(ray_session: None, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    async def write() -> None:
        client = redis_client(redis_server.url)
        record = '{"b": 0.25, "n": 30, "a": [{"f": "symbol:SOL/USDT:USDT", "v": 1.5}]}'
        await RedisModelStore(client).replace([(ALICE, record)], datetime.now(UTC), took_ms=12.0)
        await client.aclose()

    asyncio.run(write())
    with deploy_dashboard(redis_server.url, tmp_path) as d, httpx.Client(base_url=d.url, timeout=30) as http:
        assert http.get("/api/personalization").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = http.get("/api/personalization", params={"user": ALICE}, headers=auth).json()
        assert body["model"]["users"] == 1 and body["model"]["version"] >= 1 and body["settings"]["enabled"]
        assert body["user"] == {
            "user_id": ALICE,
            "base_rate": 0.25,
            "events": 30,
            "top": [{"feature": "symbol:SOL/USDT:USDT", "affinity": 1.5}],
        }
        assert http.get("/api/personalization", params={"user": 1}, headers=auth).json()["user"] is None
