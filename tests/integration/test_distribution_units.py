"""Thresholds per kind across the push side on a real Ray: a funding carry reaches a user
whose (old, spot) bps minimum its 168 h total is under, is judged by its APR, and is pushed
with its APR and the horizon of its total (distributor → queue shard → notifier → sandbox)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import ray
import redis.asyncio as aioredis

from actors.opportunities import event_payload
from core.accounts import Tier, User
from core.candidates import Candidate
from core.lifecycle import EventType, LifecycleEvent, new_opportunity_id
from core.models import OpportunityKind, Priority
from core.settings import Settings
from pipeline.open_set import RedisOpportunityStore
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.integration.test_distribution import _settings, private_redis, wait_for
from tests.support.sandbox_thread import SandboxThread

__all__ = ["private_redis"]  # the fixture, used by name

OLD, APR_PICKY, SPOT_PICKY = 31, 32, 33


async def _users(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    now = datetime.now(UTC)
    for uid in (OLD, APR_PICKY, SPOT_PICKY):
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
        await sessions.start(uid, uid, now)
    # a record of the previous release: one min_net_bps (50), meant for every kind then
    await client.hdel(users._key(OLD), "pref.min_net_apr_pct", "pref.min_confidence")
    await client.hset(users._key(OLD), "pref.min_net_bps", '"50"')
    await users.update_preferences(APR_PICKY, min_net_apr_pct="40")
    await users.update_preferences(SPOT_PICKY, min_net_bps="50", min_net_apr_pct="10")
    await client.aclose()


def _carry(redis_url: str) -> dict[str, Any]:
    """A funding carry: 40 bps over 168 h, i.e. 20.9 % a year net."""
    now = datetime.now(UTC)
    candidate = Candidate(
        kind=OpportunityKind.FUNDING_RATE,
        symbol="ETH/USDT:USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=60.0,
        net_bps=40.0,
        gross_apr=0.3129,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=0.9,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=now,
        details={"net_apr": 40.0 / 10_000 * 8760 / 168, "horizon_hours": 168.0},
    )
    event = LifecycleEvent(EventType.OPENED, new_opportunity_id(now), candidate, now, now)

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await RedisOpportunityStore(client).apply([event])
        await client.aclose()

    asyncio.run(store())
    return event_payload(event)


def test_a_funding_carry_is_judged_and_pushed_in_apr(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    asyncio.run(_users(private_redis.url))
    dist = Distribution(settings).start()
    try:
        carry = _carry(private_redis.url)
        out = ray.get(dist.distributor.on_events.remote([carry]))
        assert out["queued"] == 2, dist.stats()  # the old record and the spot-picky one: by APR
        wait_for(lambda: sandbox.sent_to([OLD, SPOT_PICKY]) == {OLD: 1, SPOT_PICKY: 1})
        assert ray.get(dist.distributor.why.remote(APR_PICKY, carry)) == (3, "preferences.min_profit")
        (text,) = sandbox.texts(OLD)
        assert "Net: +20.9% APR · +5.7 bps/day" in text
        assert "Total over 168 h: net +40.0 bps (gross +60.0 bps)" in text
        assert sandbox.sent_to([APR_PICKY]) == {APR_PICKY: 0}
    finally:
        dist.stop()
