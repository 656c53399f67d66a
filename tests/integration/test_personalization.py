"""Personalization end to end: a history in a real lake → the model's Ray task → Redis → the
directory and the distributor (real actors) → the queue shards → the sandbox's messages.

The "done when" of issue 16: the same two due items reach a user with a clear history (always
opens funding pushes on SOL, never spot pushes on BTC) in a different order with ranking on
than off. And the back-compat: a directory over a Redis without a model (an older release's
records) loads and decides as before, every score NaN."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import redis
import redis.asyncio as aioredis

from actors.directory import UserDirectory
from actors.opportunities import event_payload
from core.accounts import Tier, User
from core.candidates import Candidate
from core.eligibility import OpportunityView
from core.experiments import Experiment, Variant, assign
from core.lifecycle import EventType, LifecycleEvent, new_opportunity_id
from core.models import OpportunityKind, Priority
from core.settings import Settings
from pipeline.open_set import RedisOpportunityStore
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.erase import erase_user
from state.personalization import RedisModelStore
from state.redis import redis_client
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.support.engagement import clear_history, history_tables, write_lake
from tests.support.sandbox_thread import SandboxThread

RANKING = Experiment(name="ranking", variants=[Variant(name="on"), Variant(name="off", ranking=False)])


def _user_in(variant: str, start: int) -> int:
    return next(u for u in range(start, start + 1000) if assign(u, [RANKING]).variant == variant)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _settings(base: Settings, sandbox: SandboxThread, redis_url: str) -> Settings:
    return Settings.model_validate(
        {
            **base.model_dump(),
            "redis": {"url": redis_url},
            "ray": {**base.ray.model_dump(), "namespace": f"pers-{uuid.uuid4().hex[:8]}"},
            "telegram": {"token": sandbox.handle.token, "api_base": sandbox.handle.base_url},
            "experiments": [RANKING.model_dump()],
            # both items are held by the tier delay and go out together, as one digest
            "distribution": {
                "shards": 2,
                "retry_base_s": 0.1,
                "digest_window_s": 5.0,
                "tiers": {"premium": {"delay_s": 2}, "enterprise": {"delay_s": 2, "daily_quota": 1}},
            },
            "personalization": {"interval_s": 3600, "min_events": 5},
        }
    )


async def _users(url: str, specs: list[tuple[int, Tier]]) -> None:
    client = aioredis.Redis.from_url(url)
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    now = datetime.now(UTC)
    for uid, tier in specs:
        await users.create(User.new(uid, now, tier=tier))
        await sessions.start(uid, uid, now)
    await client.aclose()


def _opened(
    redis_url: str, kind: OpportunityKind, symbol: str, buy: str, net: float, priority: Priority
) -> dict[str, Any]:
    now = datetime.now(UTC)
    candidate = Candidate(
        kind=kind,
        symbol=symbol,
        buy_exchange=buy,
        sell_exchange="okx",
        gross_bps=net + 20,
        net_bps=net,
        gross_apr=0.3 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=0.9,
        priority=priority,
        pushable=True,
        flags=(),
        detected_at=now,
    )
    event = LifecycleEvent(EventType.OPENED, new_opportunity_id(now), candidate, now, now)

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await RedisOpportunityStore(client).apply([event])
        await client.aclose()

    asyncio.run(store())
    return event_payload(event)


def wait_for(cond: Callable[[], bool], within: float = 30.0, why: Callable[[], Any] = lambda: None) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met in time: {why()}")


def test_ranking_changes_the_order_for_a_user_with_a_clear_history(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    ranked, unranked = _user_in("on", 5000), _user_in("off", 6000)
    quota = _user_in("on", 7000)  # ranking, one push a day: it goes to the best item
    newcomer = _user_in("on", 8000)  # no history: no model, today's order
    now = datetime.now(UTC)
    history = [p for u in (ranked, unranked, quota) for p in clear_history(u, now)]
    write_lake(settings.lake.url, history_tables(history))
    asyncio.run(
        _users(
            private_redis.url,
            [
                (ranked, Tier.PREMIUM),
                (unranked, Tier.PREMIUM),
                (newcomer, Tier.PREMIUM),
                (quota, Tier.ENTERPRISE),
            ],
        )
    )
    dist = Distribution(settings).start()
    try:
        run = ray.get(dist.distributor.recompute_model.remote())  # the Ray task over the lake
        assert run["users"] == 3 and run["version"] >= 1, run
        store = redis.Redis.from_url(private_redis.url)
        assert sorted(int(k) for k in store.hkeys("personal:users")) == sorted([ranked, unranked, quota])
        stats = ray.get(dist.distributor.stats.remote())["personalization"]
        assert stats["users_with_model"] == 3 and stats["runs"] >= 1, stats

        funding = _opened(
            private_redis.url, OpportunityKind.FUNDING_RATE, "SOL/USDT:USDT", "binance", 15.0, Priority.MEDIUM
        )
        spot = _opened(
            private_redis.url, OpportunityKind.SPOT_SPREAD, "BTC/USDT", "bybit", 40.0, Priority.HIGH
        )
        ray.get(dist.distributor.on_events.remote([funding]))
        ray.get(dist.distributor.on_events.remote([spot]))  # newer and higher priority
        everyone = [ranked, unranked, newcomer, quota]
        wait_for(
            lambda: sandbox.sent_to(everyone) == dict.fromkeys(everyone, 1),
            why=lambda: sandbox.sent_to(everyone),
        )

        def first(user: int) -> str:
            (text,) = sandbox.texts(user)
            assert "BTC/USDT" in text and "SOL/USDT" in text, text
            return "SOL" if text.index("SOL/USDT") < text.index("BTC/USDT") else "BTC"

        assert first(ranked) == "SOL"  # the model: funding on SOL is what this user opens
        assert first(unranked) == "BTC"  # the same history, ranking off: priority, newest
        assert first(newcomer) == "BTC"  # no model: as before
        (only,) = sandbox.texts(quota)  # one a day: the best item, not the first by priority
        assert "SOL/USDT" in only and "BTC/USDT" not in only, only
    finally:
        dist.stop()


def _view(now: datetime) -> OpportunityView:
    return OpportunityView(
        opportunity_id="o-1",
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        net_bps=15.0,
        priority=Priority.HIGH,
        confidence=0.9,
        dedup_key=OpportunityView.make_dedup_key("spot_spread", "BTC/USDT", "binance", "okx"),
        detected_at=now,
    )


async def test_a_directory_without_a_model_works_unchanged_then_loads_one(isolated_redis_url: str) -> None:
    client = redis_client(isolated_redis_url)
    try:
        now = datetime.now(UTC)
        users, sessions = RedisUserStore(client), RedisSessionStore(client)
        for uid in (1, 2):
            await users.create(User.new(uid, now, tier=Tier.PREMIUM))
            await sessions.start(uid, uid, now)
        directory = UserDirectory(Settings(redis={"url": isolated_redis_url}), client)
        assert await directory.load(now) == 2  # no personal:* keys at all: an older release's Redis
        assert len(directory.affinity) == 0 and directory.affinity.version == 0
        assert np.isnan(directory.scores([1, 2], _view(now))).all()
        assert sorted((await directory.decide(_view(now), now)).eligible_result()["user_id"].to_list()) == [
            1,
            2,
        ]
        assert not await directory.load_affinities()  # nothing moved

        store = RedisModelStore(client)
        record = '{"b": 0.5, "n": 20, "a": [{"f": "symbol:BTC/USDT", "v": -1.0}]}'
        assert await store.replace([(1, record), (9, "garbage")], now) == 1
        assert await directory.load_affinities()
        assert (
            directory.affinity.version == 1
            and len(directory.affinity) == 1
            and directory.affinity.skipped == 1
        )
        s = directory.scores([1, 2], _view(now))
        assert s[0] == pytest.approx(0.5 * np.exp(-1.0) * 15.0) and np.isnan(s[1])
        assert not await directory.load_affinities()  # same version: not read again
        # /forget takes the user's record with it; a new model replaces the old one whole
        assert await erase_user(client, 1) >= 1
        assert await store.get(1) is None
        assert await store.replace([], now) == 2
        assert await directory.load_affinities() and len(directory.affinity) == 0
        # off: no model is read
        off = UserDirectory(
            Settings(redis={"url": isolated_redis_url}, personalization={"enabled": False}), client
        )
        await store.replace([(2, record)], now)
        await off.load(now)
        assert len(off.affinity) == 0
    finally:
        await client.aclose()
