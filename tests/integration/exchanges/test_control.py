"""The emulators' command line and their HTTP control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from serve.standins.exchanges import Exchanges

pytestmark = pytest.mark.timeout(120)


async def test_faults_over_http(emulators: Exchanges) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{emulators.url}/_control/fault"
        async with http.post(
            url, json={"exchange": "okx", "kind": "rate_limit", "arg": "3", "duration_s": 5}
        ) as r:
            assert r.status == 200
        async with http.get(f"{emulators.url}/okx/www.okx.com/api/v5/public/time") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "3"
            assert (await r.json())["code"] == "50011"
        async with http.get(f"{emulators.url}/bybit/api.bybit.com/v5/market/time") as r:
            assert r.status == 200  # only okx is limited
        async with http.post(url, json={"exchange": "okx", "kind": "rate_limit", "clear": True}) as r:
            assert r.status == 200
        async with http.get(f"{emulators.url}/okx/www.okx.com/api/v5/public/time") as r:
            assert r.status == 200
        async with http.post(url, json={"kind": "explode"}) as r:
            assert r.status == 400 and "unknown fault" in (await r.json())["error"]
        async with http.get(f"{emulators.url}/_control/status") as r:
            status = await r.json()
        assert set(status["exchanges"]) == {"binance", "bybit", "okx"}
        assert status["exchanges"]["okx"]["rejected"] >= 1


def test_arbflow_exchanges_prints_the_endpoints(shared_fixtures: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "serve.cli", "exchanges", "--port", "0", "--duration", "2"]
    cmd += ["--fixtures", str(shared_fixtures / "exchanges"), "--fault", "bybit:gap@1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, check=False)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("ARBFLOW_MARKET__ENDPOINTS="))
    endpoints = json.loads(line.split("=", 1)[1].strip("'"))
    assert set(endpoints) == {"binance", "bybit", "okx"}
    assert endpoints["okx"]["ws"].startswith("ws://127.0.0.1:")
    bad = subprocess.run(
        [*cmd[:4], "--fault", "nope@1"], capture_output=True, text=True, timeout=90, env=env, check=False
    )
    assert bad.returncode == 2 and "unknown fault" in bad.stderr
