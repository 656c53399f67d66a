"""End to end (issue 10): a spread that opens below the push bar and widens past it is pushed.

``arbflow run`` replays :func:`tests.support.scenarios.widening_spread` in real time
(``--speed 1``) with the Telegram sandbox as its Bot API: BTC/USDT binance → okx opens
with a thin edge (confidence below 0.7, not pushable) and widens past it five seconds
later. Every eligible Premium user must get exactly one push; the ``opportunities``
dataset must show why (an ``opened`` row not pushable, then an ``updated`` one pushable).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.accounts import Tier, User
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.support.cli import cli_env, run_cli
from tests.support.sandbox_thread import SandboxThread
from tests.support.scenarios import widening_spread

PREMIUM = [9101, 9102, 9103]
NO_PUSHES = 9104


async def _users(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    now = datetime.now(UTC)
    for uid in [*PREMIUM, NO_PUSHES]:
        user = User.new(uid, now, tier=Tier.PREMIUM)
        user.preferences.pushes_on = uid != NO_PUSHES
        await users.create(user)
        await sessions.start(uid, uid, now)
    await client.aclose()


@pytest.mark.timeout(300)
def test_a_replayed_spread_that_widens_past_the_push_bar_reaches_every_premium_user_once(
    tmp_path: Path, sandbox: SandboxThread, isolated_redis_url: str
) -> None:
    asyncio.run(_users(isolated_redis_url))
    scenario = widening_spread()
    replay = scenario.write(tmp_path / "widening.ndjson")
    env = cli_env(
        tmp_path,
        redis_url=isolated_redis_url,
        label="replay-push",
        ARBFLOW_MARKET__SOURCE="replay",
        ARBFLOW_MARKET__REPLAY_PATH=str(replay),
        ARBFLOW_MARKET__EXCHANGES=",".join(scenario.exchanges),
        ARBFLOW_MARKET__SYMBOLS=",".join(scenario.symbols),
        ARBFLOW_OPPORTUNITIES__TECHNICAL="false",
        ARBFLOW_TELEGRAM__TOKEN=sandbox.handle.token,
        ARBFLOW_TELEGRAM__API_BASE=sandbox.handle.base_url,
    )
    env.pop("ARBFLOW_FEES", None)  # the scenario's edges use the built-in default fees
    proc = run_cli(["run", "--speed", "1"], env, timeout_s=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    sql = (
        "SELECT event, pushable, confidence, net_bps FROM opportunities "
        "WHERE kind = 'spot_spread' AND symbol = 'BTC/USDT' ORDER BY detected_at, event"
    )
    out = run_cli(["query", sql, "--format", "json"], env, timeout_s=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = json.loads(out.stdout)
    # the seam under test: opened below the bar, then an update that made it pushable
    assert rows and rows[0]["event"] == "opened" and rows[0]["pushable"] is False, rows
    assert rows[0]["confidence"] < 0.7, rows[0]
    flips = [r for r in rows if r["event"] == "updated" and r["pushable"]]
    assert flips and flips[0]["confidence"] >= 0.7, rows

    assert sandbox.sent_to(PREMIUM) == dict.fromkeys(PREMIUM, 1), proc.stdout[-3000:]
    assert sandbox.sent_to([NO_PUSHES]) == {NO_PUSHES: 0}
    assert sandbox.too_many == 0
