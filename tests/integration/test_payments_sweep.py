"""The scheduled sweep of paid tiers on a real Ray, Redis and the Telegram sandbox: the
monitor (``alerts:monitor``) returns a user whose Stars-paid period ended to Free, tells them
through the bot, and writes an ``expired`` row to the lake's ``payments`` dataset."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import ray
import redis.asyncio as aioredis

from actors.monitor import get_monitor
from actors.sink import get_sink
from core.accounts import Tier, User
from core.payments import DEFAULT_PRICES, InvoicePayload
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from state.payments import RedisPaymentStore
from state.users import RedisUserStore
from tests.integration.test_monitor import wait_for
from tests.support.sandbox_thread import SandboxThread


def test_the_monitor_returns_expired_paid_users_to_free_with_a_notice(
    ray_session: None, base_settings: Settings, isolated_redis_url: str, sandbox: SandboxThread
) -> None:
    ns = f"tiers-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={
            "ray": base_settings.ray.model_copy(update={"namespace": ns}),
            "redis": base_settings.redis.model_copy(update={"url": isolated_redis_url}),
            "telegram": base_settings.telegram.model_copy(
                update={"token": sandbox.handle.token, "api_base": sandbox.handle.base_url}
            ),
        }
    )
    now = datetime.now(UTC)
    price = DEFAULT_PRICES[Tier.BASIC]

    async def seed() -> None:
        client = aioredis.Redis.from_url(isolated_redis_url)
        users = RedisUserStore(client)
        store = RedisPaymentStore(users)
        try:
            for uid in (601, 602):
                await users.create(User.new(uid, now - timedelta(days=40)))
            # 601 paid 31 days ago (ended a day ago), 602 paid today
            await store.apply(
                "ch601", "", InvoicePayload(Tier.BASIC, 30, 250, 601, "n1"), 250, now - timedelta(days=31)
            )
            await store.apply("ch602", "", InvoicePayload(Tier.BASIC, 30, 250, 602, "n2"), 250, now)
        finally:
            await client.aclose()

    async def tiers() -> dict[int, tuple[Tier, datetime | None]]:
        client = aioredis.Redis.from_url(isolated_redis_url)
        try:
            found = await RedisUserStore(client).get_many([601, 602])
            return {uid: (u.tier, u.tier_expires_at) for uid, u in found.items()}
        finally:
            await client.aclose()

    asyncio.run(seed())
    sink = get_sink(settings)
    monitor = get_monitor(settings, interval_s=0.5, key_prefix=f"{ns}:")
    try:
        # the loop sweeps at once, then once a minute; a direct sweep finds nothing left
        # (60 s: the monitor's first loop also builds its bot and polls the pipeline's actors)
        wait_for(lambda: ray.get(monitor.status.remote())["tiers_expired"] == 1, within=60, what="tier sweep")
        assert ray.get(monitor.sweep_tiers.remote()) == 0
        wait_for(lambda: sandbox.texts(601), within=30, what="notice")
    finally:
        ray.get(monitor.stop.remote())
        ray.kill(monitor)
    state = asyncio.run(tiers())
    assert state[601] == (Tier.FREE, None)
    assert (
        state[602][0] is Tier.BASIC and state[602][1] is not None and state[602][1] > now + price.period / 2
    )
    assert sandbox.texts(601) == [
        "Your paid Basic period ended; you are on Free again. /subscription to renew."
    ]
    assert sandbox.texts(602) == []
    ray.get(sink.flush.remote())
    rows = run_query(
        Lake.from_settings(settings.lake), "SELECT user_id, event, tier FROM payments ORDER BY ts"
    ).to_pylist()
    assert rows == [{"user_id": 601, "event": "expired", "tier": "basic"}]
    ray.kill(sink)
